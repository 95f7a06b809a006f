"""The pre-event buffer: a drained clip is playable, starts `seconds` before the press, and memory stays bounded.

Two of these tests exist because Picamera2's CircularOutput got them wrong:
clips that did not start at a keyframe (unplayable), and clips that kept only
the last few seconds instead of the whole pre-event window.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbwv.firmware.packets import EncodedPacket
from openbwv.firmware.prebuffer import PreEventBuffer

TIME_BASE = Fraction(1, 90_000)
BIG = 10**12  # a byte bound that never bites


def packet(i: int, t: float, keyframe: bool, size: int = 100) -> EncodedPacket:
    return EncodedPacket(
        data=bytes([i % 256]) * size,
        pts=i * 3000,
        time_base=TIME_BASE,
        keyframe=keyframe,
        t_mono=t,
        utc_us=1_700_000_000_000_000 + round(t * 1e6),
    )


def stream(
    seconds: float, fps: int = 30, gop_frames: int = 30, start: float = 0.0, first: int = 0, size: int = 100
) -> list[EncodedPacket]:
    """A camera's output: `fps` frames a second, a keyframe every `gop_frames`, for `seconds`."""
    n = round(seconds * fps)
    return [packet(i, start + i / fps, (i - first) % gop_frames == 0, size) for i in range(first, first + n)]


def push_all(buf: PreEventBuffer, packets: list[EncodedPacket]) -> None:
    for p in packets:
        buf.push(p)


def assert_contiguous(clip: list[EncodedPacket]) -> None:
    """No packet missing in the middle: pts advance one frame at a time."""
    assert all(b.pts - a.pts == 3000 for a, b in zip(clip, clip[1:]))


def test_clip_starts_thirty_seconds_before_the_press():
    buf = PreEventBuffer(seconds=30, max_bytes=BIG)
    packets = stream(90, fps=30, gop_frames=30)  # keyframe every second
    push_all(buf, packets)
    press_time = packets[-1].t_mono  # the press is handled on the newest frame

    clip = buf.drain()

    assert clip[0].keyframe
    assert press_time - 31 < clip[0].t_mono <= press_time - 30
    assert clip[-1] is packets[-1]  # nothing between the buffer and the live stream is lost
    assert_contiguous(clip)


def test_clip_is_not_cut_short_to_the_last_few_seconds():
    # A buffer sized in frames, or trimmed frame by frame and then skipped to the
    # next keyframe, comes out up to a GOP short. With 4 s GOPs that is obvious.
    buf = PreEventBuffer(seconds=30, max_bytes=BIG)
    packets = stream(100, fps=30, gop_frames=120)
    push_all(buf, packets)

    clip = buf.drain()

    assert clip[-1].t_mono - clip[0].t_mono >= 30
    assert clip[-1].t_mono - clip[0].t_mono < 34  # and no more than one GOP longer
    assert clip[0].keyframe


def test_drained_clip_starts_at_a_keyframe_even_when_the_window_falls_mid_gop():
    buf = PreEventBuffer(seconds=2.5, max_bytes=BIG)
    push_all(buf, stream(10, fps=10, gop_frames=10))  # keyframes at 0, 1, ... 9 s; newest 9.9

    clip = buf.drain()

    assert clip[0].keyframe
    assert clip[0].t_mono == pytest.approx(7.0)  # 7.4 is the cut-off; 7.0 is the keyframe before it


@settings(max_examples=200, deadline=None)
@given(
    gops=st.lists(
        st.tuples(st.integers(1, 40), st.integers(1, 5000)),  # (frames in this GOP, bytes per frame)
        min_size=1,
        max_size=30,
    ),
    leading=st.integers(0, 10),
    seconds=st.sampled_from([0, 0.5, 1, 2.5, 30, 120]),
    max_bytes=st.integers(1, 200_000),
    cut=st.integers(0, 2000),
)
def test_drained_clip_starts_at_a_keyframe(gops, leading, seconds, max_bytes, cut):
    buf = PreEventBuffer(seconds=seconds, max_bytes=max_bytes)
    packets = [packet(i, i / 30, False, 50) for i in range(leading)]  # camera started mid-GOP
    for frames, size in gops:
        for k in range(frames):
            i = len(packets)
            packets.append(packet(i, i / 30, k == 0, size))
    push_all(buf, packets[: cut or None])

    clip = buf.drain()

    assert clip == [] or clip[0].keyframe
    assert_contiguous(clip)


