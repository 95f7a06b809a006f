"""Bad input is refused with a message that says what is wrong, and never leaves a partial export."""

from __future__ import annotations

from pathlib import Path

import pytest

from openbwv.server.redact import (
    Box,
    FaceDetector,
    InvalidBox,
    RedactionError,
    TimedBox,
    UnreadableVideo,
    redact_video,
)


def leftovers(directory: Path) -> list[str]:
    """Files in the export directory other than the inputs a test put there."""
    return sorted(p.name for p in directory.iterdir() if p.suffix not in {".ts", ".txt"})


def test_a_file_that_is_not_video_is_refused(tmp_path: Path, detector: FaceDetector):
    notes = tmp_path / "notes.txt"
    notes.write_text("interview notes, not a video\n" * 20)
    dst = tmp_path / "export.mp4"
    with pytest.raises(UnreadableVideo, match=r"notes\.txt: not a video file PyAV can read"):
        redact_video(notes, dst, detector=detector)
    assert leftovers(tmp_path) == []


def test_a_file_of_random_bytes_named_like_video_is_refused(tmp_path: Path, detector: FaceDetector):
    junk = tmp_path / "clip.ts"
    junk.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(UnreadableVideo, match=r"clip\.ts: not a video file PyAV can read"):
        redact_video(junk, tmp_path / "export.mp4", detector=detector)
    assert leftovers(tmp_path) == []


def test_a_missing_file_is_refused(tmp_path: Path, detector: FaceDetector):
    with pytest.raises(UnreadableVideo, match=r"gone\.ts: no such file"):
        redact_video(tmp_path / "gone.ts", tmp_path / "export.mp4", detector=detector)
    assert leftovers(tmp_path) == []


def test_a_box_reaching_off_the_frame_is_refused_before_anything_is_written(plain_clip: Path, tmp_path: Path, detector: FaceDetector):
    dst = tmp_path / "export.mp4"
    with pytest.raises(InvalidBox, match=r"manual box 1 \(90, 10, 20x20\) reaches outside the 96x64 frame"):
        redact_video(plain_clip, dst, manual=[TimedBox(0, 1, Box(0, 0, 10, 10)), TimedBox(0, 1, Box(90, 10, 20, 20))], detector=detector)
    assert leftovers(tmp_path) == []


def test_a_keep_box_with_a_negative_corner_is_refused(plain_clip: Path, tmp_path: Path, detector: FaceDetector):
    with pytest.raises(InvalidBox, match=r"keep box 0 \(-4, 0, 20x20\) reaches outside the 96x64 frame"):
        redact_video(plain_clip, tmp_path / "export.mp4", keep=[TimedBox(0, 1, Box(-4, 0, 20, 20))], detector=detector)
    assert leftovers(tmp_path) == []


def test_boxes_of_negative_size_or_ending_before_they_start_cannot_be_made():
    with pytest.raises(InvalidBox, match="size 20x-20: width and height must be positive"):
        Box(10, 10, 20, -20)
    with pytest.raises(InvalidBox, match=r"ends at 3 s, before it starts at 5 s"):
        TimedBox(5, 3, Box(10, 10, 20, 20))


def test_something_that_is_not_a_timed_box_is_refused(plain_clip: Path, tmp_path: Path, detector: FaceDetector):
    with pytest.raises(InvalidBox, match=r"keep box 0 is \(0, 0, 10, 10\), expected a TimedBox"):
        redact_video(plain_clip, tmp_path / "export.mp4", keep=[(0, 0, 10, 10)], detector=detector)  # type: ignore[list-item]


def test_a_failure_part_way_leaves_the_previous_export_untouched_and_no_temporary_file(plain_clip: Path, tmp_path: Path, detector: FaceDetector):
    dst = tmp_path / "export.mp4"
    dst.write_bytes(b"the export made yesterday")

    def stop_after_three(done: int, total: int) -> None:
        if done == 3:
            raise RuntimeError("operator cancelled")

    with pytest.raises(RuntimeError, match="operator cancelled"):
        redact_video(plain_clip, dst, detector=detector, progress=stop_after_three)
    assert dst.read_bytes() == b"the export made yesterday"
    assert leftovers(tmp_path) == ["export.mp4"]


def test_an_export_cannot_overwrite_its_source(plain_clip: Path, detector: FaceDetector):
    with pytest.raises(RedactionError, match="would overwrite its own source"):
        redact_video(plain_clip, plain_clip, detector=detector)
    assert plain_clip.stat().st_size > 0


def test_an_export_needs_an_existing_directory(plain_clip: Path, tmp_path: Path, detector: FaceDetector):
    with pytest.raises(RedactionError, match=r"no-such-dir: no such directory"):
        redact_video(plain_clip, tmp_path / "no-such-dir" / "export.mp4", detector=detector)


def test_a_clean_export_of_a_clip_without_faces_blurs_nothing(plain_clip: Path, tmp_path: Path, detector: FaceDetector):
    report = redact_video(plain_clip, tmp_path / "export.mp4", detector=detector)
    assert (report.frames, report.faces_detected, report.regions_blurred) == (6, 0, 0)
    assert not report.audio_removed and report.notes() == []
    assert leftovers(tmp_path) == ["export.mp4"]
