"""The export's sound: carried as AAC, with the ranges staff marked silenced or bleeped, exact at the edges."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
import shutil

import av
import numpy as np
import pytest

from openbwv.server.redact import AudioRange, InvalidBox, RedactionReport, redact_video

from .footage import background

RATE = 48000
SECONDS = 2.0
FPS = 30
SILENCED = AudioRange(0.40, 0.75)
BLEEPED = AudioRange(1.20, 1.45, "bleep")
EDGE_S = 0.010  # the tolerance at a range's edges


def speechlike(n: int) -> np.ndarray:
    """A sound that never repeats (a chirp under a slow warble), so that any shift in time shows."""
    t = np.arange(n) / RATE
    chirp = np.sin(2 * np.pi * (150 * t + 400 * t**2))
    return (0.25 * chirp * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def camera_clip(path: Path) -> np.ndarray:
    """H.264 and AAC-LC mono 48 kHz in MPEG-TS, as the camera records (hw/audio_source.py); the samples."""
    sound = speechlike(int(SECONDS * RATE))
    with av.open(str(path), "w", format="mpegts") as out:
        video = out.add_stream("libx264", rate=FPS, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = 160, 96, "yuv420p"
        audio = out.add_stream("aac", rate=RATE, layout="mono")
        picture = background(160, 96)
        written = 0
        for i in range(int(SECONDS * FPS)):
            frame = av.VideoFrame.from_ndarray(picture, format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(video.encode(frame))
            while written < min(len(sound), round((i + 1) / FPS * RATE)):
                chunk = av.AudioFrame.from_ndarray(sound[None, written : written + 1024], format="flt", layout="mono")
                chunk.sample_rate, chunk.pts = RATE, written
                out.mux(audio.encode(chunk))
                written += 1024
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
    return sound


def decoded(path: Path) -> tuple[float, np.ndarray]:
    """The first audio stream decoded: the time of its first sample, in seconds from the first picture (as
    a player places it), and its samples (first channel)."""
    with av.open(str(path)) as container:
        first_picture = next(iter(container.decode(video=0))).time
    with av.open(str(path)) as container:
        frames = list(container.decode(container.streams.audio[0]))
    return float(frames[0].time - first_picture), np.concatenate([f.to_ndarray()[0] for f in frames])


@dataclass(frozen=True)
class Exported:
    source: Path
    output: Path
    report: RedactionReport
    before: np.ndarray  # the source's sound as decoded
    after: np.ndarray  # the export's
    lag: int  # samples: after[k] is before[k + lag]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    directory = tmp_path_factory.mktemp("audio")
    source, output = directory / "clip.ts", directory / "export.mp4"
    camera_clip(source)
    report = redact_video(source, output, audio=[SILENCED, BLEEPED])
    t_before, before = decoded(source)
    t_after, after = decoded(output)
    # Both on the one time line (the first picture at 0 s), as a player places them: the source's sound
    # starts 1024 samples (the AAC encoder's priming) before its first picture, which the export leaves out.
    before = before[round((t_after - t_before) * RATE) :]
    # Where the two line up, measured away from the ranges: anything but 0 is a shift in time.
    i, j = int(0.9 * RATE), int(1.15 * RATE)
    lag = max(range(-2048, 2049), key=lambda k: float(np.dot(after[i:j], before[i + k : j + k])))
    return Exported(source, output, report, before, after, lag)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def samples(t0: float, t1: float) -> slice:
    return slice(round(t0 * RATE), round(t1 * RATE))


def test_the_export_carries_the_sound_in_step_with_the_source(exported: Exported):
    """The export's sound is the source's at the same times, to the sample (the issue allows 10 ms)."""
    assert exported.lag == 0


def test_a_silenced_range_is_silent_to_its_edges(exported: Exported):
    """Silent from its first sample to its last (under -60 dBFS; the sound is at -15), and sounding
    again within 10 ms either side."""
    inside = exported.after[samples(SILENCED.start_s, SILENCED.end_s)]
    assert rms(inside) < 1e-3
    assert rms(exported.after[samples(SILENCED.start_s - EDGE_S - 0.02, SILENCED.start_s - EDGE_S)]) > 0.05
    assert rms(exported.after[samples(SILENCED.end_s + EDGE_S, SILENCED.end_s + EDGE_S + 0.02)]) > 0.05


def test_a_bleeped_range_holds_the_tone_and_none_of_the_sound(exported: Exported):
    inside = exported.after[samples(BLEEPED.start_s + EDGE_S, BLEEPED.end_s - EDGE_S)]
    spectrum = np.abs(np.fft.rfft(inside))
    freqs = np.fft.rfftfreq(len(inside), 1 / RATE)
    assert abs(freqs[spectrum.argmax()] - 1000) < 10
    tone = np.abs(freqs - 1000) < 20
    assert spectrum[~tone].sum() < 0.1 * spectrum[tone].sum()


def test_the_rest_of_the_sound_is_intact(exported: Exported):
    """Outside the ranges (and 10 ms at their edges), the export's sound is the source's."""
    after, before, lag = exported.after, exported.before, exported.lag
    kept = [(0.05, SILENCED.start_s - EDGE_S), (SILENCED.end_s + EDGE_S, BLEEPED.start_s - EDGE_S),
            (BLEEPED.end_s + EDGE_S, SECONDS - 0.1)]
    for t0, t1 in kept:
        a = after[samples(t0, t1)]
        b = before[round(t0 * RATE) + lag : round(t1 * RATE) + lag]
        assert np.corrcoef(a, b)[0, 1] > 0.99, (t0, t1)
        assert abs(rms(a) / rms(b) - 1) < 0.05


def test_the_manifest_lists_each_range(exported: Exported):
    audio = exported.report.to_dict()["audio"]
    assert audio["ranges"] == [SILENCED.to_dict(), BLEEPED.to_dict()]
    assert audio["codec"] == "aac" and audio["sample_rate"] == RATE and audio["layout"] == "mono"
    assert audio["samples_changed"] >= (SILENCED.end_s - SILENCED.start_s + BLEEPED.end_s - BLEEPED.start_s) * RATE * 0.99
    assert not exported.report.audio_removed
    assert any("every other voice and word in it is disclosed" in note for note in exported.report.notes())


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="Debian's ffmpeg is installed by make setup")
def test_the_export_plays_in_debians_ffmpeg_without_errors(exported: Exported):
    result = subprocess.run(["ffmpeg", "-v", "error", "-i", str(exported.output), "-f", "null", "-"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == ""
    with av.open(str(exported.output)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]


@pytest.mark.parametrize(("args", "message"), [((0.5, 0.5), "is empty"), ((0.5, 0.2), "before it starts"),
                                                ((0.1, 0.2, "hum"), "expected 'silence' or 'bleep'")])
def test_an_audio_range_that_cannot_be_meant_is_refused(args, message: str):
    with pytest.raises(InvalidBox, match=message):
        AudioRange(*args)