@settings(max_examples=200, deadline=None)
@given(
    frames=st.lists(st.tuples(st.booleans(), st.integers(0, 20_000), st.floats(0, 2)), max_size=300),
    max_bytes=st.integers(1, 100_000),
    seconds=st.floats(0, 120),
)
def test_memory_is_bounded_by_bytes(frames, max_bytes, seconds):
    buf = PreEventBuffer(seconds=seconds, max_bytes=max_bytes)
    t = 0.0
    for i, (keyframe, size, dt) in enumerate(frames):
        t += dt
        buf.push(packet(i, t, keyframe, size))
        assert buf.bytes_held <= max_bytes
    held = buf.drain()
    assert sum(p.size for p in held) <= max_bytes


def test_a_gop_bigger_than_the_byte_bound_is_dropped_until_the_next_keyframe():
    buf = PreEventBuffer(seconds=30, max_bytes=1000)
    buf.push(packet(0, 0.0, True, 400))
    buf.push(packet(1, 0.1, False, 400))
    assert len(buf) == 2
    buf.push(packet(2, 0.2, False, 400))  # 1200 bytes: the only GOP must go
    assert len(buf) == 0 and buf.bytes_held == 0
    buf.push(packet(3, 0.3, False, 10))  # the rest of that GOP cannot be decoded
    assert len(buf) == 0
    buf.push(packet(4, 0.4, True, 10))
    assert [p.pts for p in buf.drain()] == [4 * 3000]


def test_byte_bound_drops_whole_gops_from_the_front():
    buf = PreEventBuffer(seconds=120, max_bytes=25_000)
    push_all(buf, stream(10, fps=10, gop_frames=10, size=1000))  # 10 kB per GOP, 100 kB pushed

    clip = buf.drain()

    assert len(clip) == 20  # two whole GOPs; a third would exceed 25 kB
    assert clip[0].keyframe and clip[0].t_mono == pytest.approx(8.0)


