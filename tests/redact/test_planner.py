"""What gets blurred in each frame: tracks, the requester's track, manual boxes (pure logic, no video)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbwv.server.redact import (
    LEAD_S,
    MARGIN,
    MARGIN_ACROSS,
    MAX_GAP_S,
    MIN_ASPECT,
    UNSURE_MARGIN,
    UNSURE_MARGIN_ACROSS,
    Box,
    Detection,
    FaceTracker,
    FramePlan,
    InvalidBox,
    RedactionPlanner,
    TimedBox,
    merge_boxes,
    obscure,
    obscure_yuv420,
    pick_tracks,
)

FPS = 30
WIDTH, HEIGHT = 640, 360
FACE = Box(300, 100, 60, 60)


def plan_all(detections: list[list[Box] | None], **planner_args) -> list[FramePlan]:
    """Track one frame per entry (None: not examined) at 30 fps, then plan every frame."""
    tracker = FaceTracker()
    for i, faces in enumerate(detections):
        if faces is not None:
            tracker.add(i, i / FPS, faces)
    planner = RedactionPlanner(WIDTH, HEIGHT, tracks=tracker.tracks, **planner_args)
    return [planner.plan(i, i / FPS) for i in range(len(detections))]


def covers(plan: FramePlan, box: Box) -> bool:
    """Some blur region of the plan holds the whole box (its part inside the frame)."""
    inside = box.clipped(WIDTH, HEIGHT)
    return inside is None or any(region.intersection(inside) == inside.area for region in plan.blur)


def moving(i: int, speed: int = 12, y: int = 100) -> Box:
    return Box(20 + speed * i, y, 60, 60)


def test_detections_of_one_moving_face_make_one_track():
    tracker = FaceTracker()
    for i in range(0, 40, 3):
        tracker.add(i, i / FPS, [moving(i)])
    assert len(tracker.tracks) == 1 and len(tracker.tracks[0].observations) == 14


def test_two_faces_crossing_keep_their_own_tracks():
    """One walks right, one walks left, at different heights, passing each other: motion prediction keeps
    each detection on its own track."""
    tracker = FaceTracker()
    for i in range(0, 45, 3):
        a, b = Box(40 + 10 * i, 100, 60, 60), Box(480 - 10 * i, 130, 60, 60)
        tracker.add(i, i / FPS, [a, b])
    assert len(tracker.tracks) == 2
    for track in tracker.tracks:
        xs = [o.box.x for o in track.observations]
        assert xs == sorted(xs) or xs == sorted(xs, reverse=True)


def test_a_face_is_covered_on_every_frame_between_detections_though_it_moves():
    """Examined every third frame, a face crossing 12 px a frame: the frames between get its interpolated
    position, so the blur follows it."""
    plans = plan_all([[moving(i)] if i % 3 == 0 else None for i in range(40)])
    assert all(covers(plans[i], moving(i)) for i in range(40))


def test_a_face_the_detector_loses_for_a_moment_stays_covered_where_it_went():
    """Missed on 7 examined frames in a row (0.7 s) while it keeps walking: covered all the same, because the
    track goes from where it was last seen to where it is found again."""
    detections = [None if i % 3 else ([] if 30 <= i < 51 else [moving(i, speed=5)]) for i in range(100)]
    plans = plan_all(detections)
    assert all(covers(plans[i], moving(i, speed=5)) for i in range(100))


def test_a_face_is_covered_a_little_before_its_first_detection_and_after_its_last():
    first, last = 30, 60
    plans = plan_all([[FACE] if first <= i <= last and i % 3 == 0 else ([] if i % 3 == 0 else None) for i in range(100)])
    lead = round(LEAD_S * FPS)
    assert all(covers(plans[i], FACE) for i in range(first - lead, last + lead + 1))
    assert not plans[first - lead - 2].blur and not plans[last + lead + 2].blur


def test_a_track_ends_when_the_face_is_gone_for_longer_than_the_gap():
    gap = round(MAX_GAP_S * FPS) + 6
    detections = [[FACE] if i % 3 == 0 and not 9 < i < 9 + gap else ([] if i % 3 == 0 else None) for i in range(90)]
    tracker = FaceTracker()
    for i, faces in enumerate(detections):
        if faces is not None:
            tracker.add(i, i / FPS, faces)
    assert len(tracker.tracks) == 2


def test_a_face_hidden_behind_a_pole_for_over_a_second_stays_one_track_and_blurred_throughout():
    """As a pole passes in front of it, the detector sees the face shrink and slide (half of it is hidden),
    then loses it for 1.2 s: the track's speed must not carry its prediction off, so that the face found
    again in its place joins the same track and is blurred on every frame between."""
    hiding = [Box(300 + 2 * k, 100, 60 - 4 * k, 60) for k in range(6)]  # narrower and further right each look
    detections: list[list[Box] | None] = []
    for i in range(120):
        if i % 3:
            detections.append(None)
        elif i < 18:
            detections.append([FACE])
        elif i < 36:
            detections.append([hiding[(i - 18) // 3]])
        elif i < 36 + round(1.2 * FPS):
            detections.append([])
        else:
            detections.append([FACE])
    plans = plan_all(detections)
    assert len({t for p in plans for t in p.tracks}) == 1
    assert all(covers(plans[i], Box(315, 100, 30, 60)) for i in range(30, 90))  # the part behind and beside the pole


def test_blur_regions_are_the_face_grown_by_its_margins_on_every_side():
    """A detection the detector is sure of (a Box counts as score 1): MARGIN of the height above and below,
    MARGIN_ACROSS of the width either side."""
    (plan, *_) = plan_all([[FACE]])
    across, down = FACE.w * MARGIN_ACROSS, FACE.h * MARGIN
    (region,) = plan.blur
    assert region == Box(math.floor(330 - 30 - across), math.floor(130 - 30 - down),
                         math.ceil(330 + 30 + across) - math.floor(330 - 30 - across),
                         math.ceil(130 + 30 + down) - math.floor(130 - 30 - down))


def test_the_less_sure_the_detector_the_wider_the_region():
    """CenterFace draws the boxes of turned, half-hidden and shadowed faces short; those are the ones it
    scores low, so a low score buys margin (UNSURE_MARGIN per unit of doubt) and a sure one does not."""
    sure, unsure = (plan_all([[Detection(FACE, score)]])[0].blur[0] for score in (0.95, 0.5))
    assert unsure.h - sure.h >= 2 * 0.45 * UNSURE_MARGIN * FACE.h - 2
    assert unsure.w - sure.w >= 2 * 0.45 * UNSURE_MARGIN_ACROSS * FACE.w - 2
    assert unsure.intersection(sure) == sure.area


def test_regions_grow_only_where_the_detector_lost_the_face():
    """Looked at every third frame: between two looks the straight line is as good as the detections, so the
    region is the same size; across a stretch of missed looks it grows with the distance to a detection."""
    detections = [None if i % 3 else ([] if 30 <= i < 51 else [FACE]) for i in range(80)]
    tracker = FaceTracker()
    for i, faces in enumerate(detections):
        if faces is not None:
            tracker.add(i, i / FPS, faces)
    planner = RedactionPlanner(WIDTH, HEIGHT, tracks=tracker.tracks, look_every_s=3 / FPS)
    sizes = [planner.plan(i, i / FPS).blur[0].area for i in range(80)]
    assert len(set(sizes[3:27])) == 1  # regular looks: no growth between them
    assert sizes[40] > sizes[33] > sizes[27] and sizes[40] > sizes[47] > sizes[51]


def test_a_narrow_detection_is_widened_to_a_heads_proportions():
    narrow = Box(300, 100, 30, 60)
    (plan, *_) = plan_all([[narrow]])
    (region,) = plan.blur
    assert region.w >= MIN_ASPECT * 60 * (1 + 2 * MARGIN_ACROSS) - 2


def test_blur_regions_stop_at_the_frame_edge():
    corner = Box(0, 0, 50, 50)
    (plan, *_) = plan_all([[corner]])
    (region,) = plan.blur
    assert (region.x, region.y) == (0, 0) and region.inside(WIDTH, HEIGHT) and region.w > corner.w


def test_a_keep_box_picks_the_requesters_track_which_stays_clear_for_its_whole_length():
    """The keep box is drawn around the requester at one moment (1.0-1.1 s); the requester's track runs
    from 0 to 3 s and is clear throughout, while the other face is blurred throughout."""
    requester = [moving(i, speed=4, y=200) for i in range(90)]
    keep = TimedBox(1.0, 1.1, Box(130, 190, 100, 80))
    detections = [[requester[i], moving(i, speed=6)] if i % 3 == 0 else None for i in range(90)]
    plans = plan_all(detections, keep=[keep])
    for i, plan in enumerate(plans):
        assert covers(plan, moving(i, speed=6))
        assert all(region.intersection(requester[i]) == 0 for region in plan.blur), f"frame {i}"
        assert plan.keep_active == ((0,) if i <= 87 else ())  # 87: the last examined frame


def test_a_keep_box_picks_one_track_not_everyone_who_passes_through_it():
    """A passer-by crosses the requester's keep box once; the requester is in it on every examined frame."""
    requester = Box(100, 100, 60, 60)
    keep = TimedBox(0.0, 3.0, Box(80, 80, 100, 100))
    passer = [Box(600 - 20 * i, 110, 60, 60) for i in range(90)]
    detections = [[requester, passer[i]] if i % 3 == 0 else None for i in range(90)]
    plans = plan_all(detections, keep=[keep])
    for i, plan in enumerate(plans):
        if passer[i].x >= 0:
            assert covers(plan, passer[i].clipped(WIDTH, HEIGHT)), f"frame {i}"


