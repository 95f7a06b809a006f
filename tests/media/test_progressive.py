"""A view is remuxed as it is decrypted: the camera's MPEG-TS, pulled segment by segment, becomes a
fragmented MP4 whose first fragments are on disk before the last segment has been decrypted, so the
browser can start on them; AAC keeps its configuration (read from the first ADTS header) and sound.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest

from media.media_kit import mux_tone_and_flush
from openbwv.opener import adts_audio_specific_config, remux_stream_to_fragmented_mp4

SECONDS, FPS = 4, 25


def camera_ts() -> bytes:
    """Four seconds of H.264 (a keyframe a second, as the camera's GOP) and AAC-LC mono 48 kHz in MPEG-TS."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mpegts") as out:
        video = out.add_stream("libx264", rate=Fraction(FPS))
        video.width, video.height, video.pix_fmt = 160, 96, "yuv420p"
        video.options = {"preset": "ultrafast", "g": str(FPS), "keyint_min": str(FPS), "bf": "0"}
        audio = out.add_stream("aac", rate=48_000)
        audio.layout = "mono"
        for i in range(SECONDS * FPS):
            img = np.full((96, 160, 3), (i * 7) % 255, np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        mux_tone_and_flush(out, video, audio, SECONDS)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def ts() -> bytes:
    return camera_ts()


def pieces(data: bytes, count: int) -> list[bytes]:
    """The stream cut into `count` pieces at TS packet boundaries, as segments would be."""
    packets = len(data) // 188
    step = -(-packets // count) * 188
    return [data[i:i + step] for i in range(0, len(data), step)]


def test_the_first_fragments_are_written_before_the_last_segment_is_decrypted(ts, tmp_path):
    out = tmp_path / "live.mp4"
    seen_before_last: list[bytes] = []
    parts = pieces(ts, 8)

    def decrypted():
        for n, part in enumerate(parts):
            if n == len(parts) - 1:
                seen_before_last.append(out.read_bytes())  # what a stream could already have sent
            yield part

    remux_stream_to_fragmented_mp4(decrypted(), out)
    early = seen_before_last[0]
    assert early[4:8] == b"ftyp" and b"moov" in early and b"moof" in early
    assert len(early) < out.stat().st_size
    with av.open(io.BytesIO(early)) as partial:  # the part already written plays on its own
        assert sum(1 for p in partial.demux(partial.streams.video[0]) if p.size) >= FPS


def test_the_fragmented_mp4_holds_every_frame_and_the_sound(ts, tmp_path):
    out = tmp_path / "live.mp4"
    remux_stream_to_fragmented_mp4(pieces(ts, 5), out)
    data = out.read_bytes()
    assert data.find(b"moov") < data.find(b"moof") < data.find(b"mdat")  # index first, then fragments
    with av.open(io.BytesIO(ts)) as source:
        wanted = sum(1 for p in source.demux(source.streams.video[0]) if p.size)
    with av.open(str(out)) as mp4:
        assert [s.codec_context.name for s in mp4.streams.video] == ["h264"]
        (audio,) = mp4.streams.audio
        assert audio.codec_context.name == "aac" and audio.codec_context.extradata == b"\x11\x88"
        assert sum(1 for p in mp4.demux(mp4.streams.video[0]) if p.size) == wanted
        mp4.seek(0)
        decoded = sum(f.samples for f in mp4.decode(audio=0))
    assert decoded >= (SECONDS - 0.1) * 48_000  # the sound decodes: its configuration is right


def test_the_aac_configuration_is_read_from_the_adts_header():
    # AAC-LC (object type 2), 48 kHz (index 3), mono: the camera's sound.
    header = bytes([0xFF, 0xF1, 0x4C, 0x40, 0x20, 0x1F, 0xFC])
    assert adts_audio_specific_config(header) == bytes([0x11, 0x88])
    # AAC-LC, 44.1 kHz (index 4), stereo.
    assert adts_audio_specific_config(bytes([0xFF, 0xF1, 0x50, 0x80, 0x20, 0x1F, 0xFC])) == bytes([0x12, 0x10])
    with pytest.raises(ValueError, match="no ADTS header"):
        adts_audio_specific_config(b"\x21\x00\x00\x00\x00\x00\x00")
