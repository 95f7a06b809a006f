"""Exports of real footage: H.264 in, H.264 MP4 out, no face left to find but the requester's."""

from __future__ import annotations

import json

import av
import numpy as np

from openbwv.server.redact import FaceDetector, sha256_file

from .conftest import KEEP_BOX, Export
from .footage import bgr_frames, core, detail, luma_frames, region


def centred_in(face, box) -> bool:
    return box.contains_point(*face.centre)


def test_the_source_shows_three_faces_the_detector_finds(street_export: Export, detector: FaceDetector):
    """The premise of the next test: without redaction, every face in the scene is found."""
    scene, source = street_export.scene, luma_frames(street_export.source)
    for i in (0, len(source) // 2, len(source) - 1):
        faces = detector.detect(source[i])
        assert any(centred_in(f, scene.kept_face) for f in faces)
        for other in scene.moving_faces[i]:
            assert any(centred_in(f, other) for f in faces), f"frame {i}: no detection on the face at {other}"


def test_no_face_but_the_requesters_can_be_found_in_any_frame_of_the_export(street_export: Export, detector: FaceDetector):
    output = luma_frames(street_export.output)
    for i, frame in enumerate(output):
        faces = detector.detect(frame)
        assert [f for f in faces if not centred_in(f, KEEP_BOX)] == [], f"frame {i} still shows a face"
        assert any(centred_in(f, street_export.scene.kept_face) for f in faces), f"frame {i}: the requester's face is gone"


def test_the_requesters_face_is_unchanged_but_for_re_encoding(street_export: Export):
    scene = street_export.scene
    source, output = luma_frames(street_export.source), luma_frames(street_export.output)
    for before, after in zip(source, output):
        kept_before, kept_after = region(before, scene.kept_face), region(after, scene.kept_face)
        assert np.abs(kept_before.astype(int) - kept_after.astype(int)).mean() < 4  # of 255: encoder noise
        assert detail(kept_after) > 0.8 * detail(kept_before)


def test_the_other_faces_lose_their_detail(street_export: Export):
    scene = street_export.scene
    source, output = bgr_frames(street_export.source), bgr_frames(street_export.output)
    for i, (before, after) in enumerate(zip(source, output)):
        for face in scene.moving_faces[i]:
            eyes_nose_mouth = core(face)
            assert detail(region(after, eyes_nose_mouth)) < 0.1 * detail(region(before, eyes_nose_mouth)), f"frame {i}, face at {face}"


def test_a_manual_box_is_blurred_in_every_frame_it_covers(street_export: Export):
    doc = street_export.scene.document
    source, output = bgr_frames(street_export.source), bgr_frames(street_export.output)
    for before, after in zip(source, output):
        assert detail(region(after, doc)) < 0.05 * detail(region(before, doc))


def test_the_export_is_a_playable_h264_mp4_with_every_source_frame(street_export: Export):
    scene = street_export.scene
    with av.open(str(street_export.output)) as container:
        assert "mp4" in container.format.name
        assert [s.type for s in container.streams] == ["video", "audio"]  # the source's tone is carried
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == scene.fps
        frames = [(f.width, f.height, f.pts) for f in container.decode(stream)]
    assert len(frames) == len(scene.frames)
    assert {(w, h) for w, h, _ in frames} == {(scene.width, scene.height)}
    assert [pts for _, _, pts in frames] == sorted(pts for _, _, pts in frames)


def test_the_export_starts_with_its_index_so_it_plays_while_downloading(street_export: Export):
    head = street_export.output.read_bytes()
    assert 0 <= head.find(b"moov") < head.find(b"mdat")


def test_audio_is_carried_and_the_report_says_nothing_was_marked_in_it(street_export: Export):
    with av.open(str(street_export.source)) as container:
        assert len(container.streams.audio) == 1  # the source had sound
    report = street_export.report
    assert not report.audio_removed and report.audio is not None and report.audio["ranges"] == []
    assert any("audio exported with 0 range(s)" in note for note in report.notes())


def test_the_report_counts_what_was_done_and_serialises_to_json(street_export: Export):
    report, scene = street_export.report, street_export.scene
    doc = json.loads(json.dumps(report.to_dict()))
    assert (doc["width"], doc["height"], doc["fps"], doc["frames"]) == (scene.width, scene.height, scene.fps, len(scene.frames))
    assert doc["frames_with_blur"] == len(scene.frames)  # the document is masked throughout
    assert doc["faces_detected"] >= 3 * doc["frames_examined"] > 0
    assert doc["faces_kept"] == doc["frames_examined"]  # the requester, once per examined frame
    assert doc["keep_boxes_honoured"] == 1 and doc["keep_boxes"][0]["faces_kept"] == doc["faces_kept"]
    assert doc["manual_boxes_applied"] == 1 and doc["manual_boxes"][0]["frames_active"] == len(scene.frames)
    assert doc["regions_blurred"] >= 3 * len(scene.frames)  # two faces and the document in every frame
    per_second = doc["per_second"]
    assert [s["second"] for s in per_second] == [0]
    for key in ("frames", "frames_examined", "faces_detected", "faces_kept", "regions_blurred", "frames_with_blur"):
        assert sum(s[key] for s in per_second) == doc[key]
    assert doc["source_sha256"] == sha256_file(street_export.source)
    assert doc["output_sha256"] == sha256_file(street_export.output)
    assert doc["settings"]["encoder"]["codec"] == "libx264"


def test_a_frame_that_fits_the_detector_is_examined_five_times_a_second_always_at_full_size(street_export: Export):
    """Looks at a quarter of the size between full-size ones found no small face and cut the big ones short,
    so the frames the detector sees whole get full-size looks only, half as often (docs/redaction.md section 2)."""
    doc = street_export.report.to_dict()
    frames = len(street_export.scene.frames)
    assert doc["settings"]["examine_every_frames"] == 6 and doc["settings"]["full_size_every_examined"] == 1
    assert doc["frames_examined"] == len(range(0, frames, 6))
    assert [s["frames_examined"] for s in doc["per_second"]] == [doc["frames_examined"]]


def test_progress_is_reported_after_every_frame_of_both_passes(street_export: Export):
    """Once while faces are found and tracked, once while the frames are written: two steps a frame."""
    calls, frames = street_export.progress, len(street_export.scene.frames)
    assert [done for done, _ in calls] == list(range(1, 2 * frames + 1))
    assert all(total >= done for done, total in calls)
    assert calls[-1] == (2 * frames, 2 * frames)


def test_the_report_lists_every_track_and_the_one_the_keep_box_picked(street_export: Export):
    doc = street_export.report.to_dict()
    tracks = doc["tracks"]
    assert len(tracks) >= 3  # the requester and the two people moving
    (kept,) = [t for t in tracks if t["kept"]]
    assert doc["keep_boxes"][0]["track"] == kept["id"]
    assert KEEP_BOX.contains_point(kept["first_box"]["x"] + kept["first_box"]["w"] / 2, kept["first_box"]["y"] + kept["first_box"]["h"] / 2)
    assert kept["start_s"] == 0.0 and kept["detections"] == doc["frames_examined"]
    assert any(f"track {kept['id']} kept clear" in note for note in doc["notes"])
    assert doc["settings"]["blur"]["method"] == "pixelate" and doc["settings"]["detector"]["smallest_face_px"] == 28