def test_a_keep_box_with_no_face_in_it_picks_nothing():
    tracker = FaceTracker()
    tracker.add(0, 0.0, [FACE])
    assert pick_tracks([TimedBox(0, 1, Box(0, 0, 50, 50))], tracker.tracks) == [None]


def test_manual_boxes_are_blurred_as_drawn_while_active_whatever_is_detected():
    screen = Box(400, 200, 120, 90)
    manual = TimedBox(0.5, 1.0, screen)
    plans = plan_all([[]] * 60, manual=[manual])
    for plan in plans:
        active = 0.5 <= plan.time_s <= 1.0
        assert (plan.blur == (screen,)) is active
        assert plan.manual_applied == ((0,) if active else ())


def test_a_keep_box_does_not_unblur_a_manual_box():
    screen = Box(100, 100, 80, 80)
    (plan,) = plan_all([[screen]], keep=[TimedBox(0, 5, screen)], manual=[TimedBox(0, 5, screen)])
    assert plan.faces_kept == (screen,) and plan.blur == (screen,)


def test_examined_frame_times_must_increase():
    tracker = FaceTracker()
    tracker.add(0, 1.0, [])
    with pytest.raises(ValueError, match="examined frame times must increase"):
        tracker.add(1, 1.0, [])


@settings(max_examples=60, deadline=None)
@given(
    seen=st.lists(st.booleans(), min_size=1, max_size=80),
    examine_every=st.integers(min_value=1, max_value=5),
)
def test_a_still_face_is_covered_from_just_before_its_first_detection_to_just_after_its_last(seen: list[bool], examine_every: int):
    """Detected in an arbitrary pattern of examined frames, a still face is covered on every frame within
    the lead of a detection, and on every frame between two detections less than the gap apart; a frame
    further than the lead from every detection blurs nothing."""
    detections: list[list[Box] | None] = []
    for i, present in enumerate(seen):
        detections.append(None if i % examine_every else ([FACE] if present else []))
    detected_at = [i / FPS for i, faces in enumerate(detections) if faces]
    plans = plan_all(detections)
    assert len(plans) == len(seen)
    for plan in plans:
        near = any(abs(plan.time_s - t) <= LEAD_S + 1e-9 for t in detected_at)
        between = any(a < plan.time_s < b and b - a <= MAX_GAP_S for a, b in zip(detected_at, detected_at[1:]))
        if near or between:
            assert covers(plan, FACE)
        elif not any(a < plan.time_s < b for a, b in zip(detected_at, detected_at[1:])):
            assert not plan.blur


