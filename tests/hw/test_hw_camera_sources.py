"""Camera sources: BGR frames with capture times, from a test pattern, a video file or the Pi camera."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
import time

import cv2
import numpy as np
import pytest

from openbwv.hw.camera_source import (
    Frame,
    OpenCvSource,
    Picamera2Source,
    SyntheticSource,
    format_utc_ms,
    measure_fps,
)
from openbwv.hw.errors import BackendUnavailable, CameraError, CameraOpenFailed, EndOfStream

START = 1_795_000_000_123_000_000  # 2026-11-18 11:06:40.123 UTC


def region(frame: Frame, box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = box
    return frame.pixels[y:y + h, x:x + w]


def test_synthetic_frames_are_1080p_bgr_arrays_with_capture_times():
    source = SyntheticSource(start_utc_ns=START, paced=False)
    before = time.monotonic()
    frame = source.read()
    assert frame.pixels.shape == (1080, 1920, 3) and frame.pixels.dtype == np.uint8
    assert frame.pixels.flags["C_CONTIGUOUS"]
    assert (frame.width, frame.height, frame.index) == (1920, 1080, 0)
    assert frame.utc_ns == START and frame.monotonic >= before
    assert source.pixel_format == "BGR"


def test_synthetic_frames_carry_a_burnt_in_clock():
    source = SyntheticSource(640, 360, fps=30, start_utc_ns=START, paced=False)
    first, second = source.read(), source.read()
    clock = source.clock_region
    assert not np.array_equal(region(first, clock), region(second, clock))
    # White text on a black box: the clock is drawn, not left blank.
    assert (region(first, clock) > 200).any() and (region(first, clock) == 0).mean() > 0.5
    assert second.utc_ns - first.utc_ns == round(1e9 / 30)
    assert format_utc_ms(second.utc_ns) == "2026-11-18 11:06:40.156 UTC"


def test_the_clock_is_the_only_thing_that_differs_between_two_starts_at_the_same_index():
    a = SyntheticSource(640, 360, start_utc_ns=START, paced=False).render(42)
    b = SyntheticSource(640, 360, start_utc_ns=START + 3_600_000_000_000, paced=False).render(42)
    x, y, w, h = SyntheticSource(640, 360).clock_region
    differs = np.any(a != b, axis=2)
    assert differs[y:y + h, x:x + w].any()
    differs[y:y + h, x:x + w] = False
    assert not differs.any()


def test_the_synthetic_source_is_deterministic_given_start_time_and_index():
    one = SyntheticSource(640, 360, start_utc_ns=START, paced=False)
    frames = [one.read().pixels for _ in range(5)]
    other = SyntheticSource(640, 360, start_utc_ns=START, paced=False)
    assert np.array_equal(other.render(3), frames[3])
    assert all(np.array_equal(other.read().pixels, f) for f in frames)


def test_the_pattern_moves_outside_the_clock_too():
    source = SyntheticSource(640, 360, start_utc_ns=START, paced=False)
    a, b = source.render(0), source.render(1)
    x, y, w, h = source.clock_region
    a[y:y + h, x:x + w] = 0
    b[y:y + h, x:x + w] = 0
    assert np.count_nonzero(np.any(a != b, axis=2)) > 0.05 * 640 * 360


def test_frames_are_independent_arrays_a_buffer_may_keep():
    source = SyntheticSource(320, 240, start_utc_ns=START, paced=False)
    first = source.read()
    kept = first.pixels.copy()
    source.read()
    assert np.array_equal(first.pixels, kept)


def test_the_synthetic_source_runs_faster_than_30_fps_at_1080p_on_one_core():
    cv2.setNumThreads(1)
    source = SyntheticSource(1920, 1080, start_utc_ns=START, paced=False)
    best = max(measure_fps(source, frames=15) for _ in range(3))  # best of three: load only slows it down
    print(f"synthetic source at 1920x1080: {best:.0f} fps")
    assert best > 30


def test_a_paced_synthetic_source_keeps_real_time():
    source = SyntheticSource(320, 240, fps=50, start_utc_ns=START, paced=True)
    started = time.monotonic()
    frames = [source.read() for _ in range(11)]
    elapsed = time.monotonic() - started
    assert elapsed >= 10 / 50 * 0.9  # pacing may run late under load, never early
    assert all(b.monotonic >= a.monotonic for a, b in zip(frames, frames[1:]))


def test_a_frame_limit_ends_the_stream():
    source = SyntheticSource(320, 240, paced=False, frame_limit=4)
    assert [f.index for f in source] == [0, 1, 2, 3]
    with pytest.raises(EndOfStream, match="frame limit of 4"):
        source.read()


def test_an_unusable_synthetic_size_is_refused():
    with pytest.raises(CameraError, match=r"size 100x100 is not usable"):
        SyntheticSource(100, 100)


@pytest.fixture
def video_file(tmp_path):
    """Ten synthetic frames written as an MJPEG AVI through OpenCV's own writer."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (320, 240))
    assert writer.isOpened()
    source = SyntheticSource(320, 240, fps=25, start_utc_ns=START, paced=False)
    originals = [source.read().pixels for _ in range(10)]
    for pixels in originals:
        writer.write(pixels)
    writer.release()
    return path, originals


def test_an_opencv_source_reads_back_a_video_file(video_file):
    path, originals = video_file
    with OpenCvSource(str(path)) as source:
        assert (source.width, source.height, source.fps) == (320, 240, 25.0)
        frames = list(source)
    assert [f.index for f in frames] == list(range(10))
    assert all(f.pixels.shape == (240, 320, 3) and f.pixels.dtype == np.uint8 for f in frames)
    # JPEG is lossy, but a BGR/RGB swap or a wrong frame would be far off.
    for frame, original in zip(frames, originals):
        assert np.abs(frame.pixels.astype(int) - original.astype(int)).mean() < 12


def test_an_opencv_source_loops_a_file_when_asked(video_file):
    path, _ = video_file
    with OpenCvSource(str(path), loop=True) as source:
        frames = [source.read() for _ in range(25)]
    assert frames[-1].index == 24


def test_an_opencv_source_that_cannot_open_says_what_it_expected(tmp_path):
    with pytest.raises(CameraOpenFailed, match=r"could not open video file .*missing.avi.*expected a readable video file"):
        OpenCvSource(str(tmp_path / "missing.avi"))


def test_a_closed_source_ends_the_stream(video_file):
    path, _ = video_file
    source = OpenCvSource(str(path))
    source.close()
    with pytest.raises(EndOfStream):
        source.read()


@pytest.mark.skipif(importlib.util.find_spec("picamera2") is not None, reason="picamera2 is installed here")
def test_the_picamera2_source_off_a_pi_says_what_is_missing():
    with pytest.raises(BackendUnavailable, match=r"needs the picamera2 library .* python3-picamera2"):
        Picamera2Source()


def test_importing_and_emulating_loads_no_optional_hardware_library():
    script = """
        import sys
        from openbwv.hw import HardwareConfig, open_hardware
        from openbwv.hw.sound import libasound_loaded
        with open_hardware(HardwareConfig()) as hw:
            hw.camera.read()
            hw.sound.beep(2000, 0.01)
        loaded = [m for m in ("picamera2", "simpleaudio", "lgpio", "RPi") if m in sys.modules]
        assert not loaded, loaded
        assert not libasound_loaded()
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
