"""Previewing a subject access export frame by frame, choosing the requester's face and adding boxes.

Before exporting a held clip, a disclosure officer steps through it: each frame is shown as the
export would blur it, with every face the detector finds outlined and numbered.  They pick the
requester's face on a frame (it is left clear: the export follows that face, redact.py), and draw
extra boxes the export must blur whatever the detector says (a face it missed, a screen, a
document, a number plate) over a time range.  Then they export with those choices.

The choices travel in the page's address (``keep`` and ``manual`` query fields, each a list of
numbers), not in server state, so any node of a fleet serves any step and nothing is left behind
if the officer walks away; the export form carries them to the export as the API's ExportBody
(``keep`` and ``manual``: [start_s, end_s, x, y, w, h]).

The frames come from the officer's audited view of the clip (media.view_for: verified, decrypted
once, on the record as a ``decrypt`` with the purpose), under request.export and only for a clip
the request holds.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable
from urllib.parse import urlencode

import numpy as np
from aiohttp import web

from . import media, sar
from .api_models import CLIP_ID_RE
from .errors import BadRequest, Conflict
from .staff_api import check_request_id

MAX_CHOICES = 50  # boxes of each kind one preview carries (ExportBody allows more through the API)
JPEG_QUALITY = 85
KEEP_COLOUR, BLUR_COLOUR, MANUAL_COLOUR = (0, 150, 0), (0, 0, 210), (0, 140, 255)  # BGR: green, red, orange


@dataclass(frozen=True)
class Choice:
    """A staff choice: keep (the requester's face at one moment) or manual (a box blurred over a time range)."""

    start_s: float
    end_s: float
    x: int
    y: int
    w: int
    h: int

    def wire(self) -> list[float]:
        return [self.start_s, self.end_s, self.x, self.y, self.w, self.h]

    def text(self) -> str:
        return ",".join(f"{v:.10g}" for v in self.wire())  # to the microsecond: a keep box made from a track spans a frame

    def covers(self, t: float) -> bool:
        return self.start_s - 1e-6 <= t <= self.end_s + 1e-6

    def box(self):
        from .redact import Box

        return Box(self.x, self.y, self.w, self.h)


def parse_choices(values: Iterable[str], what: str) -> list[Choice]:
    """``start,end,x,y,w,h`` each (a keep box is one moment: start = end), checked in plain words."""
    out = []
    for text in list(values)[: MAX_CHOICES + 1]:
        parts = text.split(",")
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            numbers = []
        if len(numbers) != 6 or not all(math.isfinite(n) for n in numbers):
            raise BadRequest(f"{what} box {text[:60]!r} is not six numbers (from, until, x, y, width, height)")
        t0, t1, x, y, w, h = numbers
        if t0 < 0 or t1 < t0 or w < 1 or h < 1 or x < 0 or y < 0:
            raise BadRequest(f"{what} box {text[:60]!r}: times must run forwards from 0, and the box must have a size")
        out.append(Choice(t0, t1, int(x), int(y), int(w), int(h)))
    if len(out) > MAX_CHOICES:
        raise BadRequest(f"at most {MAX_CHOICES} {what} boxes in one preview")
    return out


def parse_time(text: str | None) -> float:
    if not text:
        return 0.0
    try:
        t = float(text)
    except ValueError:
        raise BadRequest(f"the time {text[:20]!r} is not a number of seconds") from None
    if not math.isfinite(t) or t < 0:
        raise BadRequest("the time must be 0 or more seconds into the clip")
    return t


@dataclass(frozen=True)
class Frame:
    """One decoded frame of the view, and what is known about the video around it."""

    image: np.ndarray  # BGR
    time_s: float  # its presentation time, from the first frame
    frame_s: float  # one frame's duration
    duration_s: float
    width: int
    height: int


def read_frame(path, t: float) -> Frame:
    """The first frame at or after `t` seconds (the last frame if `t` is past the end)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        base = stream.time_base or Fraction(1, 90_000)
        rate = float(stream.average_rate or stream.guessed_rate or 30)
        start = float((stream.start_time or 0) * base)
        duration = float(container.duration / 1_000_000) if container.duration else 0.0
        container.seek(int((start + max(0.0, t - 1.0)) / base), stream=stream, backward=True, any_frame=False)
        chosen = None
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            chosen = frame
            if float(frame.pts * base) - start >= t - 0.5 / rate:
                break
        if chosen is None:
            raise BadRequest("the clip has no picture to show at that time")
        return Frame(image=chosen.to_ndarray(format="bgr24"), time_s=max(0.0, float(chosen.pts * base) - start),
                     frame_s=1.0 / rate, duration_s=duration, width=chosen.width, height=chosen.height)


def faces_in(frame: Frame):
    """The faces the export's detector finds on the frame, numbered as a person reads: top to bottom in
    bands, then left to right."""
    from .redact import FaceDetector

    band = max(1, frame.height // 4)
    return sorted(FaceDetector().detect(frame.image), key=lambda b: (b.y // band, b.x))


def kept(face, keep: list[Choice], t: float) -> bool:
    """A face chosen as the requester's on this frame: its centre inside a keep box of this moment."""
    cx, cy = face.centre
    return any(c.covers(t) and c.box().contains_point(cx, cy) for c in keep)


def preview_image(frame: Frame, faces, keep: list[Choice], manual: list[Choice]) -> bytes:
    """The frame as the export blurs it (faces not kept, staff boxes), each box outlined and numbered."""
    import cv2

    from .redact import obscure

    image = frame.image.copy()
    t = frame.time_s
    blurred = [f for f in faces if not kept(f, keep, t)] + [m.box() for m in manual if m.covers(t)]
    for box in blurred:
        clipped = box.clipped(frame.width, frame.height)
        if clipped is not None:
            for channel in range(3):
                plane = np.ascontiguousarray(image[:, :, channel])
                obscure(plane, clipped)
                image[:, :, channel] = plane
    thick = max(2, frame.width // 400)
    for n, face in enumerate(faces, 1):
        colour = KEEP_COLOUR if kept(face, keep, t) else BLUR_COLOUR
        cv2.rectangle(image, (face.x, face.y), (face.right, face.bottom), colour, thick)
        cv2.putText(image, str(n), (face.x + 3, max(14, face.y - 6)), cv2.FONT_HERSHEY_SIMPLEX,
                    max(0.5, frame.width / 1600), colour, thick)
    for m in manual:
        if m.covers(t):
            cv2.rectangle(image, (m.x, m.y), (m.x + m.w, m.y + m.h), MANUAL_COLOUR, thick)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("the preview frame could not be encoded")
    return jpeg.tobytes()


def where(face, width: int, height: int) -> str:
    """A face's place in words, for people who cannot see the picture."""
    cx, cy = face.centre
    across = "left" if cx < width / 3 else "right" if cx > 2 * width / 3 else "centre"
    down = "top" if cy < height / 3 else "bottom" if cy > 2 * height / 3 else "middle"
    return f"{down} {across}, {face.w}×{face.h} pixels"


# --------------------------------------------------------------------------- pages
def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/requests/{request_id}/clips/{clip_id}/preview", preview_page)
    router.add_get("/requests/{request_id}/clips/{clip_id}/preview/frame.jpg", preview_frame)


def _kit():
    from .ui import pagekit

    return pagekit


async def held_clip(request: web.Request) -> tuple[str, str]:
    """The request and clip of the page's address, once the clip is known to be held for that request
    (the page's permission, request.export, is checked by the page kit before the handler runs)."""
    ui = _kit().state(request)
    request_id = check_request_id(request.match_info["request_id"])
    clip_id = request.match_info["clip_id"]
    if not CLIP_ID_RE.match(clip_id):
        raise BadRequest(f"clip id {clip_id[:80]!r} is not a clip id")

    def held() -> list[str]:
        return sar.request(ui.service.db.reader(), request_id)["held_clips"]
    if clip_id not in await asyncio.to_thread(held):
        raise Conflict(f"clip {clip_id} is not held for {request_id}: hold it first, from the request's page")
    return request_id, clip_id


async def held_view(request: web.Request, *, what: str = "redaction preview") -> tuple[str, str, media.View]:
    """`held_clip`, and the officer's audited view of it (media.view_for), ready to read frames from."""
    kit = _kit()
    ui, p = kit.state(request), kit.who(request)
    request_id, clip_id = await held_clip(request)
    view = await media.view_for(ui.service, clip_id, p, via=f"web: {what} for {request_id}")
    return request_id, clip_id, view



def _choices(request: web.Request) -> tuple[list[Choice], list[Choice]]:
    q = request.query
    return parse_choices(q.getall("keep", []), "keep"), parse_choices(q.getall("manual", []), "manual")


def _address(base: str, t: float, keep: list[Choice], manual: list[Choice]) -> str:
    fields = [("t", f"{t:.3f}")] + [("keep", c.text()) for c in keep] + [("manual", c.text()) for c in manual]
    return f"{base}?{urlencode(fields)}"


def _faces_address(preview_base: str, keep: list[Choice], manual: list[Choice]) -> str:
    """The clip's faces page (ui_pages_faces.py), with the same choices."""
    fields = [("keep", c.text()) for c in keep] + [("manual", c.text()) for c in manual]
    base = preview_base.removesuffix("/preview") + "/faces"
    return f"{base}?{urlencode(fields)}" if fields else base


async def preview_page(request: web.Request) -> web.Response:
    kit = _kit()
    request_id, clip_id, view = await held_view(request)
    keep, manual = _choices(request)
    t = parse_time(request.query.get("t"))
    q = request.query
    if "add_w" in q:  # the "add a box" form: its fields become one more manual box, then the page's own address
        try:
            added = Choice(float(q.get("add_from", "")), float(q.get("add_to", "")), int(q.get("add_x", "")),
                           int(q.get("add_y", "")), int(q.get("add_w", "")), int(q.get("add_h", "")))
        except ValueError:
            raise BadRequest("give the box as whole pixels (left, top, width, height) and its times in seconds") from None
        manual = manual + parse_choices([added.text()], "manual")
        raise web.HTTPSeeOther(_address(f"/ui/requests/{request_id}/clips/{clip_id}/preview", t, keep, manual))
    frame = await asyncio.to_thread(read_frame, view.path, t)
    faces = await asyncio.to_thread(faces_in, frame)
    base = f"/ui/requests/{request_id}/clips/{clip_id}/preview"
    here = frame.time_s

    def at(seconds: float, *, k: list[Choice] = keep, m: list[Choice] = manual) -> str:
        return _address(base, max(0.0, min(seconds, frame.duration_s or seconds)), k, m)
    face_rows = []
    for n, face in enumerate(faces, 1):
        chosen = kept(face, keep, here)
        face_rows.append({"n": n, "where": where(face, frame.width, frame.height), "kept": chosen,
                          "keep_url": None if chosen else at(here, k=keep + [Choice(here, here, face.x, face.y,
                                                                                     face.w, face.h)])})
    keep_rows = [{"choice": c, "remove_url": at(here, k=[x for x in keep if x != c])} for c in keep]
    manual_rows = [{"choice": c, "remove_url": at(here, m=[x for x in manual if x != c])} for c in manual]
    return kit.render(
        request, "redaction_preview.html", title=f"Redaction preview: clip {clip_id[:8]}", request_id=request_id,
        clip_id=clip_id, frame=frame, faces=face_rows, keep=keep_rows, manual=manual_rows,
        image_url=_address(base + "/frame.jpg", here, keep, manual),
        steps={"back_second": at(here - 1), "back_frame": at(here - frame.frame_s),
               "forward_frame": at(here + frame.frame_s), "forward_second": at(here + 1)},
        base=base, faces_url=_faces_address(base, keep, manual), keep_texts=[c.text() for c in keep], manual_texts=[c.text() for c in manual],
        export_keep=[c.wire() for c in keep], export_manual=[c.wire() for c in manual])


async def preview_frame(request: web.Request) -> web.Response:
    _request_id, _clip_id, view = await held_view(request)
    keep, manual = _choices(request)
    t = parse_time(request.query.get("t"))

    def draw() -> bytes:
        frame = read_frame(view.path, t)
        return preview_image(frame, faces_in(frame), keep, manual)
    body = await asyncio.to_thread(draw)
    return web.Response(body=body, content_type="image/jpeg", headers={"Cache-Control": "no-store"})


preview_page.ui_permission = preview_frame.ui_permission = "request.export"  # type: ignore[attr-defined]

__all__ = ["Choice", "Frame", "add_routes", "held_clip", "held_view", "parse_choices", "preview_image", "read_frame",
           "where"]
