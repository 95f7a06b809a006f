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

An **evidential export** (`export_evidence`, for the evidence officer) is the
other kind: one clip marked as evidence for a case, verified, decrypted and
remuxed to MP4 *without* redaction or re-encoding, into
``BWV_HOME/server/exports/evidential/<clip_id>/<n>/`` with the same signed
manifest (``"kind": "evidential"``, the case reference and the mark it rests
on).  Only a clip with an active evidence mark under that case reference is
exported: an unredacted copy leaves the store only for a case that keeps the
original too.

Downloads (`export_file`) serve a file of an export only if it is the
manifest, its signature, or an output the manifest lists, and only if the
manifest's signature by this server's key still verifies: no name from the
request ever becomes a path.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature

from ..opener import sha256_file
from ..sealed.durable import atomic_write, fsync_dir
from . import audit, lifecycle
from .audit_time import segments_detail
from .errors import BadRequest, Conflict, NotFound, StoreError
from .staff_api import check_clip_id, check_request_id, now_iso

if TYPE_CHECKING:
    from . import redact

MAX_CLIPS = 200
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
SIGNING_CONTEXT = b"openbwv-export-manifest-v1\n"  # signed: this, then the manifest's bytes
EVIDENTIAL = "evidential"  # exports/evidential/<clip_id>/<n>/; subject access: exports/<request>/<n>/
# What an export directory may hold and a download may name: the manifest, its signature, <clip_id>.mp4.
FILE_NAME_RE = re.compile(r"^(?:manifest\.json|manifest\.sig|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                          r"[0-9a-f]{12}\.mp4)\Z")
MAX_EXPORT_NUMBER = 10**6


def _boxes(doc: Any, what: str) -> dict[str, list[redact.TimedBox]]:
    from . import redact  # OpenCV is loaded only when a subject access export is planned

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


def _follow_boxes(doc: Any) -> dict[str, list[redact.FollowBox]]:
    """`follow`: clip id -> [{"start_s", "end_s", "keyframes": [[t, x, y, w, h], ...]}, ...]."""
    from . import redact

    if doc is None:
        return {}
    shape = 'an object of clip id -> [{"start_s": s, "end_s": s, "keyframes": [[t, x, y, w, h], ...]}, ...]'
    if not isinstance(doc, dict):
        raise BadRequest(f"follow must be {shape}")
    out: dict[str, list[redact.FollowBox]] = {}
    number = (int, float)
    for clip_id, boxes in doc.items():
        check_clip_id(clip_id)
        if not isinstance(boxes, list) or len(boxes) > 1000:
            raise BadRequest(f"follow of clip {clip_id} must be a list of at most 1000 followed boxes")
        parsed = []
        for n, b in enumerate(boxes):
            frames = b.get("keyframes") if isinstance(b, dict) else None
            if not (isinstance(b, dict) and all(isinstance(b.get(k), number) and not isinstance(b.get(k), bool)
                                                for k in ("start_s", "end_s"))
                    and isinstance(frames, list) and 0 < len(frames) <= 1000
                    and all(isinstance(f, list) and len(f) == 5 and all(isinstance(v, number) and not isinstance(v, bool)
                                                                         for v in f) for f in frames)):
                raise BadRequest(f"followed box {n} of clip {clip_id} is not "
                                 '{"start_s": s, "end_s": s, "keyframes": [[t, x, y, w, h], ...]} numbers')
            try:
                parsed.append(redact.FollowBox(float(b["start_s"]), float(b["end_s"]), tuple(
                    (float(f[0]), redact.Box(int(f[1]), int(f[2]), int(f[3]), int(f[4]))) for f in frames)))
            except (ValueError, redact.RedactionError) as e:
                raise BadRequest(f"followed box {n} of clip {clip_id}: {e}") from None
        out[clip_id] = parsed
    return out


