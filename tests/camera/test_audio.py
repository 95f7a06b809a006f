"""Sound: recorded with the picture, in sync, sealed in the same chunks, and only where the policy allows."""

from __future__ import annotations

import json
import time
from pathlib import Path

import av
import pytest
from kit import wait_for

from openbwv.avsync import stream_starts, sync_offsets
from openbwv.firmware.state import Mode
from openbwv.hw.config import AudioConfig
from openbwv.opener import open_paths
from openbwv.registry import DeviceRegistry
from openbwv.sealed.keys import ServerKeyPair

DEVICE = "cam-test"
FRAME_S = 1 / 30


def open_clip(home, tmp_path: Path):
    """What `bwv open` makes of the camera's storage: the clip's MP4 and manifest."""
    storage = home.device_storage(DEVICE)
    report = open_paths(sorted(storage.glob("*.bwv")), DeviceRegistry(home.registry_dir),
                        ServerKeyPair.load(home.server_keys_dir), tmp_path / "opened")
    assert not report.problems and not report.verify.problems, report.problems
    assert len(report.clips) == 1
    clip = report.clips[0]
    return clip, json.loads(clip.manifest_path.read_text())


def record(cam, seconds: float, *, standby_s: float = 0.0):
    cam.start()
    wait_for(lambda: cam.camera.report.frames > 5)
    if standby_s:
        time.sleep(standby_s)
    cam.camera.record(True, "test")
    wait_for(lambda: cam.camera.recording_started.is_set())
    time.sleep(seconds)
    cam.camera.record(False, "test")
    wait_for(lambda: cam.camera.machine.mode is Mode.STANDBY and cam.camera.report.clips, timeout=15)
    return cam.stop()


def test_a_click_and_a_flash_at_the_same_instant_play_within_one_frame_of_each_other(camera_factory, home, tmp_path):
    cam = camera_factory(audio=AudioConfig(pattern="clicks", period_s=1.0), flash_period_s=1.0,
                         **{"prebuffer.seconds": 0, "video.segment_seconds": 2})
    report = record(cam, 4.5)
    assert report.audio_packets > 4 * 48000 / 1024 * 0.9
    clip, manifest = open_clip(home, tmp_path)
    assert len(clip.segments) >= 2  # the sync holds across a segment cut too
    with av.open(str(clip.mp4_path)) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
        assert c.streams.audio[0].codec_context.name == "aac" and c.streams.audio[0].sample_rate == 48000
    offsets = sync_offsets(clip.mp4_path)
    assert len(offsets) >= 3
    # The first white frame is the one captured nearest the click (within half a frame); the pipeline
    # must add no more than the other half.
    assert all(abs(o) <= FRAME_S for o in offsets), offsets
    info = manifest["segments"][0]["info"][0]
    assert info["audio"] == {"codec": "aac", "profile": "LC", "sample_rate": 48000, "channels": 1, "bitrate": 64000}


def test_the_pre_event_seconds_carry_no_sound_by_default(camera_factory, home, tmp_path):
    cam = camera_factory(audio=AudioConfig(pattern="tones"), **{"prebuffer.seconds": 2})
    record(cam, 1.5, standby_s=3.0)
    clip, manifest = open_clip(home, tmp_path)
    info = manifest["segments"][0]["info"][0]
    assert info["audio_policy"] == {"record": True, "pre_event": False} and info["pre_event_audio"] is False
    held = info["pre_event_held_seconds"]
    assert held >= 1.9
    starts = stream_starts(clip.ts_path)
    # No audio packet before the press: the sound starts where the pre-event picture ends.
    assert starts["audio"] - starts["video"] == pytest.approx(held, abs=0.15)


def test_with_the_policy_on_the_pre_event_seconds_carry_sound_too(camera_factory, home, tmp_path):
    cam = camera_factory(audio=AudioConfig(pattern="tones"), **{"prebuffer.seconds": 2, "audio.pre_event": True})
    record(cam, 1.5, standby_s=3.0)
    clip, manifest = open_clip(home, tmp_path)
    info = manifest["segments"][0]["info"][0]
    assert info["audio_policy"] == {"record": True, "pre_event": True} and info["pre_event_audio"] is True
    assert info["pre_event_held_seconds"] >= 1.9
    starts = stream_starts(clip.ts_path)
    assert abs(starts["audio"] - starts["video"]) < 0.1


def test_a_policy_that_forbids_sound_records_the_picture_alone_and_says_so(camera_factory, home, tmp_path):
    cam = camera_factory(**{"prebuffer.seconds": 0, "audio.record": False})
    report = record(cam, 1.5)
    assert report.audio_packets == 0
    clip, manifest = open_clip(home, tmp_path)
    with av.open(str(clip.mp4_path)) as c:
        assert [s.type for s in c.streams] == ["video"]
    info = manifest["segments"][0]["info"][0]
    assert info["audio"] is None and info["audio_policy"]["record"] is False


def test_sound_never_appears_in_clear_on_the_camera_storage(camera_factory, home, tmp_path):
    cam = camera_factory(audio=AudioConfig(pattern="tones"), **{"prebuffer.seconds": 0})
    record(cam, 2.0)
    clip, _manifest = open_clip(home, tmp_path)
    with av.open(str(clip.ts_path)) as c:
        frames = [bytes(p) for p in c.demux(audio=0) if p.size >= 24]
    assert len(frames) > 50
    files = sorted(home.device_storage(DEVICE).glob("*.bwv"))
    stored = b"".join(p.read_bytes() for p in files)
    for frame in frames:  # not one AAC frame, nor any 24 bytes of one, is on the storage as it was encoded
        assert frame[:24] not in stored and frame[-24:] not in stored
    assert all(frame[:24] in clip.ts_path.read_bytes() for frame in frames[:5])  # the search finds what is there


def test_a_microphone_that_dies_leaves_the_picture_recording_and_the_clip_says_when(camera_factory, home, tmp_path):
    import wave

    import numpy as np

    short = tmp_path / "half-second.wav"
    with wave.open(str(short), "wb") as w:  # a microphone that gives half a second of sound, then nothing
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes((np.sin(np.arange(24000) / 48000 * 2 * np.pi * 440) * 8000).astype("<i2").tobytes())
    cam = camera_factory(audio=AudioConfig(source="file", device=str(short), loop=False),
                         **{"prebuffer.seconds": 0})
    report = record(cam, 2.0)
    assert report.audio_errors and "ended" in report.audio_errors[0]
    assert report.recorded_frames >= 50
    _clip, manifest = open_clip(home, tmp_path)
    # Said once in the clip: as an event if it died while recording, in every segment's INFO if before.
    lost = [e["reason"] for s in manifest["segments"] for e in s.get("events", []) if e["type"] == "audio_lost"]
    lost_before = [i["audio_lost"] for s in manifest["segments"] for i in s["info"] if "audio_lost" in i]
    assert len(lost) + min(1, len(lost_before)) == 1 and "ended" in (lost + lost_before)[0]
