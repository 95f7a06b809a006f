"""The face detector: the Haar cascades the OpenCV 4 wheel ships, run offline."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from openbwv.server.redact import Box, CascadeUnavailable, FaceDetector

from .footage import astronaut_head, background, paste


def grey(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)


def test_finds_the_astronauts_face_in_the_photograph(detector: FaceDetector):
    faces = detector.detect(grey(data.astronaut()[:, :, ::-1]))
    assert len(faces) == 1
    (face,) = faces
    assert Box(160, 50, 130, 130).contains_point(*face.centre)  # between her hairline and chin
    assert 70 <= face.w <= 130


def test_finds_a_face_turned_the_other_way(detector: FaceDetector):
    mirrored = np.ascontiguousarray(data.astronaut()[:, ::-1, ::-1])
    (face,) = detector.detect(grey(mirrored))
    assert Box(512 - 290, 50, 130, 130).contains_point(*face.centre)


def test_reports_720p_faces_in_source_pixels_though_it_looks_at_a_smaller_copy(detector: FaceDetector):
    frame = background(1280, 720)
    head = paste(frame, astronaut_head(130), 900, 400)
    faces = detector.detect(grey(frame))
    assert len(faces) == 1 and head.contains_point(*faces[0].centre)
    assert 50 <= faces[0].w <= head.w


@pytest.mark.parametrize("photograph", ["coffee", "rocket", "grass"])
def test_finds_nothing_where_there_is_no_face(detector: FaceDetector, photograph: str):
    image = getattr(data, photograph)()
    assert detector.detect(image if image.ndim == 2 else grey(image[:, :, ::-1])) == []


def test_ignores_faces_smaller_than_it_was_asked_to_look_for():
    photo = grey(data.astronaut()[:, :, ::-1])
    assert FaceDetector(min_face=140).detect(photo) == []


def test_says_which_cascade_file_is_missing(tmp_path: Path):
    with pytest.raises(CascadeUnavailable, match=r"haarcascade_frontalface_default\.xml is missing.*opencv-python-headless 4\.x"):
        FaceDetector(cascade_dir=tmp_path)


def test_says_which_cascade_file_is_not_a_cascade(tmp_path: Path):
    for name in ("haarcascade_frontalface_default.xml", "haarcascade_frontalface_alt2.xml", "haarcascade_profileface.xml"):
        (tmp_path / name).write_text("<opencv_storage>not a cascade</opencv_storage>")
    with pytest.raises(CascadeUnavailable, match=r"haarcascade_frontalface_default\.xml did not load"):
        FaceDetector(cascade_dir=tmp_path)


def test_must_look_often_enough_for_the_hold_to_cover_the_frames_between():
    with pytest.raises(ValueError, match="rate_hz=1"):
        FaceDetector(rate_hz=1)


def test_describes_itself_for_the_manifest(detector: FaceDetector):
    settings = detector.settings()
    assert settings["method"] == "opencv-haar" and settings["opencv"] == cv2.__version__
    assert "haarcascade_profileface.xml" in settings["cascades"] and settings["profile_mirrored"]


def test_the_smallest_face_it_can_find_grows_with_the_frame_it_shrinks_for_detection():
    """A 1080p frame is detected at 640 pixels wide: the cascades' 20 px window is 60 source pixels,
    and the manifest must say so rather than claim the configured 40."""
    detector = FaceDetector()
    assert detector.smallest_face(640) == 40 and detector.smallest_face(1280) == 40
    assert detector.smallest_face(1920) == 60
