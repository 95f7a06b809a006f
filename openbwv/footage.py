"""Synthetic test footage: a short real H.264 clip made on the spot.

Tests and the demo make their footage; none is shipped in the repository.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def make_synthetic_video(path: Path, *, seconds: float = 12.0, fps: int = 30, width: int = 640, height: int = 360,
                         keyframe_seconds: float = 1.0) -> Path:
    """Encode a short H.264 test clip (a moving bar and a frame counter) for the demo and tests."""
    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": str(int(fps * keyframe_seconds)), "bf": "0"}
        base = np.zeros((height, width, 3), np.uint8)
        base[:, :, 2] = np.linspace(40, 200, width, dtype=np.uint8)[None, :]
        for i in range(int(seconds * fps)):
            frame = base.copy()
            x = (i * 7) % max(1, width - 40)
            frame[:, x : x + 40] = (255, 255, 255)
            bits = i
            for b in range(16):  # the frame number as a row of black/white blocks
                frame[8:24, 8 + b * 12 : 18 + b * 12] = 255 if (bits >> b) & 1 else 0
            for p in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)
    return path
