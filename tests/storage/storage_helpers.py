"""Helpers the storage tests import (conftest.py is not importable by name when the whole suite runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from s3_server import S3Server

TEST_SECRET = "storage-test-secret-0123456789abcdef0123456789"


def make_settings(database_url: str, var_dir: Path, *, s3: S3Server | None = None, **fields: Any) -> Any:
    """Settings of one host: its own var_dir (and so its own cache), the shared database and store."""
    from core.settings import Settings

    extra = {"s3_endpoint_url": s3.endpoint_url, "s3_region": "us-east-1"} if s3 is not None else {}
    return Settings(
        env="test",
        var_dir=var_dir,
        database_url=database_url,
        broker_url="redis://127.0.0.1:1/0",
        server_secret=TEST_SECRET,
        verify_uploaded_weights=False,
        heartbeat_interval_s=0.2,
        heartbeat_stale_s=2.0,
        **extra,
        **fields,
    )
