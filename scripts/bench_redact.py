"""Benchmark: face redaction of a subject-access export, against a plain transcode of the same clip.

Loaded by scripts/bench.py (`--only redact`).
"""

from __future__ import annotations

import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

from bench import REPO, Figure, benchmark, progress

REDACT_SIZE = (1280, 720)
REDACT_FPS = 30
REDACT_SECONDS = 10
REDACT_RUNS = 2  # each side; they take turns T R R T, and each keeps its best
REDACT_SOURCE_BITRATE = 8_000_000  # the camera's default
LABELLED_SECONDS = 10  # the labelled test set of tests/redact/labelled.py, at greater length than the tests use


def _faces_clip(path: Path) -> None:
    """REDACT_SECONDS of 720p MPEG-TS H.264, as a camera would write it, with three real faces moving through it.

    The faces are scikit-image's astronaut photograph (and its mirror image) and
    one of its LFW face crops, over its rocket photograph; the camera's grain
    (a few levels of noise per pixel) keeps the bitrate where a sensor puts it.
    scikit-image is a test dependency, which `make bench` installs.
    """
    import av
    import cv2
    import numpy as np

    try:
        import skimage
        from skimage import data
    except ImportError:
        raise SystemExit("bench: redact needs scikit-image for its face photographs (pip install -e '.[test]')") from None

    w, h = REDACT_SIZE
    back = cv2.resize(np.ascontiguousarray(data.rocket()[:, :, ::-1]), (w, h), interpolation=cv2.INTER_AREA)
    photo = np.ascontiguousarray(data.astronaut()[15:215, 145:310, ::-1])
    near = cv2.resize(photo, (206, 250), interpolation=cv2.INTER_AREA)  # a face about 120 px wide
    far = cv2.flip(cv2.resize(photo, (124, 150), interpolation=cv2.INTER_AREA), 1)  # about 70 px
    lfw = (np.load(Path(skimage.__file__).parent / "data" / "lfw_subset.npy")[2] * 255).astype(np.uint8)
    third = cv2.cvtColor(cv2.resize(lfw, (110, 110), interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2BGR)
    rng = np.random.default_rng(20261125)
    grain = [rng.integers(0, 7, (h, w, 3), dtype=np.uint8) for _ in range(8)]

    frames = REDACT_SECONDS * REDACT_FPS
    with av.open(str(path), "w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=REDACT_FPS)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.bit_rate = REDACT_SOURCE_BITRATE
        stream.options = {"preset": "veryfast", "tune": "zerolatency", "g": str(REDACT_FPS)}
        for i in range(frames):
            frame = back.copy()
            x = 80 + i * (w - 400) // frames
            frame[300:550, x : x + 206] = near
            frame[60:210, w - 200 - i : w - 76 - i] = far
            frame[420:530, 900 + (i % 120) : 1010 + (i % 120)] = third
            frame = cv2.add(frame, grain[i % len(grain)])
            video = av.VideoFrame.from_ndarray(frame, format="bgr24")
            video.pts, video.time_base = i, Fraction(1, REDACT_FPS)
            out.mux(stream.encode(video))
        out.mux(stream.encode(None))


def _transcode(src: Path, dst: Path) -> int:
    """Decode and re-encode with the export's encoder settings and container, nothing else; frames written."""
    import av

    from openbwv.server.redact import OUTPUT_PIX_FMT, X264_OPTIONS

    count = 0
    with av.open(str(src)) as source, av.open(str(dst), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        vstream = source.streams.video[0]
        vstream.thread_type = "AUTO"
        rate = vstream.average_rate
        ostream = out.add_stream("libx264", rate=rate, options=dict(X264_OPTIONS))
        ostream.width, ostream.height, ostream.pix_fmt = vstream.codec_context.width, vstream.codec_context.height, OUTPUT_PIX_FMT
        ostream.codec_context.time_base = 1 / rate
        for frame in source.decode(vstream):
            frame.pts, frame.time_base = count, 1 / rate
            out.mux(ostream.encode(frame))
            count += 1
        out.mux(ostream.encode(None))
    return count


@benchmark(
    "redact",
    redact_fps_720p=Figure(
        "frames/s",
        f"{REDACT_SECONDS} s of {REDACT_SIZE[0]}x{REDACT_SIZE[1]} {REDACT_FPS} fps H.264 (8 Mbit/s MPEG-TS) with three "
        f"moving faces -> redact_video (CenterFace 5 examined frames/s at 1280 wide; tracks; two passes) -> "
        f"libx264 veryfast (me=dia subme=1) crf 20 MP4, best of {REDACT_RUNS}",
        at_least=REDACT_FPS,
    ),
    transcode_fps_720p=Figure("frames/s", "the same clip decoded and re-encoded, same encoder and container, nothing else"),
    redact_vs_transcode=Figure("ratio", "redact_fps_720p / transcode_fps_720p, the two taking turns in the same run"),
    redact_faces_per_examined_frame=Figure("faces", "faces found per examined frame (3 in the clip): the work was real"),
    redact_recall=Figure(
        "share",
        f"labelled set (tests/redact/labelled.py), {LABELLED_SECONDS} s at 720p and at 1080p: ground-truth face boxes "
        ">= 24 px, every output frame, at least 95 % of the box obscured",
        at_least=0.99,
    ),
    redact_recall_720p=Figure("share", "redact_recall, the 720p clip alone"),
    redact_recall_1080p=Figure("share", "redact_recall, the 1080p clip alone"),
    redact_overblur=Figure("share", "of the area obscured on the labelled set (both clips), the share outside every "
                           "ground-truth face box", at_most=0.5),
)
def bench_redact() -> dict[str, float]:
    """Throughput of a face-redacted export at 720p, against a plain transcode of the same file.

    Both sides decode the same camera-like clip with PyAV and encode it with
    the export's libx264 settings into a faststart MP4; the redaction also
    decodes the clip a first time, runs CenterFace on five frames a second
    and links the faces into tracks, then obscures the regions.  Their difference is the price of redaction.  The
    target is real time (30 frames/s): forces export hours of footage per
    request.  Recall and over-blur are measured on the labelled test set the
    tests use, at 720p and 1080p, over every frame of the output.
    """
    from openbwv.server.redact import FaceDetector, redact_video

    with tempfile.TemporaryDirectory(prefix="openbwv-bench-") as tmp:
        directory = Path(tmp)
        src = directory / "faces.ts"
        progress(f"redact: encoding {REDACT_SECONDS} s of {REDACT_SIZE[0]}x{REDACT_SIZE[1]} with faces to {src}")
        _faces_clip(src)
        detector = FaceDetector()
        best = {"transcode": float("inf"), "redact": float("inf")}
        frames = REDACT_SECONDS * REDACT_FPS
        faces_per_examined = 0.0
        order = ["transcode", "redact", "redact", "transcode"] * ((REDACT_RUNS + 1) // 2)
        for turn, side in enumerate(order[: 2 * REDACT_RUNS], 1):
            dst = directory / f"{side}.mp4"
            started = time.perf_counter()
            if side == "transcode":
                written = _transcode(src, dst)
            else:
                report = redact_video(src, dst, detector=detector)
                written = report.frames
                faces_per_examined = report.faces_detected / max(1, report.frames_examined)
            elapsed = time.perf_counter() - started
            if written != frames:
                raise SystemExit(f"bench: {side} wrote {written} frames, expected {frames}")
            dst.unlink()
            best[side] = min(best[side], elapsed)
            extra = f", {faces_per_examined:.2f} faces per examined frame" if side == "redact" else ""
            progress(f"redact: turn {turn}/{2 * REDACT_RUNS}: {side} {frames / elapsed:.1f} fps ({elapsed:.1f} s){extra}")
    if faces_per_examined < 1:
        raise SystemExit(f"bench: redaction found {faces_per_examined:.2f} faces per examined frame; the clip has 3")
    redact_fps = frames / best["redact"]
    transcode_fps = frames / best["transcode"]
    quality = _labelled_scores()
    return {
        **quality,
        "redact_fps_720p": redact_fps,
        "transcode_fps_720p": transcode_fps,
        "redact_vs_transcode": redact_fps / transcode_fps,
        "redact_faces_per_examined_frame": faces_per_examined,
    }


def _labelled_scores() -> dict[str, float]:
    """Recall and over-blur of `redact_video` with its default detector on the labelled set, 720p and 1080p."""
    from openbwv.server.redact import FaceDetector, redact_video

    sys.path.insert(0, str(REPO / "tests" / "redact"))
    import labelled  # the tests' own labelled set, loaded as a plain module

    detector = FaceDetector()
    figures: dict[str, float] = {}
    faces = redacted = blurred = outside = 0
    with tempfile.TemporaryDirectory(prefix="openbwv-bench-") as tmp:
        for name, (w, h) in (("720p", (1280, 720)), ("1080p", (1920, 1080))):
            scene = labelled.street(w, h, seconds=LABELLED_SECONDS)
            src, dst = Path(tmp) / f"labelled-{name}.ts", Path(tmp) / f"labelled-{name}.mp4"
            progress(f"redact: labelled set, {LABELLED_SECONDS} s at {w}x{h}")
            truth = labelled.write_scene(scene, src)
            regions: list = []
            started = time.perf_counter()
            redact_video(src, dst, detector=detector, on_plan=lambda plan: regions.append(plan.blur))
            elapsed = time.perf_counter() - started
            score = labelled.score(w, h, truth, regions)
            misses: dict[int, int] = {}
            for miss in score.misses:
                misses[miss.face.h // 8 * 8] = misses.get(miss.face.h // 8 * 8, 0) + 1
            progress(f"redact: {name}: recall {score.recall:.4f} ({score.redacted}/{score.faces}), over-blur "
                     f"{score.overblur:.3f}, {len(regions) / elapsed:.1f} fps; misses by face height (8 px bins) "
                     f"{dict(sorted(misses.items()))}")
            figures[f"redact_recall_{name}"] = score.recall
            faces, redacted = faces + score.faces, redacted + score.redacted
            blurred, outside = blurred + score.blurred_px, outside + score.outside_px
    figures["redact_recall"] = redacted / faces
    figures["redact_overblur"] = outside / blurred
    return figures