def _audio_ranges(silence: Any, bleep: Any) -> dict[str, list[redact.AudioRange]]:
    """`silence` and `bleep`: clip id -> [[start_s, end_s], ...], merged per clip in time order."""
    from . import redact

    out: dict[str, list[redact.AudioRange]] = {}
    for what, doc in (("silence", silence), ("bleep", bleep)):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise BadRequest(f"{what} must be an object of clip id -> [[start_s, end_s], ...]")
        for clip_id, ranges in doc.items():
            check_clip_id(clip_id)
            if not isinstance(ranges, list) or len(ranges) > 1000:
                raise BadRequest(f"{what} of clip {clip_id} must be a list of at most 1000 ranges")
            for n, r in enumerate(ranges):
                if not (isinstance(r, list) and len(r) == 2
                        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r)):
                    raise BadRequest(f"{what} range {n} of clip {clip_id} is not [start_s, end_s] numbers")
                try:
                    out.setdefault(clip_id, []).append(redact.AudioRange(float(r[0]), float(r[1]), what))
                except (ValueError, redact.RedactionError) as e:
                    raise BadRequest(f"{what} range {n} of clip {clip_id}: {e}") from None
    return {clip: sorted(ranges, key=lambda r: (r.start_s, r.end_s)) for clip, ranges in out.items()}


@dataclass(frozen=True)
class ExportPlan:
    """Which clips to disclose, and the boxes staff drew."""

    clips: tuple[str, ...]
    keep: dict[str, list] = field(default_factory=dict)  # the requester's face: not blurred
    manual: dict[str, list] = field(default_factory=dict)  # always blurred (missed faces, screens, papers)
    follow: dict[str, list] = field(default_factory=dict)  # drawn on some frames, followed as it moves, blurred
    audio: dict[str, list] = field(default_factory=dict)  # time ranges of the sound silenced or bleeped

    @classmethod
    def from_json(cls, doc: dict) -> "ExportPlan":
        clips = doc.get("clips")
        if not isinstance(clips, list) or not clips or len(clips) > MAX_CLIPS:
            raise BadRequest(f"clips must be a list of 1 to {MAX_CLIPS} clip ids")
        ids = tuple(dict.fromkeys(check_clip_id(str(c)) for c in clips))
        keep, manual = _boxes(doc.get("keep"), "keep"), _boxes(doc.get("manual"), "manual")
        follow = _follow_boxes(doc.get("follow"))
        audio = _audio_ranges(doc.get("silence"), doc.get("bleep"))
        stray = sorted((set(keep) | set(manual) | set(follow) | set(audio)) - set(ids))
        if stray:
            raise BadRequest(f"boxes or audio ranges given for clip(s) not being exported: {', '.join(stray)}")
        return cls(ids, keep, manual, follow, audio)


def _new_export_dir(base: Path) -> tuple[int, Path]:
    """The next numbered directory under `base` (1, 2, ...), made; two exports at once get two numbers."""
    base.mkdir(parents=True, exist_ok=True)
    while True:
        n = 1 + max((int(p.name) for p in base.iterdir() if p.name.isdigit()), default=0)
        try:
            (base / str(n)).mkdir()
        except FileExistsError:
            continue
        return n, base / str(n)


def _write_manifest(service, out: Path, manifest: dict) -> str:
    """manifest.json and manifest.sig (Ed25519 by the server key), durably; returns the manifest's SHA-256."""
    body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    atomic_write(out / MANIFEST, body)
    atomic_write(out / SIGNATURE, service.server_keys.sign(SIGNING_CONTEXT + body).hex().encode() + b"\n")
    fsync_dir(out)
    return hashlib.sha256(body).hexdigest()


def _decrypt_audited(service, clip_id: str, workdir: Path, *, actor: str, purpose: str, context: dict):
    """service.open_clip, with its key use and decryption (or the failure) on the audit trail."""
    try:
        opened = service.open_clip(clip_id, workdir)
    except Exception as e:
        service.audit(actor, "decrypt", f"clip:{clip_id}", {**context, "why": str(e)[:500]}, outcome="failed")
        raise
    hashes = [s.segment_hash.hex() for s in opened.segments]
    service.audit(actor, "key_use", f"clip:{clip_id}",
                  {"key": service.server_keys.public.key_id.hex(), **segments_detail(hashes), **context})
    service.audit(actor, "decrypt", f"clip:{clip_id}", {**segments_detail(hashes), "purpose": purpose, **context})
    return opened, hashes


