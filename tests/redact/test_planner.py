"""What gets blurred in each frame: the hold, the sweep, keep and manual boxes (pure logic, no video)."""

from __future__ import annotations

import math
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbwv.server.redact import (
    HOLD_S,
    MARGIN,
    Box,
    FramePlan,
    InvalidBox,
    RedactionPlanner,
    TimedBox,
    merge_boxes,
    obscure,
    obscure_yuv420,
)

FPS = 30
HOLD_FRAMES = round(HOLD_S * FPS)  # 15
WIDTH, HEIGHT = 640, 360
FACE = Box(300, 100, 60, 60)


def plan_all(planner: RedactionPlanner, detections: list[list[Box] | None]) -> list[FramePlan]:
    """Push one frame per entry (None: not examined) at 30 fps; every plan, in order."""
    plans = []
    for i, faces in enumerate(detections):
        plans.extend(planner.push(i / FPS, faces))
    plans.extend(planner.finish())
    return plans


def covers(plan: FramePlan, box: Box) -> bool:
    """Some blur region of the plan holds the whole box."""
    return any(region.intersection(box) == box.area for region in plan.blur)


def test_every_frame_gets_exactly_one_plan_in_order():
    detections: list[list[Box] | None] = [[FACE] if i % 3 == 0 else None for i in range(50)]
    plans = plan_all(RedactionPlanner(WIDTH, HEIGHT), detections)
    assert [p.index for p in plans] == list(range(50))
    assert [p.examined for p in plans] == [i % 3 == 0 for i in range(50)]


def test_plans_wait_for_the_frames_that_can_still_change_them():
    planner = RedactionPlanner(WIDTH, HEIGHT)
    settled = [len(planner.push(i / FPS, [])) for i in range(HOLD_FRAMES + 2)]
    assert settled[:HOLD_FRAMES] == [0] * HOLD_FRAMES  # nothing is final until half a second has followed it
    assert settled[HOLD_FRAMES:] == [1, 1]


def test_a_face_is_still_blurred_in_frames_where_the_detector_lost_it():
    detections = [[] if 10 <= i <= 13 else [FACE] for i in range(40)]
    plans = plan_all(RedactionPlanner(WIDTH, HEIGHT), detections)
    assert all(covers(plans[i], FACE) for i in range(10, 14))


def test_a_face_is_blurred_from_half_a_second_before_it_is_first_seen():
    first = 30
    detections = [[FACE] if i >= first else [] for i in range(60)]
    plans = plan_all(RedactionPlanner(WIDTH, HEIGHT), detections)
    assert all(covers(plans[i], FACE) for i in range(first - HOLD_FRAMES, 60))
    assert not plans[first - HOLD_FRAMES - 1].blur


def test_a_face_is_blurred_until_half_a_second_after_it_is_last_seen():
    last = 20
    detections = [[FACE] if i <= last else [] for i in range(60)]
    plans = plan_all(RedactionPlanner(WIDTH, HEIGHT), detections)
    assert all(covers(plans[i], FACE) for i in range(0, last + HOLD_FRAMES + 1))
    assert not plans[last + HOLD_FRAMES + 1].blur


def test_a_face_moving_between_examined_frames_is_covered_along_its_path():
    """Examined every third frame, a 60 px face crossing 35 px a frame (100 px between examinations):
    the frames between get the box swept from one detection to the next."""

    def face_at(i: int) -> Box:
        return Box(20 + 35 * i, 100, 60, 60)

    detections = [[face_at(i)] if i % 3 == 0 else None for i in range(13)]
    plans = plan_all(RedactionPlanner(WIDTH, HEIGHT, hold_s=0.0), detections)  # no hold: the sweep alone
    assert all(covers(plans[i], face_at(i)) for i in range(13))


def test_blur_regions_are_the_face_grown_by_the_margin_on_every_side():
    plans = plan_all(RedactionPlanner(WIDTH, HEIGHT), [[FACE]])
    grow = math.ceil(FACE.w * MARGIN)
    assert plans[0].blur == (Box(FACE.x - grow, FACE.y - grow, FACE.w + 2 * grow, FACE.h + 2 * grow),)


def test_blur_regions_stop_at_the_frame_edge():
    corner = Box(0, 0, 50, 50)
    (plan,) = plan_all(RedactionPlanner(WIDTH, HEIGHT), [[corner]])
    (region,) = plan.blur
    assert (region.x, region.y) == (0, 0) and region.inside(WIDTH, HEIGHT) and region.w > corner.w


