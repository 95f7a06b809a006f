"""The emulated camera's window: the live picture with the red circle overlaid, keys for the button.

Only for `bwv camera --emulate` on a desktop.  Tk (in Python's standard
library) draws it, so the pinned headless OpenCV is enough: frames are handed
to Tk as PPM images, scaled down to a preview.  Tk must own the main thread,
so the camera's capture loop runs in a worker thread while this window runs
the Tk main loop; closing the window stops the camera cleanly (the clip is
sealed).

Keys: hold SPACE as you would hold the record button (press = start or
bookmark, hold 3 s = stop), d = dock/undock, q or closing the window = quit.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

KEYS_HELP = "keys: SPACE = the record button (hold 3 s to stop), d = dock/undock, q = quit"
PREVIEW_WIDTH = 960
POLL_MS = 33


class WindowUnavailable(RuntimeError):
    pass


def to_ppm(bgr: np.ndarray, max_width: int = PREVIEW_WIDTH) -> bytes:
    """A BGR frame as PPM bytes (what Tk's PhotoImage reads without any imaging library)."""
    h, w = bgr.shape[:2]
    if w > max_width:
        bgr = cv2.resize(bgr, (max_width, h * max_width // w), interpolation=cv2.INTER_AREA)
        h, w = bgr.shape[:2]
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return b"P6 %d %d 255\n" % (w, h) + rgb.tobytes()


def overlay(frame: np.ndarray, lit: bool, mode: str) -> np.ndarray:
    """The red circle where the camera's front has it, while the record LED is lit, and the mode."""
    img = frame.copy()
    h, w = img.shape[:2]
    if lit:
        cv2.circle(img, (w // 2, h // 2), max(12, h // 12), (0, 0, 255), -1, lineType=cv2.LINE_AA)
    cv2.putText(img, mode, (10, h - 14), cv2.FONT_HERSHEY_SIMPLEX, max(0.5, h / 720), (255, 255, 255), 2)
    return img


class PreviewWindow:
    TITLE = "OpenBWV camera (emulated)"

    def __init__(self, hw) -> None:
        try:
            import tkinter as tk
        except ImportError as e:  # Python built without Tk
            raise WindowUnavailable("this Python has no Tk (tkinter); run with --headless") from e
        self.hw = hw
        self._tk = tk
        try:
            self.root = tk.Tk()
        except tk.TclError as e:
            raise WindowUnavailable(f"no display for the preview window ({e}); run with --headless") from e
        self.root.title(self.TITLE)
        self.label = tk.Label(self.root)
        self.label.pack()
        self.status = tk.Label(self.root, text=KEYS_HELP)
        self.status.pack()
        self._latest: tuple[np.ndarray, str] | None = None
        self._frame_lock = threading.Lock()
        self._photo = None
        self._docked = False
        self._space_down = False
        self._release_pending = None
        self.camera = None
        self.frames_shown = 0
        for sequence, handler in (("<KeyPress-space>", self._space_press), ("<KeyRelease-space>", self._space_release),
                                  ("<KeyPress-d>", lambda e: self._toggle_dock()), ("<KeyPress-q>", lambda e: self.quit())):
            self.root.bind_all(sequence, handler)
        self.root.focus_force()
        self.root.protocol("WM_DELETE_WINDOW", self.quit)

    # called from the capture thread for every frame: keep only the latest
    def __call__(self, frame, camera) -> None:
        self.camera = camera
        with self._frame_lock:
            self._latest = (frame.pixels, camera.machine.mode.name)

    def _space_press(self, _event) -> None:
        if self._release_pending is not None:  # auto-repeat: a release immediately followed by a press
            self.root.after_cancel(self._release_pending)
            self._release_pending = None
            return
        if not self._space_down:
            self._space_down = True
            self.hw.emulator.press_button()

    def _space_release(self, _event) -> None:
        # Held keys auto-repeat as release/press pairs; a release is real only if no press follows it.
        self._release_pending = self.root.after(40, self._release)

    def _release(self) -> None:
        self._release_pending = None
        if self._space_down:
            self._space_down = False
            self.hw.emulator.release_button()

    def _toggle_dock(self) -> None:
        self._docked = not self._docked
        self.hw.emulator.set_docked(self._docked)

    def _poll(self) -> None:
        with self._frame_lock:
            latest, self._latest = self._latest, None
        if latest is not None:
            pixels, mode = latest
            ppm = to_ppm(overlay(pixels, bool(self.hw.record_led.is_lit), mode))
            self._photo = self._tk.PhotoImage(data=ppm, format="PPM")
            self.label.configure(image=self._photo)
            self.frames_shown += 1
        self.root.after(POLL_MS, self._poll)

    def run(self, until: threading.Thread) -> None:
        """The Tk main loop, until the window is closed or the camera thread ends."""

        def watch() -> None:
            if not until.is_alive():
                self.root.quit()
                return
            self.root.after(200, watch)

        self.root.after(POLL_MS, self._poll)
        self.root.after(200, watch)
        self.root.mainloop()

    def quit(self) -> None:
        if self.camera is not None:
            self.camera.stop()
        self.root.quit()

    def close(self) -> None:
        try:
            self.root.destroy()
        except self._tk.TclError:
            pass