def export_request(service, request_id: str, plan: ExportPlan, *, actor: str,
                   progress=None) -> dict:
    """Run one export for an open request (blocking).  Returns the manifest, with where it is."""
    from . import redact

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
                       f"(bwv request hold {request_id} CLIP..., or POST /api/v1/requests/{request_id}/holds)")
    base = service.home.server_dir / "exports" / request_id
    n, out = _new_export_dir(base)
    scratch = Path(tempfile.mkdtemp(prefix=".scratch-", dir=base))
    entries = []
    kept: dict[str, list[dict]] = {}  # per clip, each keep box and the track it kept clear: for the audit record
    try:
        for clip_id in plan.clips:
            opened, hashes = _decrypt_audited(service, clip_id, scratch / clip_id, actor=actor,
                                              purpose="subject access", context={"request": request_id})
            dst = out / f"{clip_id}.mp4"
            try:
                report = redact.redact_video(opened.ts_path, dst, keep=plan.keep.get(clip_id, ()),
                                             manual=plan.manual.get(clip_id, ()), follow=plan.follow.get(clip_id, ()),
                                             audio=plan.audio.get(clip_id, ()), progress=progress)
            except redact.InvalidBox as e:  # the frame size is known only once the clip is decrypted
                raise BadRequest(f"clip {clip_id}: {e}; nothing was exported") from None
            if report.keep:
                kept[clip_id] = [{"box": [u.box.start_s, u.box.end_s, u.box.box.x, u.box.box.y, u.box.box.w, u.box.box.h],
                                  "track": u.track} for u in report.keep]
            entries.append({
                "clip_id": clip_id,
                "device_id": opened.device_id,
                "sealed_segments": hashes,
                "decrypted_media_sha256": sha256_file(opened.ts_path),
                "output": dst.name,
                "output_sha256": sha256_file(dst),
                "redaction": report.to_dict(),
                "kept_boxes": [[b.start_s, b.end_s, b.box.x, b.box.y, b.box.w, b.box.h]
                               for b in plan.keep.get(clip_id, ())],
                "manual_boxes": [[b.start_s, b.end_s, b.box.x, b.box.y, b.box.w, b.box.h]
                                 for b in plan.manual.get(clip_id, ())],
                "follow_boxes": [b.to_dict() for b in plan.follow.get(clip_id, ())],
                "audio_ranges": [r.to_dict() for r in plan.audio.get(clip_id, ())],
            })
        manifest = {
            "request": request_id, "export": n, "created_utc": now_iso(), "created_by": actor,
            "server_key_id": service.server_keys.public.key_id.hex(),
            "redaction": "faces found by CenterFace, followed as tracks and pixelated, except the tracks kept as "
                         "the requester's; staff boxes (fixed and followed) always pixelated; audio carried as AAC with "
                         "the ranges staff marked silenced or bleeped",
            "clips": entries,
        }
        digest = _write_manifest(service, out, manifest)
        with service.db.transaction() as db:
            db.execute("INSERT INTO sar_exports (sar_id, created_utc, created_by, directory, manifest_sha256, clips) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (request_id, manifest["created_utc"], actor, str(out), digest,
                                                     len(entries)))
            audit.append(db, actor=actor, action="export", target=f"request:{request_id}",
                         detail={"export": n, "clips": list(plan.clips), "manifest_sha256": digest}
                         | ({"kept": kept} if kept else {}))
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"directory": str(out), "manifest_sha256": digest, "manifest": manifest}


