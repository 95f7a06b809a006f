"""Microphones: 48 kHz mono chunks stamped on the monotonic clock, from a pattern, a file or ALSA."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from openbwv.hw import HardwareConfig, open_hardware
from openbwv.hw.audio_source import (
    SAMPLE_RATE,
    AlsaAudioSource,
    FileAudioSource,
    SampleClock,
    SyntheticAudioSource,
    make_speech_wav,
    onset_times,
)
from openbwv.hw.camera_source import SyntheticSource
from openbwv.hw.config import AudioConfig, HardwareConfig as HwConfig
from openbwv.hw.errors import AudioError, AudioOpenFailed, EndOfStream, HardwareConfigError, UnknownBackend


def write_wav(path: Path, samples: np.ndarray, rate: int, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return path


def test_synthetic_clicks_fall_on_the_multiples_of_the_period_of_the_monotonic_clock():
    source = SyntheticAudioSource("clicks", period_s=0.5, paced=False)
    chunks = [source.read() for _ in range(60)]  # 1.28 s
    assert all(c.samples.dtype == np.int16 and c.sample_rate == SAMPLE_RATE for c in chunks)
    assert [c.first_sample for c in chunks] == [i * 1024 for i in range(60)]
    samples = np.concatenate([c.samples for c in chunks])
    start = chunks[0].monotonic
    clicks = [start + t for t in onset_times(samples)]
    assert len(clicks) >= 2
    for t in clicks:  # each onset is the first sample at or after a multiple of 0.5 s
        assert 0 <= t - round(t / 0.5) * 0.5 < 1 / SAMPLE_RATE + 1e-9


def test_a_paced_source_delivers_in_real_time_and_stamps_the_first_sample_of_each_chunk():
    source = SyntheticAudioSource("tones", paced=True)
    first = source.read()
    t0 = time.monotonic()
    for _ in range(23):
        last = source.read()
    elapsed = time.monotonic() - t0
    assert elapsed >= 23 * 1024 / SAMPLE_RATE * 0.95
    assert last.monotonic == pytest.approx(first.monotonic + 23 * 1024 / SAMPLE_RATE, abs=1e-9)
    assert last.monotonic <= time.monotonic()  # not stamped in the future


def test_clicks_and_flashes_with_one_period_happen_at_the_same_instants():
    video = SyntheticSource(320, 240, 30.0, paced=True, flash_period_s=0.25, flash_s=0.05)
    try:
        frames = [video.read() for _ in range(20)]
    finally:
        video.close()
    for f in frames:
        white = bool(f.pixels.min() == 255)
        assert white == ((f.monotonic + 0.5 / 30) % 0.25 < 0.05)  # from half a frame before the click
    assert any(f.pixels.min() == 255 for f in frames)


def test_the_sample_clock_follows_the_sample_count_and_slews_to_a_drifting_card():
    clock = SampleClock(SAMPLE_RATE, gain=0.05)
    n = 1024
    stamps = []
    for k in range(2000):  # the card runs 100 ppm fast: its chunks arrive a little early
        arrival = 10.0 + (k + 1) * n / SAMPLE_RATE * (1 - 100e-6) + (0.002 if k % 7 == 0 else 0.0)
        stamps.append(clock.stamp(n, arrival))
    first, mono = stamps[-1]
    assert first == 1999 * n
    true_first = 10.0 + 1999 * n / SAMPLE_RATE * (1 - 100e-6)
    assert abs(mono - true_first) < 0.003  # within the scheduling jitter, not the 4 ms of accumulated drift
    steps = np.diff([m for _f, m in stamps])
    assert steps.std() < 1e-4  # jitter in the arrivals does not reach the stamps
    assert clock.resyncs == 0


def test_the_sample_clock_re_anchors_after_lost_samples():
    clock = SampleClock(SAMPLE_RATE)
    for k in range(10):
        clock.stamp(1024, 5.0 + (k + 1) * 1024 / SAMPLE_RATE)
    _first, mono = clock.stamp(1024, 5.0 + 11 * 1024 / SAMPLE_RATE + 0.5)  # half a second was lost
    assert clock.resyncs == 1
    assert mono == pytest.approx(5.0 + 10 * 1024 / SAMPLE_RATE + 0.5, abs=1e-6)


def test_a_file_source_plays_any_sound_file_as_48_khz_mono(tmp_path):
    t = np.arange(22050) / 22050
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1) * 12000
    path = write_wav(tmp_path / "in.wav", stereo.reshape(-1), 22050, channels=2)
    source = FileAudioSource(path, paced=False, loop=False)
    assert source.seconds == pytest.approx(1.0, abs=0.01)
    chunks = list(source)
    samples = np.concatenate([c.samples for c in chunks])
    assert len(samples) == pytest.approx(SAMPLE_RATE, abs=64)
    assert 8000 < np.abs(samples).max() < 13000
    with pytest.raises(EndOfStream):
        source.read()


def test_a_looping_file_source_starts_over(tmp_path):
    path = write_wav(tmp_path / "short.wav", np.full(4800, 1000, np.int16), SAMPLE_RATE)
    source = FileAudioSource(path, paced=False, loop=True)
    got = sum(len(source.read().samples) for _ in range(20))
    assert got == 20 * 1024


def test_speech_made_with_espeak_ng_plays_as_the_microphone(tmp_path):
    wav = make_speech_wav(tmp_path / "speech.wav", "Stop. Police.")
    source = FileAudioSource(wav, paced=False, loop=False)
    samples = np.concatenate([c.samples for c in source])
    assert 0.5 < len(samples) / SAMPLE_RATE < 5
    assert np.abs(samples).max() > 3000  # someone is speaking


def test_a_missing_or_silent_file_is_a_clear_error(tmp_path):
    with pytest.raises(AudioOpenFailed, match="could not open audio file"):
        FileAudioSource(tmp_path / "nope.wav")
    (tmp_path / "text.txt").write_text("not sound")
    with pytest.raises(AudioOpenFailed):
        FileAudioSource(tmp_path / "text.txt")


def test_a_missing_alsa_device_is_a_clear_error():
    with pytest.raises(AudioOpenFailed, match=r"could not open ALSA capture device 'hw:CARD=NoSuchMic,DEV=0'.*arecord -L"):
        AlsaAudioSource("hw:CARD=NoSuchMic,DEV=0")


def test_the_alsa_backend_reads_what_the_capture_device_hears(tmp_path):
    """No sound card here: ALSA's file plugin plays a raw file as the capture device (its `infile`)."""
    expected = (np.sin(2 * np.pi * 440 * np.arange(4800) / SAMPLE_RATE) * 10000).astype("<i2")
    raw = tmp_path / "heard.raw"
    raw.write_bytes(expected.tobytes())
    conf = tmp_path / "asound.conf"
    conf.write_text(f'pcm.!default {{ type file; slave {{ pcm {{ type null }} }} file "/dev/null"; '
                    f'infile "{raw}"; format "raw" }}\n')
    script = textwrap.dedent("""
        import json, sys
        from openbwv.hw.audio_source import AlsaAudioSource
        src = AlsaAudioSource("default")
        got = []
        while len(got) < 24:
            c = src.read()
            got += c.samples.tolist()
        src.close()
        print(json.dumps(got[:24]))
    """)
    env = dict(os.environ, ALSA_CONFIG_PATH=str(conf))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    assert json.loads(out.stdout.strip().splitlines()[-1]) == expected[:24].tolist()


