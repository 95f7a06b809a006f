"""Sound: beeps that never block the firmware, played on the buzzer pin or through ALSA.

The ALSA tests keep the real path (simpleaudio -> libasound -> a PCM) and
route ALSA's default PCM into a file.  ALSA reads ALSA_CONFIG_PATH once, when
libasound is loaded, so each of them plays in a fresh subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from openbwv.hw.errors import InvalidTone, SoundError
from openbwv.hw.sound import (
    SAMPLE_RATE,
    SilentSound,
    alsa_file_sink_config,
    read_sink_samples,
    tone_samples,
    write_alsa_file_sink_config,
)
from openbwv.hw.trace import HardwareTrace
from openbwv.hw.trace_analysis import beep_intervals, beeps, on_edges, read_trace, state_changes


def dominant_frequency(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    return float(np.fft.rfftfreq(len(samples), 1 / sample_rate)[int(np.argmax(spectrum))])


def play_in_subprocess(tmp_path: Path, sink: Path, script: str, *, append: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, **write_alsa_file_sink_config(tmp_path / "asound.conf", sink, append=append)}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result


PLAY = """
    import sys
    from openbwv.hw.sound import SimpleaudioSound
    sound = SimpleaudioSound()
    for frequency, duration in {tones!r}:
        sound.beep(frequency, duration)
    assert sound.wait_idle(timeout=20), "tones did not finish"
    error = sound.last_error
    sound.close()
    sys.exit(f"beep failed: {{error}}" if error else 0)
"""


def test_tone_samples_have_the_requested_length_and_frequency():
    samples = tone_samples(2700, 0.1)
    assert samples.dtype == np.dtype("<i2") and len(samples) == 4410
    assert abs(dominant_frequency(samples) - 2700) <= SAMPLE_RATE / len(samples)
    assert samples[0] == 0 and abs(int(samples[-1])) < 200  # faded ends: no click


def test_beep_plays_into_the_alsa_file_sink(tmp_path):
    sink = tmp_path / "beep.raw"
    play_in_subprocess(tmp_path, sink, PLAY.format(tones=[(880, 0.25)]), append=False)
    samples = read_sink_samples(sink)
    assert len(samples) == round(0.25 * SAMPLE_RATE)
    assert abs(dominant_frequency(samples) - 880) <= SAMPLE_RATE / len(samples)
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    assert rms > 0.3 * 32767 / np.sqrt(2)  # a tone, not silence


def test_an_appending_sink_keeps_every_beep_in_order(tmp_path):
    sink = tmp_path / "sink with space" / "beeps.raw"
    sink.parent.mkdir()
    play_in_subprocess(tmp_path, sink, PLAY.format(tones=[(660, 0.2), (1320, 0.3)]))
    samples = read_sink_samples(sink)
    first, second = round(0.2 * SAMPLE_RATE), round(0.3 * SAMPLE_RATE)
    assert len(samples) == first + second
    assert abs(dominant_frequency(samples[:first]) - 660) <= SAMPLE_RATE / first
    assert abs(dominant_frequency(samples[first:]) - 1320) <= SAMPLE_RATE / second


def test_the_alsa_config_spells_the_slave_pcm_inline():
    text = alsa_file_sink_config("/tmp/x.raw", append=False)
    assert 'pcm.!default { type file; slave { pcm { type null } } file "/tmp/x.raw"; format "raw" }' in text


def test_an_alsa_sink_path_that_would_break_the_config_is_refused():
    with pytest.raises(SoundError, match=r"quote, backslash or newline"):
        alsa_file_sink_config('/tmp/a"b.raw')


def test_routing_alsa_after_libasound_has_loaded_is_refused(tmp_path):
    script = f"""
        from openbwv.hw.sound import libasound_loaded, route_default_pcm_to_file
        from openbwv.hw.errors import SoundError
        assert not libasound_loaded()
        route_default_pcm_to_file({str(tmp_path / 'a.conf')!r}, {str(tmp_path / 'a.raw')!r})
        import simpleaudio
        assert libasound_loaded()
        try:
            route_default_pcm_to_file({str(tmp_path / 'b.conf')!r}, {str(tmp_path / 'b.raw')!r})
        except SoundError as exc:
            print(exc)
        else:
            raise SystemExit("second routing was accepted")
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "libasound is already loaded" in result.stdout