def export_evidence(service, clip_id: str, *, case_ref: str, reason: str, actor: str) -> dict:
    """An evidential export of one clip (blocking): verified, decrypted, remuxed to MP4 unredacted, with a
    signed manifest.  The clip must carry an active evidence mark under `case_ref`.  Returns the manifest,
    with where it is."""
    check_clip_id(clip_id)
    case_ref, reason = case_ref.strip(), reason.strip()
    if not case_ref or not reason:
        raise BadRequest("an evidential export needs a case reference and a reason")
    reader = service.db.reader()
    record = lifecycle.require_clip(reader, clip_id)
    if record.state != lifecycle.CLIP_HELD:
        raise Conflict(f"clip {clip_id} is {record.state}: there is nothing left to export")
    marks = [m for m in lifecycle.marks(reader, clip_id, active_only=True) if m["case_ref"] == case_ref]
    if not marks:
        held_for = sorted({m["case_ref"] for m in lifecycle.marks(reader, clip_id, active_only=True)})
        raise Conflict(f"clip {clip_id} has no active evidence mark for case {case_ref!r}"
                       + (f" (it is marked for {', '.join(held_for)})" if held_for else "")
                       + "; mark it first (POST /api/v1/clips/{clip_id}/marks or `bwv retention mark`): "
                         "an unredacted copy leaves only for a case that keeps the original")
    base = service.home.server_dir / "exports" / EVIDENTIAL / clip_id
    n, out = _new_export_dir(base)
    scratch = Path(tempfile.mkdtemp(prefix=".scratch-", dir=base))
    context = {"case_ref": case_ref, "evidential_export": n}
    try:
        opened, hashes = _decrypt_audited(service, clip_id, scratch, actor=actor, purpose="evidential export",
                                          context=context)
        if opened.mp4_path is None:
            raise StoreError(f"clip {clip_id} decrypted and verified, but its media could not be remuxed to MP4")
        dst = out / f"{clip_id}.mp4"
        os.replace(opened.mp4_path, dst)  # same file system: scratch is beside it
        fsync_dir(out)
        opened_manifest = json.loads(opened.manifest_path.read_text())
        manifest = {
            "kind": EVIDENTIAL, "clip_id": clip_id, "export": n, "case_ref": case_ref, "reason": reason,
            "mark": marks[0]["id"], "created_utc": now_iso(), "created_by": actor,
            "server_key_id": service.server_keys.public.key_id.hex(),
            "redaction": "none: the clip as recorded, verified and decrypted, remuxed to MP4 without re-encoding",
            "clips": [{
                "clip_id": clip_id,
                "device_id": opened.device_id,
                "sealed_segments": hashes,
                "segments": [{k: s.get(k) for k in ("sequence", "segment_index", "segment_hash", "start_utc",
                                                    "end_utc", "recovered_after_power_loss", "clock_offset_us",
                                                    "clock_synced_utc", "media_bytes")}
                             for s in opened_manifest["segments"]],
                "missing_segment_indices": opened_manifest["missing_segment_indices"],
                "decrypted_media_sha256": sha256_file(opened.ts_path),
                "output": dst.name,
                "output_sha256": sha256_file(dst),
                "duration_s": opened.duration_s,
            }],
        }
        digest = _write_manifest(service, out, manifest)
        with service.db.transaction() as db:
            audit.append(db, actor=actor, action="export", target=f"clip:{clip_id}", detail={
                **context, "reason": reason[:500], "manifest_sha256": digest,
                "output_sha256": manifest["clips"][0]["output_sha256"]})
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"directory": str(out), "manifest_sha256": digest, "manifest": manifest}


# --------------------------------------------------------------------------- downloads
class ExportFileRefused(NotFound):
    """A download that names no file of the export (a typo, or a path trick): 404, and audited."""


def export_dir(service, owner: str, n: int) -> Path:
    """Where export `n` of a request (SAR-...) or of a clip (evidential) is; no text from outside is
    joined to a path unchecked."""
    if not 1 <= n <= MAX_EXPORT_NUMBER:
        raise NotFound(f"there is no export {n}")
    if owner.startswith("SAR-"):
        return service.home.server_dir / "exports" / check_request_id(owner) / str(n)
    return service.home.server_dir / "exports" / EVIDENTIAL / check_clip_id(owner) / str(n)


