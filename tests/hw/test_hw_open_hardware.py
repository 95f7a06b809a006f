"""Choosing and opening the hardware: backends by configuration, errors that say what to do."""

from __future__ import annotations

import argparse
import threading

import pytest

from openbwv.hw import (
    BackendUnavailable,
    CameraConfig,
    CameraOpenFailed,
    HardwareConfig,
    HardwareConfigError,
    OpenCvSource,
    SyntheticSource,
    UnknownBackend,
    add_hardware_arguments,
    config_from_arguments,
    open_hardware,
)
from openbwv.hw.sound import BuzzerSound, SilentSound


def test_unknown_backend_gives_a_clear_error():
    with pytest.raises(UnknownBackend) as caught:
        open_hardware(HardwareConfig(backend="pie"))
    assert str(caught.value) == "hardware backend 'pie' is not known; expected one of 'emulated', 'pi'"
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("config, message", [
    (HardwareConfig(sound="speaker"), "sound backend 'speaker' is not known; expected one of 'buzzer', 'simpleaudio', 'silent'"),
    (HardwareConfig(camera=CameraConfig(source="webcam")),
     "camera source backend 'webcam' is not known; expected one of 'synthetic', 'opencv', 'picamera2', 'none'"),
])
def test_unknown_sound_and_camera_names_list_the_known_ones(config, message):
    with pytest.raises(UnknownBackend, match=message):
        open_hardware(config)


def test_the_pi_backend_off_a_pi_says_what_is_missing():
    with pytest.raises(BackendUnavailable, match=r"lgpio|GPIO chip"):
        open_hardware(HardwareConfig(backend="pi", board="pi5", camera=CameraConfig(source="none")))


def test_a_hardware_trace_needs_the_emulated_backend(tmp_path):
    with pytest.raises(HardwareConfigError, match=r"records the emulated hardware's pins; backend 'pi' was chosen"):
        open_hardware(HardwareConfig(backend="pi", trace_path=tmp_path / "t.jsonl"))


def test_the_emulated_defaults_are_a_pi5_with_a_synthetic_camera_and_the_buzzer():
    with open_hardware(HardwareConfig(camera=CameraConfig(width=320, height=240, paced=False))) as hw:
        assert hw.backend == "emulated" and hw.board.name == "pi5"
        assert isinstance(hw.camera, SyntheticSource) and isinstance(hw.sound, BuzzerSound)
        assert hw.emulator is not None and hw.trace is None
        assert hw.camera.read().pixels.shape == (240, 320, 3)


def test_an_opencv_camera_and_silent_sound_can_be_chosen(tmp_path):
    import cv2
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for pixels in SyntheticSource(320, 240, paced=False, frame_limit=3):
        writer.write(pixels.pixels)
    writer.release()
    config = HardwareConfig(sound="silent", camera=CameraConfig(source="opencv", device=str(path), paced=False))
    with open_hardware(config) as hw:
        assert isinstance(hw.camera, OpenCvSource) and isinstance(hw.sound, SilentSound)
        assert len(list(hw.camera)) == 3


def test_a_failed_open_leaves_nothing_running(tmp_path):
    before = {t.ident for t in threading.enumerate()}
    config = HardwareConfig(trace_path=tmp_path / "t.jsonl",
                            camera=CameraConfig(source="opencv", device=str(tmp_path / "missing.avi")))
    with pytest.raises(CameraOpenFailed):
        open_hardware(config)
    leftover = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert leftover == []


def parse(argv: list[str], environ: dict[str, str]) -> HardwareConfig:
    parser = argparse.ArgumentParser()
    add_hardware_arguments(parser)
    return config_from_arguments(parser.parse_args(argv), environ)


def test_options_override_the_environment_which_overrides_the_defaults(tmp_path):
    environ = {"BWV_BOARD": "pi4", "BWV_SOUND": "silent", "BWV_TRIGGERS": "holster, taser", "BWV_VIDEO_SIZE": "1280x720"}
    config = parse(["--sound", "simpleaudio", "--hw-trace", str(tmp_path / "t.jsonl"), "--fps", "25"], environ)
    assert config.board == "pi4" and config.sound == "simpleaudio"
    assert config.triggers == ("holster", "taser")
    assert (config.camera.width, config.camera.height, config.camera.fps) == (1280, 720, 25.0)
    assert config.trace_path == tmp_path / "t.jsonl"
    assert parse([], {}) == HardwareConfig()


def test_a_bad_video_size_says_the_expected_form():
    with pytest.raises(HardwareConfigError, match=r"video size is '1080p'; expected WIDTHxHEIGHT like 1920x1080"):
        HardwareConfig.from_environment({"BWV_VIDEO_SIZE": "1080p"})


def test_a_config_section_with_a_misspelt_key_is_rejected():
    with pytest.raises(HardwareConfigError, match=r"\[hardware\] has unknown key\(s\) \['trigers'\]"):
        HardwareConfig.from_mapping({"backend": "emulated", "trigers": ["holster"]})
    config = HardwareConfig.from_mapping({"board": "pi4", "triggers": ["taser"], "camera": {"source": "none"}})
    assert config.triggers == ("taser",) and config.camera_source == "none"


def test_the_pi_backend_defaults_to_the_pi_camera():
    assert HardwareConfig(backend="pi").camera_source == "picamera2"
    assert HardwareConfig().camera_source == "synthetic"
