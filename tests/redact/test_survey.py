"""The survey of a clip's faces (redact_survey.py): the export's own tracks, shown before the export.

* the survey finds exactly the tracks the export's report lists, on the same clip: the street scene
  (three people) and the labelled street (nine faces, moving, turning, behind poles);
* a face picked from the survey becomes a keep box that the export maps back to that very track, and
  the export then keeps that track clear for its whole length and blurs every other;
* a survey is kept by what the clip is and how it was surveyed, and read back the same.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from openbwv.server.redact import FaceDetector, TimedBox, pick_tracks, redact_video
from openbwv.server.redact_survey import (NoSuchFace, Survey, SurveyStore, best_observation, decoded_luma,
                                          drop_clip_surveys, examine_schedule, face_crop, frames_on_screen,
                                          keep_box_for, mm_ss, survey_frames, survey_key, survey_video,
                                          surveys_root)

from . import labelled
from .conftest import Export
from .footage import street_scene, write_h264

CLIP = "0b2f6c1e-3a5d-4e7f-9a1b-2c3d4e5f6a7b"


def report_tracks(report) -> list[dict]:
    return [{k: v for k, v in t.items() if k != "kept"} for t in report.tracks]


@pytest.fixture(scope="module")
def street_survey(street_export: Export, detector: FaceDetector) -> Survey:
    return survey_video(street_export.source, detector=detector)


def test_the_survey_finds_the_very_tracks_the_export_reports(street_export: Export, street_survey: Survey):
    assert len(street_survey.tracks) >= 3  # the requester and the two people passing
    assert street_survey.report_tracks() == report_tracks(street_export.report)
    settings = street_export.report.settings
    assert (street_survey.every, street_survey.between) == (settings["examine_every_frames"],
                                                            settings["full_size_every_examined"])
    assert street_survey.frames == street_export.report.frames


def test_on_the_labelled_street_of_nine_faces_too(tmp_path: Path, detector: FaceDetector):
    scene = labelled.street(width=640, height=360, seconds=2.0)
    source = tmp_path / "street.ts"
    labelled.write_scene(scene, source)
    survey = survey_video(source, detector=detector)
    report = redact_video(source, tmp_path / "out.mp4", detector=detector)
    assert len(survey.tracks) >= 5
    assert survey.report_tracks() == report_tracks(report)


def test_the_pure_pass_over_frames_in_memory_is_the_pass_over_the_file(street_export: Export, street_survey: Survey,
                                                                       detector: FaceDetector):
    info, frames = decoded_luma(street_export.source)
    in_memory = list(frames)
    seen: list[int] = []
    again = survey_frames(in_memory, width=info.width, height=info.height, fps=info.fps, detector=detector,
                          progress=seen.append)
    assert again.report_tracks() == street_survey.report_tracks()
    assert seen == list(range(1, len(in_memory) + 1))


def test_the_schedule_is_the_exports(detector: FaceDetector):
    every, between = examine_schedule(detector, 30.0, 480)
    assert every >= 1 and between >= 1
    assert examine_schedule(FaceDetector(rate_hz=None, full_every=1), 30.0, 480) == (1, 1)


def test_a_face_picked_from_the_survey_is_kept_clear_for_its_whole_length_and_the_others_blurred(
        tmp_path: Path, street_export: Export, street_survey: Survey, detector: FaceDetector):
    moving = street_export.scene.moving_faces
    passer = next(t for t in street_survey.tracks
                  if t.first.index == 0 and moving[0][0].contains_point(*t.first.box.centre))
    keep = keep_box_for(street_survey, passer.id)
    assert pick_tracks([keep], street_survey.tracks) == [passer.id]
    assert keep.end_s - keep.start_s < 1 / street_survey.fps  # one moment, not a range another face could cross
    report = redact_video(street_export.source, tmp_path / "kept.mp4", keep=[keep], detector=detector)
    assert [t["id"] for t in report.tracks if t["kept"]] == [passer.id]
    assert report.keep[0].track == passer.id
    assert report.keep[0].frames_active == frames_on_screen(passer)
    assert all(t["id"] == passer.id or not t["kept"] for t in report.tracks)


def test_every_track_has_a_keep_box_that_picks_it_alone(street_survey: Survey):
    for track in street_survey.tracks:
        assert pick_tracks([keep_box_for(street_survey, track.id)], street_survey.tracks) == [track.id]


def test_faces_are_numbered_from_one_and_a_number_it_does_not_have_is_refused_in_words(street_survey: Survey):
    assert street_survey.track(1) is street_survey.tracks[0]
    with pytest.raises(NoSuchFace, match=f"no face {len(street_survey.tracks) + 1}: the survey found faces 1 to"):
        street_survey.track(len(street_survey.tracks) + 1)
    with pytest.raises(NoSuchFace):
        street_survey.track(0)


def test_a_survey_is_kept_by_the_clip_and_the_detector_and_read_back_the_same(tmp_path: Path, street_survey: Survey):
    store = SurveyStore(surveys_root(tmp_path))
    key = survey_key(["aa" * 32, "bb" * 32], street_survey.detector)
    assert store.load(CLIP, key) is None
    store.save(CLIP, key, street_survey)
    back = store.load(CLIP, key)
    assert back is not None and back.report_tracks() == street_survey.report_tracks()
    assert [t.observations for t in back.tracks] == [t.observations for t in street_survey.tracks]
    other_detector = survey_key(["aa" * 32, "bb" * 32], street_survey.detector | {"threshold": 0.5})
    other_clip = survey_key(["aa" * 32], street_survey.detector)
    assert len({key, other_detector, other_clip}) == 3 and store.load(CLIP, other_detector) is None
    assert drop_clip_surveys(tmp_path, CLIP) == 1 and store.load(CLIP, key) is None  # the sweep's call
    assert drop_clip_surveys(tmp_path, CLIP) == 0


def test_a_thumbnail_is_the_face_with_some_room_around_it(street_export: Export, street_survey: Survey):
    from .footage import bgr_frames

    track = street_survey.tracks[0]
    best = best_observation(track)
    frame = bgr_frames(street_export.source)[best.index]
    crop = face_crop(frame, best.box)
    assert max(crop.shape[:2]) == 128 and crop.shape[2] == 3


def test_times_read_as_a_player_shows_them():
    assert [mm_ss(s) for s in (0, 4.2, 19.99, 75, 3723)] == ["00:00", "00:04", "00:19", "01:15", "1:02:03"]


def test_a_clip_with_no_frames_is_refused(tmp_path: Path, detector: FaceDetector):
    with pytest.raises(Exception, match="no frame"):
        survey_frames([], width=96, height=64, fps=30.0, detector=detector)
    small = street_scene(frames=3)
    path = tmp_path / "three.ts"
    write_h264(path, small.frames)
    assert survey_video(path, detector=detector).frames == 3


def test_surveys_on_one_node_take_turns_and_each_is_kept(tmp_path: Path, street_export: Export):
    # The detector already uses every core: a second survey at once would only halve both, so it waits.
    import threading

    from openbwv.server.ui_pages_faces import SurveyJobs

    from kit import wait_for

    store, jobs, gate = SurveyStore(tmp_path / "surveys"), SurveyJobs(max_running=1), threading.Event()

    def first_view() -> Path:  # the first officer's view is still being decrypted
        gate.wait(60)
        return street_export.source
    clip_a, clip_b, key = "0" * 8 + "-0000-4000-8000-" + "0" * 12, "1" * 8 + "-1111-4111-8111-" + "1" * 12, "a" * 64
    first = jobs.start(store, clip_a, key, first_view)
    wait_for(lambda: not first.waiting)
    second = jobs.start(store, clip_b, key, lambda: street_export.source)
    assert second.waiting and second.to_dict()["waiting"] and second.frames == 0
    gate.set()
    wait_for(lambda: first.done and second.done, timeout=120)
    assert (first.error, second.error) == (None, None)
    assert not second.to_dict()["waiting"]
    assert store.load(clip_a, key).report_tracks() == store.load(clip_b, key).report_tracks() != []
    with pytest.raises(ValueError, match="at least one survey"):
        SurveyJobs(max_running=0)