def test_the_emulated_camera_beeps_through_alsa_with_the_trace_from_the_sound_output(tmp_path):
    sink, trace = tmp_path / "beeps.raw", tmp_path / "hw.jsonl"
    script = f"""
        from openbwv.hw import CameraConfig, HardwareConfig, open_hardware
        config = HardwareConfig(sound="simpleaudio", trace_path={str(trace)!r}, camera=CameraConfig(source="none"))
        with open_hardware(config) as hw:
            hw.sound.beep(2000, 0.1)
            assert hw.sound.wait_idle(timeout=20)
            assert hw.sound.last_error is None, hw.sound.last_error
    """
    play_in_subprocess(tmp_path, sink, script)
    assert len(read_sink_samples(sink)) == round(0.1 * SAMPLE_RATE)
    [beep] = beeps(read_trace(trace))
    assert beep.frequency == 2000 and beep.requested_duration == 0.1 and beep.stop is not None


def test_beep_returns_before_the_tone_has_played(emulated):
    hw = emulated()
    started = time.monotonic()
    hw.sound.beep(2700, 3.0)
    returned = time.monotonic() - started
    assert returned < 1.0  # a 3 s tone; the call only queues it
    assert hw.sound.busy


def test_buzzer_beeps_play_in_order_on_the_pwm_pin(emulated):
    hw = emulated()
    hw.sound.beep(2700, 0.05)
    hw.sound.beep(1800, 0.05)
    assert hw.sound.wait_idle(timeout=10)
    events = read_trace(hw.trace.path)
    assert [b.frequency for b in beeps(events)] == [2700.0, 1800.0]
    buzzer_on = [ev for ev in events if ev.device == "buzzer" and ev.state == "on"]
    assert [ev.fields["frequency"] for ev in buzzer_on] == [2700.0, 1800.0]
    assert all(ev.fields["value"] == 0.5 for ev in buzzer_on)
    assert state_changes(events, "buzzer")[-1][1] == "off"
    assert len(on_edges(events, "buzzer")) == 2


def test_beep_intervals_are_measured_from_the_trace(emulated):
    hw = emulated()
    for _ in range(3):  # what the firmware's recording loop will do, faster
        hw.sound.beep(2700, 0.05)
        time.sleep(0.3)
    assert hw.sound.wait_idle(timeout=10)
    found = beeps(read_trace(hw.trace.path))
    assert len(found) == 3
    assert all(0.25 <= gap <= 0.6 for gap in beep_intervals(found))
    assert all(0.04 <= b.duration <= 0.5 for b in found)


@pytest.mark.parametrize("frequency, duration, message", [
    (50, 0.1, r"frequency 50 Hz is outside what BuzzerSound plays \(100 to 10000 Hz\)"),
    (2700, 0, r"duration 0 s is out of range"),
    (2700, 60, r"duration 60 s is out of range"),
])
def test_a_tone_the_output_cannot_play_is_rejected_at_once(emulated, frequency, duration, message):
    hw = emulated()
    with pytest.raises(InvalidTone, match=message):
        hw.sound.beep(frequency, duration)


def test_beeping_after_close_is_an_error():
    sound = SilentSound()
    sound.close()
    with pytest.raises(SoundError, match=r"SilentSound is closed"):
        sound.beep(1000, 0.1)


def test_a_flood_of_beeps_is_dropped_and_traced_not_queued_for_minutes(tmp_path):
    with HardwareTrace(tmp_path / "t.jsonl") as trace:
        sound = SilentSound(trace=trace, max_pending=2)
        for _ in range(6):
            sound.beep(1000, 1.0)
        dropped = sound.dropped
        sound.close()  # cuts the playing tone short
    events = read_trace(tmp_path / "t.jsonl")
    assert dropped >= 3
    assert sum(ev.event == "beep_dropped" for ev in events) == dropped
