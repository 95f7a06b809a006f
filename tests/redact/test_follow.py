"""Boxes staff draw over something that moves: followed forward and backward, corrected by more keyframes."""

from __future__ import annotations

from pathlib import Path

import pytest

from openbwv.server.redact import Box, FollowBox, InvalidBox, redact_video

from .footage import background, bgr_frames, detail, document, paste, region, write_h264

FPS = 30
FRAMES = 45


def covered(regions: tuple[Box, ...], box: Box, share: float = 0.95) -> bool:
    return any(r.intersection(box) >= share * box.area for r in regions)


def sliding_document(path: Path, jump_at: int | None = None) -> list[Box]:
    """A printed sheet sliding right and down over 1.5 s of 480x270 (and, if asked, moved far away at one
    frame, as when the camera swings); its box on every frame."""
    back, sheet = background(480, 270), document(90, 50)
    frames, boxes = [], []
    for i in range(FRAMES):
        frame = back.copy()
        x, y = 20 + 5 * i, 30 + 2 * i
        if jump_at is not None and i >= jump_at:
            x, y = 350 - 3 * (i - jump_at), 200
        boxes.append(paste(frame, sheet, x, y))
        frames.append(frame)
    write_h264(path, frames, fps=FPS)
    return boxes


def run(tmp_path: Path, follow: FollowBox, jump_at: int | None = None):
    source, output = tmp_path / "doc.ts", tmp_path / "doc.mp4"
    truth = sliding_document(source, jump_at)
    regions: list[tuple[Box, ...]] = []
    report = redact_video(source, output, follow=[follow], on_plan=lambda plan: regions.append(plan.blur))
    return truth, regions, report, source, output


def test_a_box_drawn_on_one_frame_is_followed_forward_and_backward(tmp_path: Path):
    drawn_at = 20
    truth, regions, report, source, output = run(
        tmp_path, FollowBox(0.0, (FRAMES - 1) / FPS, ((drawn_at / FPS, Box(20 + 5 * drawn_at, 30 + 2 * drawn_at, 90, 50)),)))
    assert all(covered(regions[i], truth[i]) for i in range(FRAMES)), [i for i in range(FRAMES) if not covered(regions[i], truth[i])]
    before, after = bgr_frames(source), bgr_frames(output)
    for i in (0, 20, 44):
        assert detail(region(after[i], truth[i])) < 0.1 * detail(region(before[i], truth[i]))
    (use,) = report.to_dict()["follow_boxes"]
    assert use["frames_active"] == FRAMES and use["frames_lost"] == 0


def test_a_second_keyframe_corrects_the_box_where_following_alone_loses_it(tmp_path: Path):
    """The sheet jumps across the frame at frame 30: followed from frame 10 alone the box cannot know; a
    keyframe drawn at frame 36 puts it right there, and following backward from it covers 30-35 too."""
    jump = 30
    first = (10 / FPS, Box(20 + 5 * 10, 30 + 2 * 10, 90, 50))
    (tmp_path / "a").mkdir()
    truth, regions, report, *_ = run(tmp_path / "a", FollowBox(0.0, (FRAMES - 1) / FPS, (first,)), jump)
    assert not all(covered(regions[i], truth[i]) for i in range(jump, FRAMES))
    assert report.to_dict()["follow_boxes"][0]["frames_lost"] > 0
    assert any("lost what it covers" in note for note in report.notes())

    (tmp_path / "b").mkdir()
    corrected = FollowBox(0.0, (FRAMES - 1) / FPS, (first, (36 / FPS, Box(350 - 3 * 6, 200, 90, 50))))
    truth, regions, report, *_ = run(tmp_path / "b", corrected, jump)
    assert all(covered(regions[i], truth[i]) for i in range(FRAMES)), [i for i in range(FRAMES) if not covered(regions[i], truth[i])]


def test_a_followed_box_covers_nothing_outside_its_time_range(tmp_path: Path):
    truth, regions, report, *_ = run(tmp_path, FollowBox(0.5, 1.0, ((0.7, Box(20 + 5 * 21, 30 + 2 * 21, 90, 50)),)))
    assert all(regions[i] == () for i in range(FRAMES) if not 0.5 - 1e-6 <= i / FPS <= 1.0 + 1e-6)
    assert all(covered(regions[i], truth[i]) for i in range(FRAMES) if 0.5 - 1e-6 <= i / FPS <= 1.0 + 1e-6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0.0, 1.0, ()), "needs at least one keyframe"),
        ((0.0, 1.0, ((2.0, Box(0, 0, 10, 10)),)), r"keyframe 0 at 2.0 s lies outside the followed box's 0.0-1.0 s"),
        ((0.0, 1.0, ((0.5, Box(0, 0, 10, 10)), (0.5, Box(5, 5, 10, 10)))), "two keyframes .* at the same time"),
        ((1.0, 0.5, ((0.7, Box(0, 0, 10, 10)),)), "before it starts"),
    ],
)
def test_a_followed_box_that_cannot_be_what_staff_meant_is_refused(args, message: str):
    with pytest.raises(InvalidBox, match=message):
        FollowBox(*args)
