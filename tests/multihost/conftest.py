"""The S3 server fixtures of tests/lake (one bucket per session, a prefix per test)."""

from ..lake.conftest import s3_env, s3_prefix, s3_server  # noqa: F401
