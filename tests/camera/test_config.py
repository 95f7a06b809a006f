"""Camera settings: defaults, the documented example, and clear errors for bad values."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from openbwv.firmware.config import ConfigError, load_config
from openbwv.hw.config import HardwareConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "camera-config.md"


def test_defaults_are_what_the_public_was_promised():
    c = load_config(None)
    assert (c.indicators.flash_hz, c.indicators.duty, c.indicators.beep_interval_s) == (2.0, 0.5, 10.0)
    assert c.prebuffer.seconds == 30 and c.video.segment_seconds == 10 and c.video.bitrate == 8_000_000
    assert c.flush_seconds <= 1.0 and not c.indicators.stealth_allowed


def test_the_documented_example_loads(tmp_path):
    example = re.search(r"```toml\n(.*?)```", DOC.read_text(), re.S).group(1)
    path = tmp_path / "camera.toml"
    path.write_text(example)
    c = load_config(path)
    assert c.device_id == "cam-0042"
    hw = HardwareConfig.from_mapping(c.hardware)
    assert hw.backend == "pi" and hw.triggers == ("holster", "taser")


@pytest.mark.parametrize(
    "text, message",
    [
        ("[camera]\nbeep_intervl_s = 5\n", "unknown key 'beep_intervl_s'"),
        ("[camera.indicators]\nbeep_interval_s = 0\n", "indicators.beep_interval_s"),
        ("[camera.prebuffer]\nseconds = 121\n", "prebuffer.seconds"),
        ("[camera.video]\nbitrate = \"fast\"\n", "bitrate must be int"),
        ("[camera]\nflush_seconds = 2\n", "at most a second may be lost"),
        ("[cam]\n", "unknown top-level table"),
        ("[camera\n", "not valid TOML"),
    ],
)
def test_bad_settings_are_refused_with_a_message_naming_them(tmp_path, text, message):
    path = tmp_path / "camera.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path)
