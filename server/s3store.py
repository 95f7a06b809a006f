"""Held segments in an S3 bucket with Object Lock: WORM retention the server itself cannot undo.

`S3BlobStore` is the `BlobStore` seam (blobstore.py) over S3, through boto3,
tested against Ceph RGW.  Three kinds of object live in the bucket::

    <prefix>segments/ab/cd/<hash>.bwv   the sealed segment, its wrapped key zeroed; COMPLIANCE-locked
    <prefix>keys/<hash>.key             that wrapped key (the HPKE enc ‖ ct of the preamble); never locked
    <prefix>reap/<until>/<hash>         a shredded segment still locked until <until>: removed then

**Locks.**  Every segment is written with Object Lock in COMPLIANCE mode, a
provisional lock of `initial_lock` from now in the same PUT (so no stored
byte is ever unlocked), which the lifecycle then extends to the clip's
retention date (`set_retention`; a compliance lock can be lengthened, never
shortened, by anyone).  An evidence mark or an open subject access request
sets a LEGAL HOLD on the segment and on its key object (`set_legal_hold`);
lifting the last one clears it.  While either stands the store refuses to
delete the segment, whatever credentials ask.

**Crypto-shredding under a lock.**  The sealed format already is envelope
encryption: the media is encrypted under a per-segment key that exists only
wrapped (HPKE, to the server's key) in the preamble (docs/sealed-segment-format.md).
LocalBlobStore shreds by overwriting that wrapped key.  A locked object
cannot be overwritten, so this store never puts the wrapped key in it: the
segment object carries zeros where the wrapped key was, and the wrapped key
is a small object of its own, without a retention lock.  `shred` deletes
every version of the key object (for good: by version id), which destroys
the means to decrypt at the due time even while the segment object must stay
locked for longer (a category shortened after its lock was set, or the
provisional lock of footage docked after it was already due).  What stays
locked is ciphertext nobody can open, the server key included, and the
clear-text preamble and trailer, which hold no more than the tombstone
keeps anyway.  The segment object is deleted as soon as its lock allows:
at once if it has expired, else `sync_all` (called by the sweep after each
batch) removes it once the `reap/` marker's date has passed.  A blob counts
as held exactly while its key object exists: the key is written last, so it
is also the commit point of `put_file`.  Why this and not a second
envelope: docs/deployment.md.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qsl, urlsplit

from ..sealed.errors import SegmentError
from ..sealed.reader import read_preamble
from .blobstore import check_key
from .errors import ConfigError, InsufficientStorage, StoreError

UTC = timezone.utc
DEFAULT_INITIAL_LOCK = timedelta(days=1)
SPOOL_IN_MEMORY = 8 * 1024 * 1024  # blobs opened for reading stay in RAM up to this size, then spill to disk
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
PREFIX_RE = re.compile(r"^[A-Za-z0-9._/-]{0,200}\Z")
URL_OPTIONS = ("endpoint", "region", "initial_lock_s", "profile")
REAP_FORMAT = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class S3Location:
    """Where the store is, as `--blobs s3://BUCKET[/PREFIX]?endpoint=URL&region=R` says (no secrets)."""

    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str = "us-east-1"
    initial_lock: timedelta = DEFAULT_INITIAL_LOCK
    profile: str | None = None

    def __str__(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"


def parse_s3_url(url: str) -> S3Location:
    """`s3://bucket[/prefix]?endpoint=http://host:port&region=...&initial_lock_s=...&profile=...`.

    Credentials never go in the URL (it is printed, logged and visible in the
    process list): they come from the environment (AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY) or the AWS shared credentials file, as for any boto3 program."""
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise ConfigError(f"blob store {url!r}: an S3 store is written s3://BUCKET?endpoint=URL")
    if "@" in parts.netloc:
        raise ConfigError("blob store URL: credentials do not belong in the URL (it is logged and shown in the "
                          "process list); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE")
    bucket = parts.netloc
    if not BUCKET_RE.match(bucket) or ".." in bucket:
        raise ConfigError(f"blob store URL {url!r}: {bucket!r} is not an S3 bucket name "
                          "(3-63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit)")
    prefix = parts.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if not PREFIX_RE.match(prefix) or "//" in prefix or ".." in prefix:
        raise ConfigError(f"blob store URL {url!r}: the key prefix {prefix!r} may hold only letters, digits, "
                          "'.', '_', '-' and single '/'")
    values: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if name not in URL_OPTIONS:
            raise ConfigError(f"blob store URL: unknown option {name!r}; known: {', '.join(URL_OPTIONS)}")
        if name in values:
            raise ConfigError(f"blob store URL: option {name!r} given twice")
        values[name] = value
    endpoint = values.get("endpoint")
    if endpoint is not None:
        e = urlsplit(endpoint)
        if e.scheme not in ("http", "https") or not e.hostname or e.path not in ("", "/") or e.query or e.username:
            raise ConfigError(f"blob store URL: endpoint {endpoint!r} is not http(s)://HOST[:PORT]")
        try:
            e.port
        except ValueError:
            raise ConfigError(f"blob store URL: endpoint {endpoint!r} has a bad port") from None
        endpoint = endpoint.rstrip("/")
    initial = DEFAULT_INITIAL_LOCK
    if "initial_lock_s" in values:
        try:
            seconds = float(values["initial_lock_s"])
        except ValueError:
            raise ConfigError(f"blob store URL: initial_lock_s={values['initial_lock_s']!r} is not a number") from None
        if not 1 <= seconds <= 100 * 366 * 86400:
            raise ConfigError(f"blob store URL: initial_lock_s={seconds:g} outside 1 s .. 100 years")
        initial = timedelta(seconds=seconds)
    region = values.get("region") or "us-east-1"
    if not re.match(r"^[A-Za-z0-9-]{1,40}\Z", region):
        raise ConfigError(f"blob store URL: region {region!r} is not a region name")
    return S3Location(bucket, prefix, endpoint, region, initial, values.get("profile") or None)


def _code(e: Exception) -> str:
    return getattr(e, "response", {}).get("Error", {}).get("Code", "") if hasattr(e, "response") else ""


class _WithoutWrappedKey(io.RawIOBase):
    """A sealed segment file read with its wrapped key replaced by zeros (what the locked object holds)."""

    def __init__(self, f: BinaryIO, offset: int, length: int):
        self._f, self._start, self._end = f, offset, offset + length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._f.seek(pos, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readinto(self, b) -> int:
        at = self._f.tell()
        n = self._f.readinto(b)
        lo, hi = max(at, self._start), min(at + (n or 0), self._end)
        if lo < hi:
            memoryview(b)[lo - at:hi - at] = bytes(hi - lo)
        return n


class S3BlobStore:
    """Segments in an Object Lock bucket, their wrapped keys beside them (see the module docstring)."""

    enforces_locks = True  # blob_locks.settle keeps this store's locks in line with the database

    def __init__(self, location: S3Location, *, client=None):
        self.location = location
        self.bucket = location.bucket
        self.prefix = location.prefix
        self.s3 = client or self._client(location)
        self._check_bucket()

    @classmethod
    def from_url(cls, url: str) -> "S3BlobStore":
        return cls(parse_s3_url(url))

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _client(loc: S3Location):
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(profile_name=loc.profile) if loc.profile else boto3.session.Session()
        if session.get_credentials() is None:
            raise ConfigError(f"no S3 credentials for {loc}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                              "(or AWS_PROFILE / AWS_SHARED_CREDENTIALS_FILE) in the server's environment")
        # Checksums only where S3 demands them (Object Lock calls): how S3-compatible stores such as
        # Ceph 16 understand them; the segment itself carries its own hash and signature.
        return session.client("s3", endpoint_url=loc.endpoint, region_name=loc.region, config=Config(
            s3={"addressing_style": "path"}, retries={"max_attempts": 4, "mode": "standard"},
            connect_timeout=10, read_timeout=60,
            request_checksum_calculation="when_required", response_checksum_validation="when_required"))

    def _check_bucket(self) -> None:
        """The bucket exists, has Object Lock, and no default retention (which would lock the key
        objects too, and so make shredding at the due time impossible)."""
        try:
            config = self.s3.get_object_lock_configuration(Bucket=self.bucket)["ObjectLockConfiguration"]
        except Exception as e:  # noqa: BLE001 - botocore's errors, turned into words
            code = _code(e)
            if code in ("NoSuchBucket", "404"):
                raise ConfigError(f"blob store {self.location}: bucket {self.bucket!r} does not exist; create it "
                                  "with Object Lock enabled (e.g. aws s3api create-bucket --bucket "
                                  f"{self.bucket} --object-lock-enabled-for-bucket)") from None
            if code == "ObjectLockConfigurationNotFoundError":
                raise ConfigError(f"blob store {self.location}: bucket {self.bucket!r} has no Object Lock, so "
                                  "held footage could be deleted by anyone with the server's credentials; "
                                  "use a bucket created with Object Lock enabled") from None
            raise self._error(e, f"cannot read the Object Lock configuration of bucket {self.bucket!r}") from None
        if config.get("ObjectLockEnabled") != "Enabled":
            raise ConfigError(f"blob store {self.location}: Object Lock is not enabled on bucket {self.bucket!r}")
        if config.get("Rule", {}).get("DefaultRetention"):
            raise ConfigError(f"blob store {self.location}: bucket {self.bucket!r} has a default retention rule; "
                              "it would lock the wrapped-key objects too and make crypto-shredding at the due "
                              "time impossible. Remove the rule: OpenBWV sets each segment's lock itself")

    def _error(self, e: Exception, doing: str) -> StoreError:
        code = _code(e)
        if code in ("QuotaExceeded", "EntityTooLarge"):
            return InsufficientStorage(f"evidence store {self.location} is full ({code}): {doing}")
        why = code or type(e).__name__
        message = getattr(e, "response", {}).get("Error", {}).get("Message") if hasattr(e, "response") else str(e)
        return StoreError(f"object store {self.location}: {doing}: {why}{': ' + message if message else ''}")

    # ------------------------------------------------------------------ names
    def data_name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}segments/{key[0:2]}/{key[2:4]}/{key}.bwv"

    def key_name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}keys/{key}.key"

    def _versions(self, name: str) -> list[dict]:
        """Every version and delete marker stored under exactly `name`."""
        out: list[dict] = []
        pager = self.s3.get_paginator("list_object_versions")
        for page in pager.paginate(Bucket=self.bucket, Prefix=name):
            out += [v for v in page.get("Versions", []) + page.get("DeleteMarkers", []) if v["Key"] == name]
        return out

    def _head(self, name: str) -> dict | None:
        try:
            return self.s3.head_object(Bucket=self.bucket, Key=name)
        except Exception as e:  # noqa: BLE001
            if _code(e) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._error(e, f"cannot read {name}") from None

    # ------------------------------------------------------------------ the seam
    def put_file(self, src_path: Path, key: str) -> None:
        """Store a sealed segment: the locked object without its wrapped key, then the key object (the
        commit point).  The source is removed once both are stored; on failure it is left whole."""
        src = Path(src_path)
        data_name, key_name = self.data_name(key), self.key_name(key)
        if self.exists(key):
            src.unlink(missing_ok=True)
            return
        until = datetime.now(UTC) + self.location.initial_lock
        with open(src, "rb") as f:
            try:
                preamble, raw = read_preamble(f)
            except SegmentError as e:
                raise StoreError(f"blob {key}: not a sealed segment ({e}); the S3 store keeps each segment's "
                                 "wrapped key apart and must find it in the preamble") from None
            wrapped = preamble.wrapped_key
            offset = len(raw) - len(wrapped)
            f.seek(0)
            from boto3.s3.transfer import TransferConfig

            try:
                self.s3.upload_fileobj(
                    io.BufferedReader(_WithoutWrappedKey(f, offset, len(wrapped)), 1024 * 1024),
                    self.bucket, data_name,
                    ExtraArgs={"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": until,
                               "ContentType": "application/octet-stream"},
                    Config=TransferConfig(multipart_threshold=64 * 1024 * 1024,
                                          multipart_chunksize=64 * 1024 * 1024, max_concurrency=4))
                self.s3.put_object(Bucket=self.bucket, Key=key_name, Body=wrapped,
                                   Metadata={"offset": str(offset)}, ContentType="application/octet-stream")
            except StoreError:
                raise
            except Exception as e:  # noqa: BLE001
                raise self._error(e, f"cannot store blob {key}") from None
        src.unlink()

    def open(self, key: str) -> BinaryIO:
        """The segment's bytes as sealed: the locked object with its wrapped key put back."""
        try:
            got = self.s3.get_object(Bucket=self.bucket, Key=self.key_name(key))
            wrapped, offset = got["Body"].read(), int(got["Metadata"]["offset"])
        except Exception as e:  # noqa: BLE001
            if _code(e) in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"blob {key} is not held in {self.location}") from None
            raise self._error(e, f"cannot read the key of blob {key}") from None
        out = tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY)
        try:
            self.s3.download_fileobj(self.bucket, self.data_name(key), out)
        except Exception as e:  # noqa: BLE001
            out.close()
            raise self._error(e, f"cannot read blob {key}") from None
        out.seek(offset)
        out.write(wrapped)
        out.seek(0)
        return out

    def exists(self, key: str) -> bool:
        return self._head(self.key_name(key)) is not None

    def size(self, key: str) -> int:
        head = self._head(self.data_name(key)) if self.exists(key) else None
        if head is None:
            raise FileNotFoundError(f"blob {key} is not held in {self.location}")
        return int(head["ContentLength"])

    def delete(self, key: str) -> None:
        """Remove a blob and every version of it; a lock or a hold refuses (StoreError).  The segment
        object goes first: while it is locked the key object is left alone, or delete would shred."""
        data_name = self.data_name(key)
        refused = self._delete_versions(data_name)
        if refused:
            raise StoreError(f"blob {key} cannot be deleted: {data_name} is locked or held ({refused[0][1]})")
        self._delete_versions(self.key_name(key))

    def _delete_versions(self, name: str) -> list[tuple[dict, str]]:
        """Delete every version of `name` for good; return those the store refused, with why."""
        refused: list[tuple[dict, str]] = []
        for v in self._versions(name):
            try:
                self.s3.delete_object(Bucket=self.bucket, Key=name, VersionId=v["VersionId"])
            except Exception as e:  # noqa: BLE001
                if _code(e) != "AccessDenied":
                    raise self._error(e, f"cannot delete {name}") from None
                refused.append((v, getattr(e, "response", {}).get("Error", {}).get("Message") or "AccessDenied"))
        return refused

    def shred(self, key: str, *, sync: bool = True) -> str | None:
        """Destroy the segment's wrapped key (every version of its key object), then the segment
        object if its lock allows, else note it for `sync_all` to remove when the lock ends.

        Returns the SHA-256 of the wrapped key destroyed, or None if no key was left to destroy (never
        stored, or shredded before: an earlier shred interrupted after the key leaves only ciphertext,
        which is removed or noted here again).  A key object under a legal hold refuses: StoreError
        (the sweep never shreds a held clip)."""
        key_name, data_name = self.key_name(key), self.data_name(key)
        digest: str | None = None
        try:
            got = self.s3.get_object(Bucket=self.bucket, Key=key_name)
            digest = hashlib.sha256(got["Body"].read()).hexdigest()
        except Exception as e:  # noqa: BLE001
            if _code(e) not in ("NoSuchKey", "404"):
                raise self._error(e, f"cannot read the key of blob {key}") from None
        refused = self._delete_versions(key_name)
        if refused:
            raise StoreError(f"blob {key}: its wrapped key is under a legal hold ({refused[0][1]}); "
                             "a held clip is not shredded")
        for v, _ in self._delete_versions(data_name):
            self._note_for_reaping(key, data_name, v)
        return digest

    def _note_for_reaping(self, key: str, name: str, version: dict) -> None:
        """A shredded segment object still locked: a marker named by the lock's end, for sync_all."""
        try:
            retention = self.s3.get_object_retention(Bucket=self.bucket, Key=name, VersionId=version["VersionId"])
            until = retention["Retention"]["RetainUntilDate"].astimezone(UTC)
        except Exception as e:  # noqa: BLE001
            if _code(e) not in ("NoSuchObjectLockConfiguration", "ObjectLockConfigurationNotFoundError"):
                raise self._error(e, f"cannot read the lock of {name}") from None
            until = datetime.now(UTC)  # held, not locked: tried again at the next sweep
        marker = f"{self.prefix}reap/{until.strftime(REAP_FORMAT)}/{key}"
        self.s3.put_object(Bucket=self.bucket, Key=marker, Body=version["VersionId"].encode())

    def sync_all(self) -> None:
        """S3 writes are durable once answered; what is left is removing the shredded segment objects
        whose locks have ended since (their keys are long gone: this frees space, not footage)."""
        now = datetime.now(UTC).strftime(REAP_FORMAT)
        pager = self.s3.get_paginator("list_objects_v2")
        for page in pager.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}reap/"):
            for obj in page.get("Contents", []):
                when, _, key = obj["Key"][len(self.prefix) + 5:].partition("/")
                if when > now:
                    return  # markers are named by date: the rest are later still
                version = self.s3.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read().decode()
                name = self.data_name(key)
                try:
                    self.s3.delete_object(Bucket=self.bucket, Key=name, VersionId=version)
                except Exception as e:  # noqa: BLE001
                    if _code(e) != "AccessDenied":
                        raise self._error(e, f"cannot delete {name}") from None
                    self._note_for_reaping(key, name, {"VersionId": version})  # its lock was extended
                self._delete_versions(obj["Key"])

    def free_bytes(self) -> int:
        """An object store reports no free space; a quota refuses at put time (507, InsufficientStorage)."""
        return sys.maxsize

    # ------------------------------------------------------------------ locks
    def set_retention(self, key: str, until: datetime) -> None:
        """Lock the segment in COMPLIANCE mode until `until`, if that is later than its lock now (a
        compliance lock only ever grows).  Nothing to do for a blob no longer held."""
        until = until.astimezone(UTC)
        if until <= datetime.now(UTC) or not self.exists(key):
            return
        name = self.data_name(key)
        try:
            current = self.s3.get_object_retention(Bucket=self.bucket, Key=name)["Retention"]["RetainUntilDate"]
        except Exception as e:  # noqa: BLE001
            if _code(e) in ("NoSuchKey", "404"):
                return
            current = None
        if current is not None and current.astimezone(UTC) >= until:
            return
        try:
            self.s3.put_object_retention(Bucket=self.bucket, Key=name,
                                         Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until})
        except Exception as e:  # noqa: BLE001
            raise self._error(e, f"cannot lock blob {key} until {until.isoformat()}") from None

    def retention(self, key: str) -> datetime | None:
        """When the segment's compliance lock ends (None: not locked)."""
        try:
            r = self.s3.get_object_retention(Bucket=self.bucket, Key=self.data_name(key))["Retention"]
        except Exception as e:  # noqa: BLE001
            if _code(e) in ("NoSuchKey", "404", "NoSuchObjectLockConfiguration"):
                return None
            raise self._error(e, f"cannot read the lock of blob {key}") from None
        return r["RetainUntilDate"].astimezone(UTC)

    def set_legal_hold(self, key: str, on: bool) -> None:
        """Set or clear the legal hold of the segment and of its key object (while it stands neither
        can be deleted, so neither footage nor the means to decrypt it)."""
        if not self.exists(key):
            return
        status = {"Status": "ON" if on else "OFF"}
        for name in (self.data_name(key), self.key_name(key)):
            try:
                self.s3.put_object_legal_hold(Bucket=self.bucket, Key=name, LegalHold=status)
            except Exception as e:  # noqa: BLE001
                raise self._error(e, f"cannot {'set' if on else 'clear'} the legal hold of blob {key}") from None

    def legal_hold(self, key: str) -> bool:
        try:
            got = self.s3.get_object_legal_hold(Bucket=self.bucket, Key=self.data_name(key))
        except Exception as e:  # noqa: BLE001
            # Ceph RGW answers ObjectLockConfigurationNotFoundError for an object no hold was ever set on.
            if _code(e) in ("NoSuchKey", "404", "NoSuchObjectLockConfiguration", "ObjectLockConfigurationNotFoundError"):
                return False
            raise self._error(e, f"cannot read the legal hold of blob {key}") from None
        return got["LegalHold"]["Status"] == "ON"


__all__ = ["S3BlobStore", "S3Location", "parse_s3_url"]
