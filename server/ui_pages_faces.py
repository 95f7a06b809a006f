"""The faces in a held clip, one per person as the export follows them: staff pick the requester's.

The redaction preview (ui_pages_redaction.py) shows one frame at a time.  This page shows the whole
clip's faces: the export's own tracks (redact_survey.py), each with a thumbnail cut around its
clearest detection, when it appears and disappears, and for how many frames.  "Keep this face
clear: it is the requester" turns a track into the export's keep choice (`keep_box_for`: a box at
one of its detections that the export maps back to that very track, so it stays clear for its whole
length); "Blur it again" takes that choice away.

Finding the tracks (the *survey*) takes as long as the export's first pass, so it runs in a thread
of this process (`SurveyJobs`), and the page shows its progress: a progress bar the page's script
refreshes every second, or, without JavaScript, the page reloading itself every few seconds.  The
finished survey is kept (redact_survey.SurveyStore: where and why), and read only after the same
checks as the preview: permission request.export, and the clip held for the request in the address.
The choices travel in the page's address, as the preview's do (``keep`` and ``manual``), and the
export form carries them to the export; the frames and thumbnails come from the officer's audited
view (media.view_for), so the survey's decrypt is on the audit trail like the preview's.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable
from urllib.parse import urlencode

from aiohttp import web

from . import lifecycle, media
from .errors import BadRequest, NotFound, ServerError
from .ui_pages_redaction import Choice, held_clip, held_view, parse_choices, read_frame, where

if TYPE_CHECKING:
    from .redact import TimedBox
    from .redact_survey import Survey, SurveyStore

JPEG_QUALITY = 85
THUMBNAIL_PX = 128
NO_SCRIPT_REFRESH_S = 5


@dataclass
class SurveyJob:
    """One survey running (or just ended) in this process, as its page reports it."""

    clip_id: str
    key: str
    id: str = field(default_factory=lambda: secrets.token_urlsafe(8))
    started: float = field(default_factory=time.monotonic)
    frames: int = 0
    total_frames: int = 0
    waiting: bool = True  # for another survey on this node to end (SurveyJobs.MAX_RUNNING)
    done: bool = False
    error: str | None = None

    @property
    def percent(self) -> int:
        if self.done:
            return 100
        return min(99, int(100 * self.frames / self.total_frames)) if self.total_frames else 0

    @property
    def said(self) -> str:
        """The progress in a sentence: the page shows it, and job-progress.js puts it there as it changes."""
        if self.waiting and not self.done:
            return "Waiting for the faces of another clip to be found first: one clip at a time."
        return f"{self.percent}% done."

    def to_dict(self) -> dict:
        return {"percent": self.percent, "done": self.done, "error": self.error, "frames": self.frames,
                "total_frames": self.total_frames, "waiting": self.waiting and not self.done, "said": self.said}


class SurveyJobs:
    """The surveys this process is running, one per clip and key whoever asked; forgotten an hour after
    they end (a finished survey is in the store by then, a failed one is asked for again).

    At most `MAX_RUNNING` run at once and the rest wait their turn, in the order asked: the detector
    already spreads one survey over the node's cores, so a second at the same time would only halve
    both, and ten officers each surveying a long clip would otherwise take the node from the docks'
    uploads and everyone's pages."""

    KEEP_S = 3600.0
    MAX_RUNNING = 1

    def __init__(self, max_running: int = MAX_RUNNING) -> None:
        if max_running < 1:
            raise ValueError(f"max_running={max_running}: at least one survey must be able to run")
        self._jobs: dict[tuple[str, str], SurveyJob] = {}
        self._lock = threading.Lock()
        self._turns = threading.Semaphore(max_running)

    def get(self, clip_id: str, key: str) -> SurveyJob | None:
        with self._lock:
            return self._jobs.get((clip_id, key))

    def start(self, store: "SurveyStore", clip_id: str, key: str, video: Callable[[], Path]) -> SurveyJob:
        """Survey the video `video()` gives (blocking: the officer's view of the clip, once it is ready)
        into `store`, unless a survey of it is under way."""
        from . import redact_survey

        with self._lock:
            self._forget_old()
            job = self._jobs.get((clip_id, key))
            if job is not None and not (job.done and job.error):
                return job
            job = self._jobs[(clip_id, key)] = SurveyJob(clip_id, key)

        def progress(frames: int, total: int) -> None:
            job.frames, job.total_frames = frames, total

        def run() -> None:
            try:
                with self._turns:
                    job.waiting = False
                    store.save(clip_id, key, redact_survey.survey_video(video(), progress=progress))
            except ServerError as e:
                job.error = e.reason
            except Exception as e:  # shown on the page, with a button to try again
                job.error = f"the faces could not be found: {e}"[:500]
            finally:
                job.done = True
        threading.Thread(target=run, name=f"survey-{clip_id[:8]}", daemon=True).start()
        return job

    def _forget_old(self) -> None:
        now = time.monotonic()
        for k in [k for k, j in self._jobs.items() if j.done and now - j.started > self.KEEP_S]:
            del self._jobs[k]


