"""The emulated camera's window on a (virtual) display: the picture, the red circle, the record key."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time

import numpy as np
import pytest

from openbwv.firmware.window import overlay, to_ppm

from .conftest import RunningCamera


@pytest.fixture(scope="module")
def display():
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (scripts/system-packages.sh installs it)")
    number = 90 + os.getpid() % 9
    proc = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = f":{number}"
    deadline = time.monotonic() + 10
    while not os.path.exists(f"/tmp/.X11-unix/X{number}") and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f":{number}"
    proc.terminate()
    proc.wait(5)
    if old is None:
        os.environ.pop("DISPLAY", None)
    else:
        os.environ["DISPLAY"] = old


def test_the_red_circle_is_drawn_only_while_the_led_is_lit():
    frame = np.zeros((360, 640, 3), np.uint8)
    lit, dark = overlay(frame, True, "RECORDING"), overlay(frame, False, "STANDBY")
    assert tuple(lit[180, 320]) == (0, 0, 255)  # BGR red at the centre
    assert tuple(dark[180, 320]) == (0, 0, 0)


def test_frames_become_ppm_scaled_to_the_preview():
    ppm = to_ppm(np.zeros((1080, 1920, 3), np.uint8))
    assert ppm.startswith(b"P6 960 540 255\n") and len(ppm) == len(b"P6 960 540 255\n") + 960 * 540 * 3


def test_holding_space_in_the_window_starts_recording_and_the_window_shows_frames(display, home, tmp_path):
    from openbwv.firmware.window import PreviewWindow

    cam = RunningCamera(home, tmp_path / "trace.jsonl", **{"prebuffer.seconds": 0})
    window = PreviewWindow(cam.hw)
    cam.camera.on_frame = window
    worker = threading.Thread(target=cam._run, daemon=True)
    worker.start()
    pressed = []

    def press() -> None:
        window.root.focus_force()
        window.root.update()
        window.root.event_generate("<KeyPress-space>", when="tail")
        window.root.after(150, lambda: window.root.event_generate("<KeyRelease-space>", when="tail"))
        pressed.append(time.monotonic())

    window.root.after(800, press)
    window.root.after(2500, window.quit)
    window.run(until=worker)
    worker.join(30)
    window.close()
    cam.hw.close()

    assert pressed and window.frames_shown > 10
    assert cam.report is not None and len(cam.report.clips) == 1
    assert cam.report.stop_reasons == ["shutdown"]  # closing the window stops the camera cleanly
