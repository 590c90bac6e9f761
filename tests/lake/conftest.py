"""An S3 server for the lake tests: SeaweedFS on 127.0.0.1:8333 (.ci/run starts it), one bucket
per session and one prefix per test. Without a server the tests skip; with CI=true they fail."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from adperf.objstore import S3Bucket

ENDPOINT = os.environ.get("ADPERF_TEST_S3_ENDPOINT", "http://127.0.0.1:8333")
REGION = "us-east-1"
# The test identity of .ci/seaweedfs-s3.json: known values, so the tests can search every log
# line and message for them.
ACCESS_KEY = os.environ.get("ADPERF_TEST_S3_ACCESS_KEY", "adperftestkey")
SECRET_KEY = os.environ.get("ADPERF_TEST_S3_SECRET_KEY", "adperf-test-secret-not-secret")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def connect(self, prefix: str, **kw: float) -> S3Bucket:
        """A lake backend on `prefix` of the session's bucket (credentials from the env)."""
        bucket = S3Bucket.connect(self.url(prefix), endpoint_url=self.endpoint, region=REGION)
        if kw:
            bucket = S3Bucket(bucket.location, bucket.client, **kw)
        return bucket


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"S3 test cannot run under CI=true: {reason}")
    pytest.skip(reason)


def _client():  # type: ignore[no-untyped-def]
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=2,
            read_timeout=10,
            retries={"max_attempts": 1},
        ),
    )


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A fresh bucket on the S3 server, emptied and removed after the session."""
    try:
        import boto3  # noqa: F401
    except ImportError:
        _unavailable("boto3 is not installed (pip install -e '.[test]')")
    from botocore.exceptions import BotoCoreError, ClientError

    client = _client()
    bucket = f"adperf-test-{uuid.uuid4().hex[:10]}"
    # A server just started opens its port before its filer is ready: try for a while.
    deadline, problem = time.monotonic() + 30, ""
    while True:
        try:
            client.create_bucket(Bucket=bucket)
            break
        except (BotoCoreError, ClientError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            _unavailable(
                f"no S3 server usable at {ENDPOINT} with the test identity ({problem}); start "
                "one as .ci/run does (weed mini -ip.bind=127.0.0.1 "
                "-s3.config=.ci/seaweedfs-s3.json)"
            )
        time.sleep(0.5)
    try:
        yield S3Server(ENDPOINT, bucket)
    finally:
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=obj["Key"])
        client.delete_bucket(Bucket=bucket)


@pytest.fixture()
def s3_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The test identity in the environment, where boto3's chain (and adperf) find it."""
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    return dict(CREDENTIALS)


@pytest.fixture()
def s3_prefix(request: pytest.FixtureRequest) -> str:
    """A prefix of the bucket for this test alone."""
    return f"{request.node.name[:40]}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace("]", "")


@pytest.fixture()
def s3_lake(s3_server: S3Server, s3_env: dict[str, str], s3_prefix: str) -> S3Bucket:
    """A lake root on the test's own prefix."""
    return s3_server.connect(s3_prefix)