# -- boxes ---------------------------------------------------------------------


def test_a_box_needs_a_positive_width_and_height():
    with pytest.raises(InvalidBox, match=r"size -5x10: width and height must be positive"):
        Box(0, 0, -5, 10)
    with pytest.raises(InvalidBox, match="must be positive"):
        Box(0, 0, 10, 0)


def test_a_box_is_in_whole_pixels():
    with pytest.raises(InvalidBox, match=r"x=1.5: expected a whole number of pixels"):
        Box(1.5, 0, 10, 10)  # type: ignore[arg-type]
    assert Box(np.int64(3), 4, 5, 6) == Box(3, 4, 5, 6)


def test_a_timed_box_cannot_end_before_it_starts():
    with pytest.raises(InvalidBox, match=r"ends at 1.0 s, before it starts at 2.0 s"):
        TimedBox(2.0, 1.0, FACE)


def test_a_timed_box_counts_from_the_first_frame():
    with pytest.raises(InvalidBox, match="times count from the first frame"):
        TimedBox(-1.0, 1.0, FACE)


@pytest.mark.parametrize("kind", ["keep", "manual"])
@pytest.mark.parametrize("box", [Box(600, 300, 60, 60), Box(-10, 0, 50, 50), Box(700, 400, 10, 10)])
def test_keep_and_manual_boxes_must_lie_within_the_frame(kind: str, box: Box):
    with pytest.raises(InvalidBox, match=rf"{kind} box 0 .* reaches outside the 640x360 frame"):
        RedactionPlanner(WIDTH, HEIGHT, **{kind: [TimedBox(0, 1, box)]})


