"""The S3 connector against moto's server, through real boto3."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tbs_emergency.config import StorageConfig
from tbs_emergency.connectors import Connectors
from tbs_emergency.connectors.objectstore import S3ObjectStore
from tbs_emergency.errors import IntegrityError, NotFound, TimedOut, Unreachable

pytestmark = pytest.mark.integration


@pytest.fixture
def store(settings: Any) -> Iterator[S3ObjectStore]:
    conn = Connectors(settings)
    s = conn.store()
    s.ensure_bucket()
    yield s
    conn.close()


@pytest.fixture
def raw_s3(moto: Any) -> Any:
    """boto3 behind the connector's back, to inspect and to corrupt."""
    return boto3.client(
        "s3",
        endpoint_url=moto.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_ensure_bucket_is_idempotent(store: S3ObjectStore) -> None:
    assert store.ensure_bucket() is False
    p = store.ping()
    assert p.reachable and p.system == "s3", p.detail


def test_put_get_with_sha256_and_sse(store: S3ObjectStore, raw_s3: Any, known: Any) -> None:
    data = b"journal line 1\n"
    stored = store.put("incidents/INC-1/journal.jsonl", data, {"incident": "INC-1"})
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert store.get("incidents/INC-1/journal.jsonl") == data

    head = raw_s3.head_object(
        Bucket=known.bucket, Key="tbs-emergency/incidents/INC-1/journal.jsonl"
    )
    assert head["Metadata"]["sha256"] == stored.sha256
    assert head["Metadata"]["incident"] == "INC-1"
    assert head["ServerSideEncryption"] == "AES256"

    h = store.head("incidents/INC-1/journal.jsonl")
    assert h.size == len(data) and h.sha256 == stored.sha256 and h.sse == "AES256"
    assert store.exists("incidents/INC-1/journal.jsonl")
    assert not store.exists("incidents/INC-1/nothing")


def test_kms_encryption_is_requested(settings: Any, raw_s3: Any, known: Any) -> None:
    cfg = settings.storage.model_copy(update={"sse": "aws:kms", "kms_key_id": "alias/tbs-dr"})
    s = S3ObjectStore(cfg)
    s.put("kms/object", b"x")
    head = raw_s3.head_object(Bucket=known.bucket, Key="tbs-emergency/kms/object")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head.get("SSEKMSKeyId", "").endswith("alias/tbs-dr")


def test_corruption_behind_the_connectors_back_is_detected(
    store: S3ObjectStore, raw_s3: Any, known: Any, tmp_path: Path
) -> None:
    store.put("backups/b1/trades.csv", b"1,IBM,100\n")
    # Overwrite the content but keep the recorded sha256, as a silent corruption would.
    full = "tbs-emergency/backups/b1/trades.csv"
    meta = raw_s3.head_object(Bucket=known.bucket, Key=full)["Metadata"]
    raw_s3.put_object(Bucket=known.bucket, Key=full, Body=b"1,IBM,999\n", Metadata=meta)
    with pytest.raises(IntegrityError) as err:
        store.get("backups/b1/trades.csv")
    assert "backups/b1/trades.csv" in str(err.value)
    assert err.value.system == "s3"
    with pytest.raises(IntegrityError):
        store.get_file("backups/b1/trades.csv", tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()
    # An object nobody recorded a sha256 for is not trusted either.
    raw_s3.put_object(Bucket=known.bucket, Key="tbs-emergency/foreign", Body=b"?")
    with pytest.raises(IntegrityError, match="no recorded sha256"):
        store.get("foreign")
    assert store.get("foreign", verify=False) == b"?"


def test_list_is_paginated_and_relative(store: S3ObjectStore) -> None:
    for i in range(25):
        store.client.put_object(
            Bucket=store.config.bucket, Key=f"tbs-emergency/many/{i:05d}", Body=b""
        )
    calls: list[str] = []
    store.client.meta.events.register(
        "before-call.s3.ListObjectsV2", lambda **kw: calls.append("list")
    )
    keys = [o.key for o in store.list("many/", page_size=10)]
    assert len(keys) == 25 and len(calls) == 3
    assert keys[0] == "many/00000" and keys[-1] == "many/00024"
    assert [o.key for o in store.list("many/0001")] == [f"many/{i:05d}" for i in range(10, 20)]


def test_multipart_upload_and_download(store: S3ObjectStore, tmp_path: Path) -> None:
    # threshold is 5 MiB in the test settings: 11 MiB goes in three parts.
    src = tmp_path / "dump.bin"
    src.write_bytes(os.urandom(11 * 1024 * 1024))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    stored = store.put_file("backups/b2/dump.bin", src, {"table": "trades"})
    assert stored.sha256 == digest and stored.size == src.stat().st_size
    assert stored.sse == "AES256"
    # A multipart object's ETag ends in -<parts>.
    etag = store.client.head_object(
        Bucket=store.config.bucket, Key="tbs-emergency/backups/b2/dump.bin"
    )["ETag"]
    assert etag.strip('"').endswith("-3")
    out = tmp_path / "restored.bin"
    got = store.get_file("backups/b2/dump.bin", out)
    assert got.sha256 == digest
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest


def test_small_file_single_put(store: S3ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "small.txt"
    src.write_text("hello")
    stored = store.put_file("small.txt", src)
    assert stored.sha256 == hashlib.sha256(b"hello").hexdigest()
    assert store.get("small.txt") == b"hello"


def test_missing_key_is_not_found(store: S3ObjectStore) -> None:
    with pytest.raises(NotFound) as err:
        store.get("nope/nothing")
    assert "nope/nothing" in str(err.value)
    with pytest.raises(NotFound):
        store.head("nope/nothing")


def test_unreachable_endpoint(closed_port: int, known: Any) -> None:
    cfg = StorageConfig(
        bucket="b-unreachable",
        endpoint_url=f"http://user:{known.s3_secret}@127.0.0.1:{closed_port}",
        access_key_id="testing",
        secret_access_key=known.s3_secret,
        timeout_s=1,
    )
    s = S3ObjectStore(cfg)
    with pytest.raises(Unreachable) as err:
        s.put("k", b"v")
    text = str(err.value)
    assert text.startswith("s3:")
    assert known.s3_secret not in text
    p = s.ping()
    assert not p.reachable and known.s3_secret not in p.detail


def test_silent_endpoint_times_out(blackhole_port: int) -> None:
    cfg = StorageConfig(
        bucket="b-silent",
        endpoint_url=f"http://127.0.0.1:{blackhole_port}",
        access_key_id="testing",
        secret_access_key="testing",
        timeout_s=0.3,
    )
    s = S3ObjectStore(cfg)
    start = time.monotonic()
    with pytest.raises(TimedOut) as err:
        s.head("k")
    assert time.monotonic() - start < 10
    assert err.value.system == "s3"
