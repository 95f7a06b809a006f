"""Upload throughput into S3 (Ceph RGW, started here), against the same references as `upload`.

A plugin of bench.py (see `load_plugins` there).  The gateway is the tests'
own (tests/rgw_kit.py): one monitor, one memstore OSD, radosgw on loopback;
its OSD keeps objects in RAM, so the object store costs less here than a
disk-backed cluster would, and the figure is an upper bound of what the S3
path allows on this machine.  Both ends share the machine's 2 cores with the
gateway.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench import (MB, MiB, UPLOAD_SEGMENT_MIB, UPLOADER_CHUNK, Figure, Figures, _EvidenceServer,
                   _LoopbackCopy, _environment, _seal_segments, _tests_module, _upload, _uploader_class, benchmark, progress)

S3_SEGMENTS = int(os.environ.get("BWV_BENCH_S3_SEGMENTS", "16"))


def _reference(f: Figures) -> str:
    return (f"1 dock (TusUploader, {UPLOADER_CHUNK // MiB} MiB PATCHes) -> `bwv server --blobs s3://...` on "
            f"loopback -> Ceph RGW 16 (memstore) on loopback, {S3_SEGMENTS} x {UPLOAD_SEGMENT_MIB} MiB sealed "
            f"segments, each until its receipt (lock set); R = {f['loopback_copy_s3_run_mb_s']:.0f} MB/s")


@benchmark(
    "upload_s3",
    loopback_copy_s3_run_mb_s=Figure("MB/s", "R: the `upload` benchmark's loopback copy of the same files, this run"),
    s3_put_mb_s=Figure("MB/s", "the same files put into the same bucket straight with boto3 (upload_fileobj, "
                               "COMPLIANCE lock in the PUT): what the object store takes with no server between"),
    upload_s3_mb_s=Figure("MB/s", _reference),
    upload_vs_raw_s3=Figure("ratio", "upload_s3_mb_s / R, the three taking turns segment by segment"),
    upload_vs_s3_put=Figure("ratio", "upload_s3_mb_s / s3_put_mb_s"),
)
def bench_upload_s3() -> Figures:
    """`bench_upload` with the held segments going to S3: the dock's uploader, a real server, a real RGW.

    Per segment three things take turns (order rotating): the loopback copy
    (the floor of any upload), a plain boto3 upload of the file into the
    bucket with a compliance lock (the floor of the object store), and the
    dock's upload through `bwv server --blobs s3://...`, receipt included
    (which comes only once the segment's lock reaches its due date)."""
    from datetime import datetime, timedelta, timezone

    from boto3.s3.transfer import TransferConfig

    rgw_kit = _tests_module("tests/rgw_kit.py")
    TusUploader = _uploader_class()
    with tempfile.TemporaryDirectory(prefix="openbwv-bench-s3-") as tmp:
        root = Path(tmp)
        with rgw_kit.RgwCluster(root / "rgw") as rgw:
            progress(f"upload_s3: Ceph RGW up in {rgw.seconds_to_start:.1f} s at {rgw.endpoint}")
            s3 = rgw.client()
            s3.create_bucket(Bucket="bench-evidence", ObjectLockEnabledForBucket=True)
            s3.create_bucket(Bucket="bench-raw", ObjectLockEnabledForBucket=True)
            with _environment(rgw.env()):  # the server process inherits the credentials, as under systemd
                server = _EvidenceServer(root, "--blobs", rgw.blobs_url("bench-evidence"))
                token = server.add_dock("bench-dock-1")
                storage = server.enrol("bench-cam-1")
                device_id = storage.device.device_id
                progress(f"upload_s3: sealing {S3_SEGMENTS} x {UPLOAD_SEGMENT_MIB} MiB segments (not timed)")
                sealed = _seal_segments(storage, S3_SEGMENTS, UPLOAD_SEGMENT_MIB * MiB)
                sizes = [info.path.stat().st_size for info in sealed]
                total = sum(sizes)
                clock = time.perf_counter
                spent = {"copy": 0.0, "put": 0.0, "upload": 0.0}
                receipts = []
                lock = datetime.now(timezone.utc) + timedelta(days=1)
                transfer = TransferConfig(multipart_threshold=64 * MiB, multipart_chunksize=64 * MiB)
                with server, _LoopbackCopy(root / "copies", UPLOADER_CHUNK) as raw:
                    uploader = TusUploader(server.url, token, state_path=root / "dock" / "uploads.json")
                    order = ("copy", "put", "upload")
                    for index, info in enumerate(sealed):
                        for side in order[index % 3:] + order[:index % 3]:
                            started = clock()
                            if side == "copy":
                                raw.copy(info.path)
                            elif side == "put":
                                with open(info.path, "rb") as f:
                                    s3.upload_fileobj(f, "bench-raw", f"{index}.bwv", Config=transfer, ExtraArgs={
                                        "ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": lock})
                            else:
                                receipts.append(_upload(uploader, device_id, info))
                            spent[side] += clock() - started
                for info, receipt in zip(sealed, receipts, strict=True):
                    server.check_receipt(receipt, device_id, info)

    copy, put, upload = (total / MB / spent[k] for k in ("copy", "put", "upload"))
    progress(f"upload_s3: loopback copy {copy:.0f} MB/s, boto3 put {put:.0f} MB/s, upload via server {upload:.0f} MB/s")
    return {"loopback_copy_s3_run_mb_s": copy, "s3_put_mb_s": put, "upload_s3_mb_s": upload,
            "upload_vs_raw_s3": upload / copy, "upload_vs_s3_put": upload / put}
