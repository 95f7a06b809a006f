"""Fixtures: one street scene encoded and redacted once, shared by the tests that read the export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from openbwv.server.redact import Box, FaceDetector, RedactionReport, TimedBox, redact_video

from .footage import Scene, street_scene, write_h264

# The requester's head is pasted at (20, 20), 100 px tall: staff draw the keep box around it.
KEEP_BOX = Box(10, 10, 130, 120)


@dataclass(frozen=True)
class Export:
    scene: Scene
    source: Path
    output: Path
    report: RedactionReport
    progress: list[tuple[int, int]]


@pytest.fixture(scope="session")
def detector() -> FaceDetector:
    return FaceDetector()


@pytest.fixture(scope="session")
def street_export(tmp_path_factory: pytest.TempPathFactory, detector: FaceDetector) -> Export:
    """24 frames (0.8 s) of the street scene with a tone on the audio, the requester kept, the document masked."""
    directory = tmp_path_factory.mktemp("street")
    scene = street_scene(frames=24)
    source = directory / "clip.ts"
    write_h264(source, scene.frames, fps=scene.fps, audio=True)
    output = directory / "export.mp4"
    calls: list[tuple[int, int]] = []
    report = redact_video(
        source,
        output,
        keep=[TimedBox(0.0, 60.0, KEEP_BOX)],
        manual=[TimedBox(0.0, 60.0, scene.document)],
        detector=detector,
        progress=lambda done, total: calls.append((done, total)),
    )
    return Export(scene, source, output, report, calls)


@pytest.fixture(scope="session")
def plain_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny clip with no faces (96x64, 6 frames): for the error paths, where only the plumbing matters."""
    directory = tmp_path_factory.mktemp("plain")
    frames = [np.full((64, 96, 3), 40 * i, np.uint8) for i in range(6)]
    path = directory / "plain.ts"
    write_h264(path, frames)
    return path
