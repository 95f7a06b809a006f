from __future__ import annotations

from pathlib import Path

import pytest

from openbwv.cli import main
from openbwv.footage import make_synthetic_video


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh BWV_HOME with server keys and one enrolled camera, cam-1."""
    h = tmp_path / "home"
    monkeypatch.setenv("BWV_HOME", str(h))
    assert main(["keys", "server"]) == 0
    assert main(["keys", "device", "--id", "cam-1"]) == 0
    return h


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Nine seconds of real H.264 with a keyframe every second."""
    return make_synthetic_video(tmp_path_factory.mktemp("footage") / "clip.mp4", seconds=9, width=320, height=240)


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err
