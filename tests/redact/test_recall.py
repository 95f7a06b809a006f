"""Recall and over-blur on the labelled test set: every frame of the output against the known face boxes.

Recall is held to the target of docs/redaction.md (0.99; on these clips
1.000 at 720p and 0.995 at 1080p on 2026-12-07).  Over-blur is held to what
the pipeline honestly reaches today (0.58 and 0.57 here: these short clips
are a larger share lead-in and lead-out than the bench's 10 s ones, which
reach 0.50; the target is 0.5).  `make bench` measures the same set at
greater length (redact_recall, redact_overblur).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from openbwv.server.redact import LEAD_S, Box, FaceDetector, redact_video

from . import labelled
from .footage import bgr_frames, detail, region

RECALL_FLOOR = 0.99  # the target: a face left partly clear is a disclosure
OVERBLUR_CEILING = 0.62  # the margins that recall needs (detector boxes are smaller than faces) cost this much today


@dataclass(frozen=True)
class Measured:
    scene: labelled.Scene
    source: Path
    output: Path
    truth: list[list[Box]]
    regions: list[tuple[Box, ...]]
    score: labelled.Score


def _measure(directory: Path, scene: labelled.Scene, detector: FaceDetector) -> Measured:
    source, output = directory / "scene.ts", directory / "scene.mp4"
    truth = labelled.write_scene(scene, source)
    regions: list[tuple[Box, ...]] = []
    redact_video(source, output, detector=detector, on_plan=lambda plan: regions.append(plan.blur))
    return Measured(scene, source, output, truth, regions, labelled.score(scene.width, scene.height, truth, regions))


@pytest.fixture(scope="module")
def at_720p(tmp_path_factory: pytest.TempPathFactory, detector: FaceDetector) -> Measured:
    return _measure(tmp_path_factory.mktemp("labelled720"), labelled.street(1280, 720, seconds=3.0), detector)


@pytest.fixture(scope="module")
def at_1080p(tmp_path_factory: pytest.TempPathFactory, detector: FaceDetector) -> Measured:
    return _measure(tmp_path_factory.mktemp("labelled1080"), labelled.street(1920, 1080, seconds=2.0), detector)


def test_the_labelled_set_has_what_the_issue_asks_for():
    """Several faces from 24 to 300 px, moving, turned, tilted, behind a pole, in changing light, and
    frames with no face at all; known boxes on every frame."""
    scene = labelled.street(1280, 720, seconds=3.0)
    heights, counts = [], []
    for _, boxes, _ in labelled.render(scene):
        counts.append(len(boxes))
        heights.extend(b.h for b in boxes)
    assert counts[0] == 0 and counts[-1] == 0 and max(counts) >= 8
    assert min(heights) <= 25 and max(heights) >= 250
    assert any(a.yaw(t) >= 40 for a in scene.actors for t in np.linspace(0, scene.seconds, 30))
    assert scene.poles and scene.light(0) != scene.light(scene.seconds / 4)


@pytest.mark.parametrize("name", ["at_720p", "at_1080p"])
def test_recall_on_every_frame_of_the_output(name: str, request: pytest.FixtureRequest):
    measured: Measured = request.getfixturevalue(name)
    score = measured.score
    assert score.faces > 150  # ground-truth boxes of at least 24 px, over every frame
    misses = [(m.frame, m.face.to_dict(), round(m.covered, 2)) for m in score.misses[:10]]
    assert score.recall >= RECALL_FLOOR, f"recall {score.recall:.3f}; first misses {misses}"


@pytest.mark.parametrize("name", ["at_720p", "at_1080p"])
def test_over_blur_stays_under_todays_ceiling(name: str, request: pytest.FixtureRequest):
    score = request.getfixturevalue(name).score
    assert 0 < score.overblur <= OVERBLUR_CEILING


def test_nothing_is_blurred_on_frames_further_than_the_hold_from_any_face(at_720p: Measured):
    fps, truth = at_720p.scene.fps, at_720p.truth
    with_faces = [i for i, boxes in enumerate(truth) if boxes]
    far = [i for i in range(len(truth)) if min(abs(i - j) for j in with_faces) / fps > LEAD_S]
    assert far  # the clip opens and closes without faces
    assert all(at_720p.regions[i] == () for i in far)


def test_what_the_plan_obscures_really_loses_its_detail_in_the_output(at_720p: Measured):
    """The measurement reads the plan; this checks the plan against the pixels of the written file."""
    source, output = bgr_frames(at_720p.source), bgr_frames(at_720p.output)
    checked = 0
    for i in range(0, len(source), 10):
        for face in at_720p.truth[i]:
            if face.h >= 40 and any(r.intersection(face) == face.area for r in at_720p.regions[i]):
                assert detail(region(output[i], face)) < 0.25 * detail(region(source[i], face)), f"frame {i}, face {face}"
                checked += 1
    assert checked >= 20
