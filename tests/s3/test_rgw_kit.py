"""The test gateway is a real S3 store with real Object Lock (what the S3 blob store relies on)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError


def test_the_gateway_refuses_to_delete_a_compliance_locked_version_even_for_its_owner(rgw, bucket):
    s3 = rgw.client()
    until = datetime.now(timezone.utc) + timedelta(hours=1)
    put = s3.put_object(Bucket=bucket, Key="k", Body=b"evidence", ObjectLockMode="COMPLIANCE",
                        ObjectLockRetainUntilDate=until)
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=bucket, Key="k", VersionId=put["VersionId"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert s3.get_object(Bucket=bucket, Key="k", VersionId=put["VersionId"])["Body"].read() == b"evidence"


def test_an_unlocked_version_can_be_deleted_for_good(rgw, bucket):
    s3 = rgw.client()
    put = s3.put_object(Bucket=bucket, Key="k", Body=b"key")
    s3.delete_object(Bucket=bucket, Key="k", VersionId=put["VersionId"])
    assert s3.list_object_versions(Bucket=bucket, Prefix="k").get("Versions", []) == []
