"""Fixtures: one real Ceph RGW for the whole session (tests/rgw_kit.py), a fresh Object Lock bucket per test."""

from __future__ import annotations

import itertools

import pytest

import rgw_kit

rgw = rgw_kit.session_fixture()
_buckets = itertools.count(1)


@pytest.fixture
def bucket(rgw) -> str:
    """A new bucket with Object Lock enabled (and so versioning), no default retention."""
    name = f"evidence-{next(_buckets)}"
    rgw.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name