_settings_lock = threading.Lock()
_detector_settings: dict | None = None


def detector_settings() -> dict:
    """The export's detector's settings (redact_video makes a FaceDetector() with its defaults): part of a
    survey's key.  Made once per process: building a detector reads and checks the model file."""
    global _detector_settings
    with _settings_lock:
        if _detector_settings is None:
            from .redact import FaceDetector

            _detector_settings = FaceDetector().settings()
        return _detector_settings


# --------------------------------------------------------------------------- pages
def add_routes(router: web.UrlDispatcher) -> None:
    base = "/requests/{request_id}/clips/{clip_id}/faces"
    router.add_get(base, faces_page)
    router.add_post(base, start_survey)
    router.add_get(base + "/progress", survey_progress)
    router.add_get(base + "/{face}/thumbnail.jpg", thumbnail)


def _kit():
    from .ui import pagekit

    return pagekit


def _jobs(request: web.Request) -> SurveyJobs:
    return _kit().state(request).extra.setdefault("survey_jobs", SurveyJobs())


def _store(request: web.Request) -> "SurveyStore":
    from . import redact_survey

    return redact_survey.SurveyStore(redact_survey.surveys_root(_kit().state(request).service.db.local_dir))


async def _key(request: web.Request, clip_id: str) -> str:
    from . import redact_survey

    ui = _kit().state(request)
    hashes = await asyncio.to_thread(lambda: lifecycle.segment_hashes(ui.service.db.reader(), clip_id))
    settings = await asyncio.to_thread(detector_settings)
    return redact_survey.survey_key(hashes, settings)


def _choices(source) -> tuple[list[Choice], list[Choice]]:  # the query, or a posted form
    """The keep and manual choices the address or form carries (the preview's fields)."""
    return (parse_choices([str(v) for v in source.getall("keep", [])], "keep"),
            parse_choices([str(v) for v in source.getall("manual", [])], "manual"))


def _address(base: str, keep: list[Choice], manual: list[Choice], **extra: str) -> str:
    fields = list(extra.items()) + [("keep", c.text()) for c in keep] + [("manual", c.text()) for c in manual]
    return f"{base}?{urlencode(fields)}" if fields else base


def face_number(text: str | None) -> int:
    """A face number from the address: a whole number from 1, in plain words if it is not one."""
    if text is None or not text.isdigit() or not 1 <= int(text) <= 100_000:
        raise BadRequest(f"face {str(text)[:20]!r} is not a face number (1, 2, 3 ... as the list shows them)")
    return int(text)


def _timed(c: Choice) -> "TimedBox":
    from .redact import Box, TimedBox

    return TimedBox(c.start_s, c.end_s, Box(c.x, c.y, c.w, c.h))


async def _survey(request: web.Request, clip_id: str) -> tuple[str, "Survey | None"]:
    """The survey's key for this clip, and the survey if this node has it."""
    key = await _key(request, clip_id)
    return key, await asyncio.to_thread(_store(request).load, clip_id, key)