def signed_manifest(service, directory: Path) -> tuple[bytes, dict]:
    """An export's manifest, once its signature by this server's key is checked."""
    try:
        body = (directory / MANIFEST).read_bytes()
        signature = bytes.fromhex((directory / SIGNATURE).read_text().strip())
    except FileNotFoundError:
        raise NotFound(f"no export is held at {directory.name} (nothing was written, or it failed)") from None
    except ValueError:
        raise StoreError(f"the signature of export {directory} is not hexadecimal: the export was altered") from None
    try:
        service.server_keys.public.receipt_verifier().verify(signature, SIGNING_CONTEXT + body)
    except InvalidSignature:
        raise StoreError(f"the manifest of export {directory} does not verify with this server's key: "
                         "it was altered since it was written; nothing is served from it") from None
    return body, json.loads(body)


def export_file(service, owner: str, n: int, name: str) -> tuple[Path, dict]:
    """The path of one file of an export, and that export's manifest (blocking).

    `name` must be ``manifest.json``, ``manifest.sig`` or an ``output`` the signed manifest lists;
    anything else is `ExportFileRefused`.  An output is served only if its SHA-256 is still the one
    the manifest gives."""
    directory = export_dir(service, owner, n)
    if not FILE_NAME_RE.match(name):
        raise ExportFileRefused(f"{name[:80]!r} is not a file an export holds (manifest.json, manifest.sig "
                                "or <clip_id>.mp4)")
    recorded = None
    if owner.startswith("SAR-"):
        recorded = {e["export"]: e["manifest_sha256"] for e in export_listing(service, owner)}.get(n)
        if recorded is None:
            raise NotFound(f"subject access request {owner} has no export {n}")
    body, manifest = signed_manifest(service, directory)
    if recorded is not None and hashlib.sha256(body).hexdigest() != recorded:
        raise StoreError(f"the manifest of export {n} of {owner} is not the one recorded when it was made")
    outputs = {c["output"]: c["output_sha256"] for c in manifest.get("clips", [])}
    if name not in outputs and name not in (MANIFEST, SIGNATURE):
        raise ExportFileRefused(f"export {n} of {owner} lists no file {name!r} (it holds {MANIFEST}, {SIGNATURE}"
                                + "".join(f", {o}" for o in sorted(outputs)) + ")")
    path = directory / name
    if name in outputs and not path.exists():
        reader = service.db.reader()
        clip_id = name.removesuffix(".mp4")
        clip = lifecycle.clip(reader, clip_id)
        stones = lifecycle.tombstones_of(reader, clip_id) if clip is not None else []
        if clip is not None and (clip.state == lifecycle.CLIP_DELETED or stones):
            # Deleted, or deleted and then held again for segments that arrived late: either way the
            # sweep removed the exported copies with the footage they showed.
            when = clip.deleted_utc or max(t["deleted_utc"] for t in stones)
            raise NotFound(f"{name} of export {n} of {owner}: the clip was deleted by the retention policy on "
                           f"{when}, and its exported copies with it; the manifest remains as the "
                           "record of what was exported")
    if path.is_symlink() or not path.is_file():
        raise StoreError(f"{name} of export {n} of {owner} is missing or not a plain file")
    if name in outputs and sha256_file(path) != outputs[name]:
        raise StoreError(f"{name} of export {n} of {owner} no longer has the SHA-256 its manifest gives; "
                         "it is not served")
    return path, manifest


def export_listing(service, owner: str) -> list[dict]:
    """Every export of a request, from what was recorded when each was made (blocking)."""
    rows = service.db.reader().execute(
        "SELECT directory, created_utc, created_by, manifest_sha256, clips FROM sar_exports WHERE sar_id = ? "
        "ORDER BY id", (check_request_id(owner),)).fetchall()
    return [{"export": int(Path(d).name), "created_utc": c, "created_by": by, "manifest_sha256": h, "clips": k}
            for d, c, by, h, k in rows if Path(d).name.isdigit()]


__all__ = ["EVIDENTIAL", "ExportFileRefused", "ExportPlan", "MANIFEST", "SIGNATURE", "export_dir", "export_evidence",
           "export_file", "export_listing", "export_request", "signed_manifest"]