def test_a_face_whose_centre_is_inside_an_active_keep_box_is_left_clear():
    requester = Box(100, 100, 80, 80)
    keep = TimedBox(0.0, 10.0, Box(80, 80, 120, 120))
    plans = plan_all(RedactionPlanner(WIDTH, HEIGHT, keep=[keep]), [[requester, FACE]] * 5)
    for plan in plans:
        assert plan.faces_kept == (requester,)
        assert covers(plan, FACE)
        assert all(region.intersection(requester) == 0 for region in plan.blur)


def test_a_face_only_partly_inside_the_keep_box_is_blurred():
    keep = TimedBox(0.0, 10.0, Box(80, 80, 120, 120))
    half_in = Box(170, 100, 80, 80)  # centre at x=210, right of the keep box
    (plan,) = plan_all(RedactionPlanner(WIDTH, HEIGHT, keep=[keep]), [[half_in]])
    assert plan.faces_kept == () and covers(plan, half_in)


def test_the_requesters_face_is_blurred_outside_the_keep_boxs_time_range():
    """Held detections of the kept face do not carry the keep past its end: each frame is judged at its own time."""
    requester = Box(100, 100, 80, 80)
    keep = TimedBox(1.0, 2.0, Box(80, 80, 120, 120))
    plans = plan_all(RedactionPlanner(WIDTH, HEIGHT, keep=[keep]), [[requester]] * 90)  # 3 s
    for plan in plans:
        if 1.0 <= plan.time_s <= 2.0:
            assert not plan.blur and plan.keep_active == (0,)
        else:
            assert covers(plan, requester) and plan.keep_active == ()


def test_manual_boxes_are_blurred_as_drawn_while_active_whatever_is_detected():
    screen = Box(400, 200, 120, 90)
    manual = TimedBox(0.5, 1.0, screen)
    plans = plan_all(RedactionPlanner(WIDTH, HEIGHT, manual=[manual]), [[]] * 60)
    for plan in plans:
        active = 0.5 <= plan.time_s <= 1.0
        assert (plan.blur == (screen,)) is active
        assert plan.manual_applied == ((0,) if active else ())


def test_a_keep_box_does_not_unblur_a_manual_box():
    screen = Box(100, 100, 80, 80)
    planner = RedactionPlanner(WIDTH, HEIGHT, keep=[TimedBox(0, 5, screen)], manual=[TimedBox(0, 5, screen)])
    (plan,) = plan_all(planner, [[screen]])
    assert plan.faces_kept == (screen,) and plan.blur == (screen,)


def test_frame_times_must_increase():
    planner = RedactionPlanner(WIDTH, HEIGHT)
    planner.push(1.0, [])
    with pytest.raises(ValueError, match="frame times must increase"):
        planner.push(1.0, [])


@settings(max_examples=60, deadline=None)
@given(
    seen=st.lists(st.booleans(), min_size=1, max_size=80),
    examine_every=st.integers(min_value=1, max_value=5),
)
def test_no_frame_within_the_hold_of_a_detection_shows_the_face(seen: list[bool], examine_every: int):
    """A still face, detected in an arbitrary pattern of examined frames: every frame within half a second of
    any detection has it covered, and no frame further than that from every detection blurs anything."""
    detections: list[list[Box] | None] = []
    for i, present in enumerate(seen):
        detections.append(None if i % examine_every else ([FACE] if present else []))
    detected_at = [i / FPS for i, faces in enumerate(detections) if faces]
    plans = plan_all(RedactionPlanner(WIDTH, HEIGHT), detections)
    assert len(plans) == len(seen)
    for plan in plans:
        near = any(abs(plan.time_s - t) <= HOLD_S + 1e-9 for t in detected_at)
        assert bool(plan.blur) == near
        if near:
            assert covers(plan, FACE)


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


def test_frames_the_detector_never_comes_back_to_are_still_planned_within_a_second():
    """A caller that stops examining frames does not make the planner hold every frame after."""
    planner = RedactionPlanner(WIDTH, HEIGHT)
    planner.push(0.0, [FACE])
    settled = [plan for i in range(1, 60) for plan in planner.push(i / FPS, None)]
    assert [plan.index for plan in settled] == list(range(len(settled)))
    assert len(settled) >= 60 - FPS - 2
    assert all(covers(plan, FACE) for plan in settled if plan.time_s <= HOLD_S)