async def faces_page(request: web.Request) -> web.Response:
    from . import redact_survey as rs

    kit = _kit()
    request_id, clip_id = await held_clip(request)
    keep, manual = _choices(request.query)
    base = f"/ui/requests/{request_id}/clips/{clip_id}/faces"
    preview = f"/ui/requests/{request_id}/clips/{clip_id}/preview"
    key, survey = await _survey(request, clip_id)
    context = dict(request_id=request_id, clip_id=clip_id, base=base, keep_texts=[c.text() for c in keep],
                   manual_texts=[c.text() for c in manual], preview_url=_address(preview, keep, manual),
                   survey=survey, job=None, faces=[], choices=[], refresh_s=NO_SCRIPT_REFRESH_S)
    title = f"Faces in clip {clip_id[:8]}"
    if survey is None:
        job = _jobs(request).get(clip_id, key)
        context["job"] = job
        return kit.render(request, "faces.html", title=title, **context)

    q = request.query
    if "keep_face" in q or "blur_face" in q:  # a button: the choice changes, then the page's own address
        n = face_number(q.get("keep_face", q.get("blur_face")))
        try:
            track = survey.track(n)
        except rs.NoSuchFace as e:
            raise NotFound(str(e)) from None
        picks = rs.kept_tracks(survey, [_timed(c) for c in keep])
        if "keep_face" in q:
            if track.id not in picks:
                box = rs.keep_box_for(survey, track.id)
                keep = keep + [Choice(box.start_s, box.end_s, box.box.x, box.box.y, box.box.w, box.box.h)]
        else:
            keep = [c for c, pick in zip(keep, picks) if pick != track.id]
        raise web.HTTPSeeOther(_address(base, keep, manual) + f"#face-{n}")

    picks = rs.kept_tracks(survey, [_timed(c) for c in keep])
    kept = {p for p in picks if p is not None}
    faces = []
    for track in survey.tracks:
        n = track.id + 1
        best = rs.best_observation(track)
        faces.append({
            "n": n, "kept": track.id in kept, "start": rs.mm_ss(track.first.time_s), "end": rs.mm_ss(track.last.time_s),
            "frames": rs.frames_on_screen(track), "start_s": track.first.time_s,
            "thumbnail": f"{base}/{n}/thumbnail.jpg",
            "alt": f"Face {n} at {rs.mm_ss(best.time_s)}, its clearest moment: "
                   f"{where(best.box, survey.width, survey.height)}",
            "where": where(track.first.box, survey.width, survey.height),
            "preview_url": _address(preview, keep, manual, t=f"{track.first.time_s:.3f}"),
            "last_url": _address(preview, keep, manual, t=f"{track.last.time_s:.3f}"),
        })
    choices = [{"choice": c, "face": None if pick is None else pick + 1} for c, pick in zip(keep, picks)]
    context |= {"faces": faces, "choices": choices, "duration": rs.mm_ss(survey.duration_s)}
    return kit.render(request, "faces.html", title=title, **context)


async def start_survey(request: web.Request) -> web.Response:
    """Start finding the faces; the page shows the progress at once, while the clip is still being decrypted
    into the officer's view (the survey waits for the view to be whole)."""
    kit = _kit()
    ui, p = kit.state(request), kit.who(request)
    request_id, clip_id = await held_clip(request)
    keep, manual = _choices(request["form"])
    key = await _key(request, clip_id)
    if await asyncio.to_thread(_store(request).load, clip_id, key) is None:
        view = await media.view_for(ui.service, clip_id, p, via=f"web: face survey for {request_id}", ready=False)
        _jobs(request).start(_store(request), clip_id, key, lambda: media.wait_ready(ui.service, view).path)
    raise web.HTTPSeeOther(_address(f"/ui/requests/{request_id}/clips/{clip_id}/faces", keep, manual))


async def survey_progress(request: web.Request) -> web.Response:
    _request_id, clip_id = await held_clip(request)
    key, survey = await _survey(request, clip_id)
    job = _jobs(request).get(clip_id, key)
    if survey is not None:
        doc = {"percent": 100, "done": True, "error": None, "said": "100% done."}
    elif job is None:
        raise NotFound("no survey of this clip is running here: start one from the faces page")
    else:
        doc = job.to_dict()
    return web.json_response(doc, headers={"Cache-Control": "no-store"})


async def thumbnail(request: web.Request) -> web.Response:
    """The face's clearest detection, cut from the officer's own audited view of the clip."""
    from . import redact_survey as rs

    n = face_number(request.match_info["face"])
    _request_id, clip_id = await held_clip(request)
    _key_, survey = await _survey(request, clip_id)
    if survey is None:
        raise NotFound("the faces of this clip have not been found yet: start the survey from the faces page")
    try:
        track = survey.track(n)
    except rs.NoSuchFace as e:
        raise NotFound(str(e)) from None
    _r, _c, view = await held_view(request, what="face survey")
    best = rs.best_observation(track)

    def cut() -> bytes:
        import cv2

        frame = read_frame(view.path, best.time_s)
        ok, jpeg = cv2.imencode(".jpg", rs.face_crop(frame.image, best.box, size=THUMBNAIL_PX),
                                [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError("the thumbnail could not be encoded")
        return jpeg.tobytes()
    return web.Response(body=await asyncio.to_thread(cut), content_type="image/jpeg",
                        headers={"Cache-Control": "no-store"})


for _handler in (faces_page, start_survey, survey_progress, thumbnail):
    _handler.ui_permission = "request.export"  # type: ignore[attr-defined]

__all__ = ["SurveyJob", "SurveyJobs", "add_routes", "detector_settings", "face_number"]