def test_the_emulated_camera_has_a_synthetic_microphone_by_default(tmp_path):
    with open_hardware(HardwareConfig(trace_path=None, audio=AudioConfig(paced=False))) as hw:
        assert isinstance(hw.audio, SyntheticAudioSource)
        assert len(hw.audio.read().samples) == 1024
    with open_hardware(HardwareConfig(audio=AudioConfig(source="none"))) as hw:
        assert hw.audio is None


def test_audio_options_come_from_the_command_line_environment_and_config_table(tmp_path):
    import argparse

    from openbwv.hw.config import add_hardware_arguments, config_from_arguments

    parser = argparse.ArgumentParser()
    add_hardware_arguments(parser)
    args = parser.parse_args(["--audio", str(tmp_path / "speech.wav")])
    config = config_from_arguments(args, environ={"BWV_AUDIO": "none"})
    assert (config.audio.source, config.audio.device) == ("file", str(tmp_path / "speech.wav"))
    assert config_from_arguments(parser.parse_args([]), environ={"BWV_AUDIO": "none"}).audio_source == "none"
    table = HwConfig.from_mapping({"audio": {"source": "synthetic", "pattern": "tones", "period_s": 1.0}})
    assert (table.audio.pattern, table.audio.period_s) == ("tones", 1.0)
    with pytest.raises(HardwareConfigError, match=r"\.audio has unknown key"):
        HwConfig.from_mapping({"audio": {"sorce": "alsa"}})
    with pytest.raises(UnknownBackend, match="audio source backend 'jack'"):
        HwConfig.from_mapping({"audio": {"source": "jack"}})


def test_invented_sound_is_refused_on_the_real_backend():
    with pytest.raises(HardwareConfigError, match="must never seal invented sound"):
        HwConfig(backend="pi", audio=AudioConfig(source="synthetic")).check()
    assert HwConfig(backend="pi").audio_source == "alsa"


def test_bad_synthetic_settings_are_clear_errors():
    with pytest.raises(AudioError, match="pattern 'chirp' is not known"):
        SyntheticAudioSource("chirp")
    with pytest.raises(AudioError, match="period"):
        SyntheticAudioSource(period_s=0.0)
