"""What the media tests share: the camera's sound (AAC-LC mono 48 kHz) as a test tone."""

from __future__ import annotations

import av
import numpy as np

RATE, SAMPLES = 48_000, 1024  # the camera's sample rate; one AAC frame


def mux_tone_and_flush(out: av.container.OutputContainer, video: av.VideoStream, audio: av.AudioStream,
                       seconds: int) -> None:
    """Mux `seconds` of a 440 Hz tone into `audio`, then flush both encoders (after the video's frames)."""
    for n in range(seconds * RATE // SAMPLES):
        t = (np.arange(SAMPLES) + n * SAMPLES) / RATE
        frame = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :],
                                           format="fltp", layout="mono")
        frame.sample_rate, frame.pts = RATE, n * SAMPLES
        out.mux(audio.encode(frame))
    out.mux(video.encode(None))
    out.mux(audio.encode(None))