def test_overlapping_finds_of_one_face_merge_but_neighbours_do_not():
    a, b = Box(100, 100, 60, 60), Box(104, 102, 58, 60)
    neighbour = Box(150, 100, 60, 60)  # touches a, but is someone else
    merged = merge_boxes([a, b, neighbour])
    assert sorted(merged, key=lambda m: m.x) == [a.union(b), neighbour]


# -- the blur ------------------------------------------------------------------


def test_nothing_finer_than_a_blur_cell_survives():
    """Two images that differ only in fine detail (a pixel checkerboard, cancelling out within
    every cell) come out the same: the blur keeps cell averages and nothing else."""
    rng = np.random.default_rng(3)
    base = rng.integers(60, 190, (120, 120), dtype=np.uint8)
    checker = np.where((np.indices((120, 120)).sum(axis=0) % 2) == 0, 40, -40)
    detailed = (base.astype(np.int16) + checker).astype(np.uint8)
    a, b = base.copy(), detailed.copy()
    obscure(a, Box(0, 0, 120, 120))
    obscure(b, Box(0, 0, 120, 120))
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert np.abs(b.astype(int) - detailed.astype(int)).mean() > 30  # while the detail itself is gone


def test_the_blur_touches_nothing_outside_its_box():
    plane = np.random.default_rng(4).integers(0, 256, (100, 100), dtype=np.uint8)
    before = plane.copy()
    box = Box(30, 20, 41, 33)
    obscure(plane, box)
    outside = np.ones_like(plane, dtype=bool)
    outside[box.y : box.bottom, box.x : box.right] = False
    assert np.array_equal(plane[outside], before[outside])
    assert not np.array_equal(plane[~outside], before[~outside])


def test_a_box_at_odd_coordinates_blurs_every_colour_sample_it_touches():
    rng = np.random.default_rng(5)
    y, u, v = (rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((64, 64), (32, 32), (32, 32)))
    u_before = u.copy()
    obscure_yuv420((y, u, v), Box(11, 7, 21, 21))  # luma columns 11-31, rows 7-27: chroma 5-15, 3-13
    changed = np.argwhere(u != u_before)
    assert changed[:, 0].min() == 3 and changed[:, 0].max() == 13
    assert changed[:, 1].min() == 5 and changed[:, 1].max() == 15