def test_packets_before_the_first_keyframe_are_dropped():
    buf = PreEventBuffer(seconds=30, max_bytes=BIG)
    for i in range(5):
        buf.push(packet(i, i / 30, False))
    assert len(buf) == 0 and buf.bytes_held == 0 and buf.seconds_held == 0.0

    buf.push(packet(5, 5 / 30, True))
    buf.push(packet(6, 6 / 30, False))

    assert [p.pts // 3000 for p in buf.drain()] == [5, 6]


def test_drain_empties_the_buffer():
    buf = PreEventBuffer(seconds=30, max_bytes=BIG)
    push_all(buf, stream(5))
    assert len(buf) == 150

    assert len(buf.drain()) == 150

    assert len(buf) == 0 and buf.bytes_held == 0 and buf.seconds_held == 0.0
    assert buf.drain() == []


def test_after_a_drain_the_buffer_refills_from_the_next_keyframe():
    # Packets after a drain belong to the GOP that was just handed to the recorder.
    buf = PreEventBuffer(seconds=30, max_bytes=BIG)
    packets = stream(3, fps=10, gop_frames=10)
    push_all(buf, packets[:15])
    buf.drain()

    push_all(buf, packets[15:])

    clip = buf.drain()
    assert clip[0].keyframe and clip[0].pts // 3000 == 20
    assert clip[-1] is packets[-1]


def test_long_buffer_keeps_all_of_it():
    buf = PreEventBuffer(seconds=120, max_bytes=BIG)
    packets = stream(120, fps=30, gop_frames=60)
    push_all(buf, packets)

    assert len(buf) == len(packets)  # nothing pushed in the last 120 s is dropped
    assert buf.seconds_held == pytest.approx(120 - 1 / 30)

    push_all(buf, stream(80, fps=30, gop_frames=60, start=120.0, first=len(packets)))
    clip = buf.drain()
    assert clip[-1].t_mono - clip[0].t_mono >= 120
    assert clip[0].keyframe
    assert_contiguous(clip)


def test_zero_seconds_holds_only_the_current_gop():
    buf = PreEventBuffer(seconds=0, max_bytes=BIG)
    packets = stream(5, fps=10, gop_frames=10)
    push_all(buf, packets[:47])

    clip = buf.drain()

    assert [p.pts // 3000 for p in clip] == list(range(40, 47))  # from the latest keyframe


def test_seconds_and_bytes_held_are_running_totals():
    buf = PreEventBuffer(seconds=2, max_bytes=BIG)
    push_all(buf, stream(1, fps=10, gop_frames=5, size=7))
    assert len(buf) == 10
    assert buf.bytes_held == 70
    assert buf.seconds_held == pytest.approx(0.9)


@pytest.mark.parametrize("seconds", [-0.1, 120.5, float("nan"), float("inf")])
def test_pre_event_seconds_outside_0_to_120_are_refused(seconds):
    with pytest.raises(ValueError, match="between 0 and 120"):
        PreEventBuffer(seconds=seconds, max_bytes=1000)


@pytest.mark.parametrize("max_bytes", [0, -1])
def test_byte_bound_must_be_positive(max_bytes):
    with pytest.raises(ValueError, match="positive"):
        PreEventBuffer(seconds=30, max_bytes=max_bytes)


def test_packets_out_of_capture_order_are_refused():
    buf = PreEventBuffer(seconds=30, max_bytes=BIG)
    buf.push(packet(0, 1.0, True))
    with pytest.raises(ValueError, match="capture order"):
        buf.push(packet(1, 0.5, False))


# --- against a model: the rules written as a definition rather than as a loop -------------


def expected_hold(since_drain: list[EncodedPacket], seconds: float, max_bytes: int) -> list[EncodedPacket]:
    """What the buffer must hold, computed from scratch.

    Split what was pushed since the last drain into GOPs (dropping packets
    before the first keyframe); a GOP is kept iff the next GOP does not start
    at or before ``newest - seconds`` and the bytes from its start to the end
    fit in `max_bytes`. Both conditions only ever become true as packets
    arrive, and do so front to back, so this equals the incremental eviction.
    """
    gops: list[list[EncodedPacket]] = []
    for p in since_drain:
        if p.keyframe:
            gops.append([p])
        elif gops:
            gops[-1].append(p)
    if not gops:
        return []
    cutoff = since_drain[-1].t_mono - seconds
    kept: list[list[EncodedPacket]] = []
    tail_bytes = 0
    for i in range(len(gops) - 1, -1, -1):
        tail_bytes += sum(p.size for p in gops[i])
        covered_without = i + 1 < len(gops) and gops[i + 1][0].t_mono <= cutoff
        if covered_without or tail_bytes > max_bytes:
            break
        kept.insert(0, gops[i])
    return [p for g in kept for p in g]


operations = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.booleans(), st.integers(0, 3000), st.sampled_from([0.0, 0.01, 0.033, 0.5, 3.0])),
        st.tuples(st.just("drain")),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(ops=operations, seconds=st.sampled_from([0, 0.05, 1, 2, 7.5, 120]), max_bytes=st.integers(1, 40_000))
def test_the_buffer_holds_exactly_what_the_rules_say(ops, seconds, max_bytes):
    buf = PreEventBuffer(seconds=seconds, max_bytes=max_bytes)
    since_drain: list[EncodedPacket] = []
    t = 0.0
    for i, op in enumerate(ops):
        if op[0] == "push":
            _, keyframe, size, dt = op
            t += dt
            p = packet(i, t, keyframe, size)
            buf.push(p)
            since_drain.append(p)
            want = expected_hold(since_drain, seconds, max_bytes)
            assert len(buf) == len(want)
            assert buf.bytes_held == sum(p.size for p in want)
            assert buf.seconds_held == (want[-1].t_mono - want[0].t_mono if want else 0.0)
        else:
            assert buf.drain() == expected_hold(since_drain, seconds, max_bytes)
            since_drain = []
