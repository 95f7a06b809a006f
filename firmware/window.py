"""The emulated camera's window: the live picture with the red circle overlaid, keys for the button.

Only for `bwv camera --emulate` on a desktop.  OpenCV's window functions need
a GUI build of OpenCV (the headless wheel the project pins has none), so the
window is opened lazily and a missing GUI is a clear error pointing at
`--headless`.
"""

from __future__ import annotations

import threading

import cv2

KEYS_HELP = "keys: space = short press (start / bookmark), s = hold 3 s (stop), d = dock/undock, q = quit"


class WindowUnavailable(RuntimeError):
    pass


class PreviewWindow:
    TITLE = "OpenBWV camera (emulated)"

    def __init__(self, hw, camera) -> None:
        self.hw = hw
        self.camera = camera
        self.docked = False
        try:
            cv2.namedWindow(self.TITLE, cv2.WINDOW_NORMAL)
        except cv2.error as e:
            raise WindowUnavailable(
                "this OpenCV has no window support (the headless build); run with --headless, "
                "or install the GUI build: .venv/bin/pip install opencv-python"
            ) from e

    def __call__(self, frame, camera) -> None:
        img = frame.pixels.copy()
        h, w = img.shape[:2]
        if self.hw.record_led.is_lit:
            cv2.circle(img, (w // 2, h // 10 + 20), max(12, h // 20), (0, 0, 255), -1)
        cv2.putText(img, f"{camera.machine.mode.name}", (10, h - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.7,
                    (255, 255, 255), 2)
        cv2.imshow(self.TITLE, img)
        key = cv2.waitKey(1) & 0xFF
        emu = self.hw.emulator
        if key == ord(" "):
            emu.click_button(0.1)
        elif key == ord("s"):
            emu.press_button()
            threading.Timer(3.2, emu.release_button).start()
        elif key == ord("d"):
            self.docked = not self.docked
            emu.set_docked(self.docked)
        elif key in (ord("q"), 27):
            camera.stop()

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.TITLE)
        except cv2.error:
            pass
