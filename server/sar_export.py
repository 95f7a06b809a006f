"""Disclosure for a subject access request: decrypt, redact, write, and say exactly what was done.

An export takes clips held for an open request, verifies and decrypts each
(opener.py: the same checks as `bwv verify`), blurs every face except the
ones staff marked as the requester's (redact.py), and writes into
``BWV_HOME/server/exports/<request>/<n>/``:

* ``<clip_id>.mp4``: the redacted, playable video;
* ``manifest.json``: for every clip, the hashes of the sealed originals and of
  the decrypted media, the hash of the redacted output, what was redacted
  (faces found, boxes kept and added by staff, per second), who exported it
  and when; the manifest is signed by the server key (``manifest.sig``,
  Ed25519 over the manifest's bytes) so the disclosure can be proven later.

The unredacted decrypted media never leaves a scratch directory that is
removed when the export ends, whatever happens.  Each clip's decryption and
key use, and the export itself, are audited; the export is recorded against
the request.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..sealed.durable import atomic_write, fsync_dir
from . import audit, redact
from .audit_time import segments_detail
from .errors import BadRequest, Conflict, NotFound
from .staff_api import check_clip_id, check_request_id, now_iso

MAX_CLIPS = 200


def _boxes(doc: Any, what: str) -> dict[str, list[redact.TimedBox]]:
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise BadRequest(f"{what} must be an object of clip id -> [[start_s, end_s, x, y, w, h], ...]")
    out: dict[str, list[redact.TimedBox]] = {}
    for clip_id, boxes in doc.items():
        check_clip_id(clip_id)
        if not isinstance(boxes, list) or len(boxes) > 1000:
            raise BadRequest(f"{what} of clip {clip_id} must be a list of at most 1000 boxes")
        parsed = []
        for n, b in enumerate(boxes):
            if not (isinstance(b, list) and len(b) == 6 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                                  for v in b)):
                raise BadRequest(f"{what} box {n} of clip {clip_id} is not [start_s, end_s, x, y, w, h] numbers")
            try:
                parsed.append(redact.TimedBox(float(b[0]), float(b[1]),
                                              redact.Box(int(b[2]), int(b[3]), int(b[4]), int(b[5]))))
            except (ValueError, redact.RedactionError) as e:
                raise BadRequest(f"{what} box {n} of clip {clip_id}: {e}") from None
        out[clip_id] = parsed
    return out


@dataclass(frozen=True)
class ExportPlan:
    """Which clips to disclose, and the boxes staff drew."""

    clips: tuple[str, ...]
    keep: dict[str, list] = field(default_factory=dict)  # the requester's face: not blurred
    manual: dict[str, list] = field(default_factory=dict)  # always blurred (missed faces, screens, papers)

    @classmethod
    def from_json(cls, doc: dict) -> "ExportPlan":
        clips = doc.get("clips")
        if not isinstance(clips, list) or not clips or len(clips) > MAX_CLIPS:
            raise BadRequest(f"clips must be a list of 1 to {MAX_CLIPS} clip ids")
        ids = tuple(dict.fromkeys(check_clip_id(str(c)) for c in clips))
        keep, manual = _boxes(doc.get("keep"), "keep"), _boxes(doc.get("manual"), "manual")
        stray = sorted((set(keep) | set(manual)) - set(ids))
        if stray:
            raise BadRequest(f"boxes given for clip(s) not being exported: {', '.join(stray)}")
        return cls(ids, keep, manual)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def export_request(service, request_id: str, plan: ExportPlan, *, actor: str,
                   progress=None) -> dict:
    """Run one export for an open request (blocking).  Returns the manifest, with where it is."""
    check_request_id(request_id)
    reader = service.db.reader()
    row = reader.execute("SELECT status FROM subject_requests WHERE id = ?", (request_id,)).fetchone()
    if row is None:
        raise NotFound(f"no subject access request {request_id}")
    if row[0] == "closed":
        raise Conflict(f"subject access request {request_id} is closed; nothing more is disclosed under it")
    held = {r[0] for r in reader.execute("SELECT clip_id FROM sar_holds WHERE sar_id = ?", (request_id,))}
    not_held = [c for c in plan.clips if c not in held]
    if not_held:
        raise Conflict(f"clip(s) {', '.join(not_held)} are not held for {request_id}; hold them first "
                       "(POST /api/v1/requests/{id}/holds)")
    base = service.home.server_dir / "exports" / request_id
    base.mkdir(parents=True, exist_ok=True)
    n = 1 + max((int(p.name) for p in base.iterdir() if p.name.isdigit()), default=0)
    out = base / str(n)
    out.mkdir()
    scratch = Path(tempfile.mkdtemp(prefix=".scratch-", dir=base))
    entries = []
    try:
        for clip_id in plan.clips:
            try:
                opened = service.open_clip(clip_id, scratch / clip_id)
            except Exception as e:
                service.audit(actor, "decrypt", f"clip:{clip_id}", {"request": request_id, "why": str(e)[:500]},
                              outcome="failed")
                raise
            hashes = [s.segment_hash.hex() for s in opened.segments]
            service.audit(actor, "key_use", f"clip:{clip_id}",
                          {"key": service.server_keys.public.key_id.hex(), **segments_detail(hashes),
                           "request": request_id})
            service.audit(actor, "decrypt", f"clip:{clip_id}", {**segments_detail(hashes), "purpose": "subject access",
                                                               "request": request_id})
            dst = out / f"{clip_id}.mp4"
            report = redact.redact_video(opened.ts_path, dst, keep=plan.keep.get(clip_id, ()),
                                         manual=plan.manual.get(clip_id, ()), progress=progress)
            entries.append({
                "clip_id": clip_id,
                "device_id": opened.device_id,
                "sealed_segments": hashes,
                "decrypted_media_sha256": _sha256(opened.ts_path),
                "output": dst.name,
                "output_sha256": _sha256(dst),
                "redaction": report.to_dict(),
                "kept_boxes": [[b.start_s, b.end_s, b.box.x, b.box.y, b.box.w, b.box.h]
                               for b in plan.keep.get(clip_id, ())],
                "manual_boxes": [[b.start_s, b.end_s, b.box.x, b.box.y, b.box.w, b.box.h]
                                 for b in plan.manual.get(clip_id, ())],
            })
        manifest = {
            "request": request_id, "export": n, "created_utc": now_iso(), "created_by": actor,
            "server_key_id": service.server_keys.public.key_id.hex(),
            "redaction": "faces blurred except boxes kept as the requester's; staff boxes always blurred; "
                         "audio removed",
            "clips": entries,
        }
        body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        atomic_write(out / "manifest.json", body)
        atomic_write(out / "manifest.sig", service.server_keys.sign(b"openbwv-export-manifest-v1\n" + body).hex()
                     .encode() + b"\n")
        fsync_dir(out)
        digest = hashlib.sha256(body).hexdigest()
        with service.db.transaction() as db:
            db.execute("INSERT INTO sar_exports (sar_id, created_utc, created_by, directory, manifest_sha256, clips) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (request_id, manifest["created_utc"], actor, str(out), digest,
                                                     len(entries)))
            audit.append(db, actor=actor, action="export", target=f"request:{request_id}",
                         detail={"export": n, "clips": list(plan.clips), "manifest_sha256": digest})
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"directory": str(out), "manifest_sha256": digest, "manifest": manifest}


__all__ = ["ExportPlan", "export_request"]
