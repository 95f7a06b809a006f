"""Where flashes and clicks landed in an opened clip: the A/V sync measure of the tests, `make bench`
(av_sync_ms) and `bwv demo`.

The emulated camera makes a white frame and a click at the same instants
(`SyntheticSource(flash_period_s=...)`, `SyntheticAudioSource("clicks")`);
these read an opened file back with PyAV and say how far apart they play.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from .hw.audio_source import onset_times


def flash_times(path: Path) -> list[float]:
    """Presentation times of the first white frame of each flash."""
    out, white_before = [], False
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            white = frame.to_ndarray(format="gray").mean() > 200
            if white and not white_before:
                out.append(float(frame.pts * frame.time_base))
            white_before = white
    return out


def sound_track(path: Path) -> tuple[float, float, np.ndarray, int]:
    """The decoded sound: its first and last presentation times, the samples, and the rate."""
    with av.open(str(path)) as c:
        frames = list(c.decode(audio=0))
    if not frames:
        raise AssertionError(f"{path}: no sound in the file")
    start = float(frames[0].pts * frames[0].time_base)
    samples = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
    rate = frames[0].sample_rate
    return start, start + len(samples) / rate, samples, rate


def click_times(path: Path) -> list[float]:
    """Presentation times of each click's onset in the decoded sound track."""
    start, _, samples, rate = sound_track(path)
    return [start + t for t in onset_times(samples, rate)]


def stream_starts(path: Path) -> dict[str, float]:
    """The first packet's presentation time per stream type."""
    starts: dict[str, float] = {}
    with av.open(str(path)) as c:
        for pkt in c.demux():
            if pkt.pts is None or pkt.size == 0:
                continue
            t = float(pkt.pts * pkt.time_base)
            starts[pkt.stream.type] = min(starts.get(pkt.stream.type, t), t)
    return starts


def sync_offsets(path: Path) -> list[float]:
    """For each flash the sound could have heard, the nearest click's onset minus the flash's first
    white frame, in seconds.

    A flash shown before the sound track begins (or after it ends) has no click to pair with: with
    no pre-event sound, the clip's picture can start a few frames before its sound (the key frame
    before the press), and a flash in those frames would otherwise be paired with the next second's
    click and read as a one-second error. Such flashes are left out, not counted as in sync.
    """
    sound_from, sound_to, samples, rate = sound_track(path)
    clicks = [sound_from + t for t in onset_times(samples, rate)]
    margin = 2 / 30  # a click needs a few milliseconds of track around it to be found
    flashes = [f for f in flash_times(path) if sound_from + margin <= f <= sound_to - margin]
    if not flashes or not clicks:
        raise AssertionError(f"{path}: {len(flashes)} flash(es) and {len(clicks)} click(s) within the sound; "
                             "expected both")
    return [min(clicks, key=lambda c: abs(c - f)) - f for f in flashes]
