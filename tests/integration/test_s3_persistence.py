"""The sandbox's S3 (`sandbox.s3store` behind `start_moto`) keeps its state across restarts.

Real processes throughout: the server is started with `start_moto`, stopped with SIGTERM (as
`sandbox down` does), killed with SIGKILL, paused with SIGSTOP (the world's `s3-down` fault),
and started again on the same directory.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from sandbox.proc import Service, ServiceError, pid_alive, port_open
from sandbox.s3store import SNAPSHOT
from sandbox.services import start_moto, wait_stopped

pytestmark = pytest.mark.integration

BUCKET = "tbs-persist"
LOCKED_UNTIL = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)


def _client(service: Service) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=service.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30),
    )


class _Servers:
    """Starts servers on one directory and makes sure none outlives the test."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.running: list[Service] = []
        self.port: int | None = None

    def start(self) -> Service:
        service = start_moto(self.state_dir, self.port)
        self.port = service.port  # the same URL across restarts, as in the sandbox world
        self.running.append(service)
        return service

    def stop(self, service: Service) -> None:
        wait_stopped(service)  # SIGTERM to the group, wait, port closed

    def kill(self, service: Service) -> None:
        os.killpg(service.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(service.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(service.pid)
        while port_open(service.host, service.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        for service in self.running:
            if pid_alive(service.pid):
                os.killpg(service.pid, signal.SIGCONT)  # a paused one cannot act on SIGTERM
                service.stop()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[_Servers]:
    s = _Servers(tmp_path / "s3")
    try:
        yield s
    finally:
        s.close()


def _snapshot_mtime(state_dir: Path) -> int:
    try:
        return (state_dir / "data" / SNAPSHOT).stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def _wait_snapshot(state_dir: Path, after: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while _snapshot_mtime(state_dir) == after:
        assert time.monotonic() < deadline, "no snapshot was written"
        time.sleep(0.1)


def _picture(s3: Any) -> dict[str, Any]:
    """Everything the test put into S3, as S3 answers it (bodies and per-version headers)."""
    listing = s3.list_object_versions(Bucket=BUCKET)
    versions = []
    for v in listing.get("Versions", []):
        args = {"Bucket": BUCKET, "Key": v["Key"], "VersionId": v["VersionId"]}
        obj = s3.get_object(**args)
        body = obj["Body"].read()
        versions.append(
            {
                "key": v["Key"],
                "version": v["VersionId"],
                "latest": v["IsLatest"],
                "etag": v["ETag"],
                "size": v["Size"],
                "modified": v["LastModified"],
                "body": body,
                "metadata": obj.get("Metadata"),
                "content_type": obj.get("ContentType"),
                "sse": obj.get("ServerSideEncryption"),
                "lock_mode": obj.get("ObjectLockMode"),
                "lock_until": obj.get("ObjectLockRetainUntilDate"),
                "legal_hold": obj.get("ObjectLockLegalHoldStatus"),
                "tags": s3.get_object_tagging(**args)["TagSet"],
            }
        )
    markers = [
        (m["Key"], m["VersionId"], m["IsLatest"], m["LastModified"])
        for m in listing.get("DeleteMarkers", [])
    ]
    return {
        "versions": versions,
        "markers": markers,
        "versioning": s3.get_bucket_versioning(Bucket=BUCKET).get("Status"),
        "lock": s3.get_object_lock_configuration(Bucket=BUCKET)["ObjectLockConfiguration"],
        "policy": s3.get_bucket_policy(Bucket=BUCKET)["Policy"],
        "bucket_tags": s3.get_bucket_tagging(Bucket=BUCKET)["TagSet"],
        "encryption": s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"],
        "uploads": [
            (
                u["Key"],
                u["UploadId"],
                [
                    (p["PartNumber"], p["ETag"], p["Size"])
                    for p in s3.list_parts(Bucket=BUCKET, Key=u["Key"], UploadId=u["UploadId"])[
                        "Parts"
                    ]
                ],
            )
            for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
        ],
    }


def _fill(s3: Any) -> dict[str, Any]:
    """A bucket with Object Lock and objects of every kind the procedures write."""
    s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    s3.put_bucket_policy(
        Bucket=BUCKET,
        Policy='{"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": "*",'
        ' "Action": "s3:DeleteBucket", "Resource": "arn:aws:s3:::tbs-persist"}]}',
    )
    s3.put_bucket_tagging(Bucket=BUCKET, Tagging={"TagSet": [{"Key": "env", "Value": "sandbox"}]})
    s3.put_bucket_encryption(
        Bucket=BUCKET,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    for i in range(3):
        s3.put_object(
            Bucket=BUCKET,
            Key="journal/incident.jsonl",
            Body=f"entry {i}\n".encode() * (i + 1),
            ContentType="application/x-ndjson",
            Metadata={"sha256": f"{i:064d}", "entries": str(i + 1)},
            ServerSideEncryption="AES256",
        )
    locked = s3.put_object(
        Bucket=BUCKET,
        Key="evidence/case-1.tar.gz",
        Body=os.urandom(4096),
        ContentType="application/gzip",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=LOCKED_UNTIL,
        Tagging="kind=evidence",
    )
    held = s3.put_object(
        Bucket=BUCKET, Key="evidence/held.txt", Body=b"held", ObjectLockLegalHoldStatus="ON"
    )
    s3.put_object(Bucket=BUCKET, Key="gone.txt", Body=b"soon deleted")
    s3.delete_object(Bucket=BUCKET, Key="gone.txt")  # a delete marker on top of it
    # A multipart upload (a HeavyDB dump's path): parts of 5 MiB, moto's minimum.
    mp = s3.create_multipart_upload(Bucket=BUCKET, Key="backups/dump.tar.gz")
    part = os.urandom(5 * 1024 * 1024)
    etags = [
        s3.upload_part(
            Bucket=BUCKET,
            Key="backups/dump.tar.gz",
            UploadId=mp["UploadId"],
            PartNumber=n,
            Body=body,
        )["ETag"]
        for n, body in ((1, part), (2, b"tail"))
    ]
    s3.complete_multipart_upload(
        Bucket=BUCKET,
        Key="backups/dump.tar.gz",
        UploadId=mp["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]},
    )
    # An upload interrupted by the restart: its part is kept, it can be completed afterwards.
    pending = s3.create_multipart_upload(Bucket=BUCKET, Key="backups/pending.tar.gz")
    s3.upload_part(
        Bucket=BUCKET,
        Key="backups/pending.tar.gz",
        UploadId=pending["UploadId"],
        PartNumber=1,
        Body=b"first part",
    )
    return {
        "locked": locked["VersionId"],
        "held": held["VersionId"],
        "dump": part + b"tail",
        "pending": pending["UploadId"],
    }


def _assert_locked(s3: Any, key: str, version: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.delete_object(Bucket=BUCKET, Key=key, VersionId=version)
    assert exc.value.response["Error"]["Code"] == "AccessDenied"


def test_sigterm_then_start_keeps_every_version_body_and_retention(servers: _Servers) -> None:
    first = servers.start()
    s3 = _client(first)
    ids = _fill(s3)
    before = _picture(s3)
    assert len(before["versions"]) == 7 and len(before["markers"]) == 1
    assert len(before["uploads"]) == 1 and len(before["uploads"][0][2]) == 1
    assert before["lock"]["ObjectLockEnabled"] == "Enabled"
    servers.stop(first)  # no wait for the periodic snapshot: SIGTERM writes the last one

    second = servers.start()
    s3 = _client(second)
    after = _picture(s3)
    assert after == before
    by_key = {v["key"]: v for v in after["versions"] if v["latest"]}
    assert by_key["evidence/case-1.tar.gz"]["lock_mode"] == "COMPLIANCE"
    assert by_key["evidence/case-1.tar.gz"]["lock_until"] == LOCKED_UNTIL
    assert by_key["evidence/held.txt"]["legal_hold"] == "ON"
    assert by_key["journal/incident.jsonl"]["metadata"]["entries"] == "3"
    # moto still enforces the restored retention and legal hold
    _assert_locked(s3, "evidence/case-1.tar.gz", ids["locked"])
    _assert_locked(s3, "evidence/held.txt", ids["held"])
    # the multipart object: whole, with its multipart ETag (the picture compared it)
    dump = s3.get_object(Bucket=BUCKET, Key="backups/dump.tar.gz")
    assert dump["Body"].read() == ids["dump"] and dump["ETag"].endswith('-2"')
    # the interrupted upload completes from its restored part
    ((_, upload_id, parts),) = after["uploads"]
    s3.complete_multipart_upload(
        Bucket=BUCKET,
        Key="backups/pending.tar.gz",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e, _ in parts]},
    )

    # Changes after a restore are kept too, next to the restored objects (and a deleted
    # version's body is gone from the disk).
    s3.put_object(Bucket=BUCKET, Key="journal/incident.jsonl", Body=b"after restart")
    first_journal = [v for v in after["versions"] if v["key"] == "journal/incident.jsonl"][-1]
    s3.delete_object(
        Bucket=BUCKET, Key="journal/incident.jsonl", VersionId=first_journal["version"]
    )
    servers.stop(second)
    third = servers.start()
    s3 = _client(third)
    again = _picture(s3)
    pending = s3.get_object(Bucket=BUCKET, Key="backups/pending.tar.gz")["Body"].read()
    assert pending == b"first part" and again["uploads"] == []
    journal = [v for v in again["versions"] if v["key"] == "journal/incident.jsonl"]
    assert [v["body"] for v in journal] == [
        b"after restart",
        b"entry 2\n" * 3,
        b"entry 1\n" * 2,
    ]
    changed = ("journal/incident.jsonl", "backups/pending.tar.gz")
    assert [v for v in again["versions"] if v["key"] not in changed] == [
        v for v in after["versions"] if v["key"] not in changed
    ]
    blobs = list((servers.state_dir / "data" / "blobs").glob("*/*"))
    # 8 versions + the parts moto keeps for the 2 completed uploads (2 + 1): the deleted
    # version's body was removed (it would be a 12th)
    assert len(again["versions"]) == 8 and len(blobs) == 11
    _assert_locked(s3, "evidence/case-1.tar.gz", ids["locked"])


def test_kill_9_after_the_snapshot_interval_keeps_the_object(servers: _Servers) -> None:
    first = servers.start()
    s3 = _client(first)
    s3.create_bucket(Bucket=BUCKET)
    mtime = _snapshot_mtime(servers.state_dir)
    s3.put_object(Bucket=BUCKET, Key="backups/b1/manifest.json", Body=b'{"ok": true}')
    _wait_snapshot(servers.state_dir, mtime)  # at most the interval (2 s) after the put
    servers.kill(first)

    second = servers.start()
    s3 = _client(second)
    obj = s3.get_object(Bucket=BUCKET, Key="backups/b1/manifest.json")
    assert obj["Body"].read() == b'{"ok": true}'


def test_sigstop_then_sigcont_loses_nothing(servers: _Servers) -> None:
    """The `s3-down` fault pauses the process; the pending change is written after SIGCONT."""
    first = servers.start()
    s3 = _client(first)
    s3.create_bucket(Bucket=BUCKET)
    mtime = _snapshot_mtime(servers.state_dir)
    s3.put_object(Bucket=BUCKET, Key="evidence/paused.txt", Body=b"written before the pause")
    os.killpg(first.pid, signal.SIGSTOP)  # right after the put: its snapshot is still pending
    try:
        time.sleep(3)  # beyond the snapshot interval while frozen
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    _wait_snapshot(servers.state_dir, mtime)
    # the snapshot thread still works after the pause: a new change is snapshotted too
    mtime = _snapshot_mtime(servers.state_dir)
    s3.put_object(Bucket=BUCKET, Key="evidence/resumed.txt", Body=b"written after the pause")
    _wait_snapshot(servers.state_dir, mtime)
    servers.kill(first)

    second = servers.start()
    s3 = _client(second)
    assert s3.get_object(Bucket=BUCKET, Key="evidence/paused.txt")["Body"].read() == (
        b"written before the pause"
    )
    assert s3.get_object(Bucket=BUCKET, Key="evidence/resumed.txt")["Body"].read() == (
        b"written after the pause"
    )


def test_writes_during_snapshots_all_survive(servers: _Servers) -> None:
    """Snapshots taken while several clients write and delete never lose an acknowledged put."""
    first = servers.start()
    s3 = _client(first)
    s3.create_bucket(Bucket=BUCKET)
    acknowledged: dict[str, bytes] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        c = _client(first)
        try:
            deadline = time.monotonic() + 5  # over two snapshot intervals
            i = 0
            while time.monotonic() < deadline:
                key = f"w{n}/{i}"
                body = os.urandom(1000 + i)
                c.put_object(Bucket=BUCKET, Key=key, Body=body)
                if i % 3 == 2:  # deletes race with the snapshots' body writing too
                    c.delete_object(Bucket=BUCKET, Key=f"w{n}/{i - 1}")
                    with lock:
                        acknowledged.pop(f"w{n}/{i - 1}", None)
                with lock:
                    acknowledged[key] = body
                i += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    servers.stop(first)

    second = servers.start()
    s3 = _client(second)
    keys = {
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for o in page.get("Contents", [])
    }
    assert keys == set(acknowledged)
    for key in list(acknowledged)[::25]:
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == acknowledged[key]


def test_500_objects_restore_quickly_and_a_second_server_is_refused(servers: _Servers) -> None:
    first = servers.start()
    s3 = _client(first)
    s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    for i in range(500):
        s3.put_object(
            Bucket=BUCKET, Key=f"objects/{i:04d}", Body=os.urandom(2048), Metadata={"i": str(i)}
        )
    servers.stop(first)

    t0 = time.monotonic()
    second = servers.start()
    seconds = time.monotonic() - t0
    print(f"start with 500 objects: {seconds:.2f}s")
    s3 = _client(second)
    assert s3.list_objects_v2(Bucket=BUCKET)["KeyCount"] == 500
    assert s3.head_object(Bucket=BUCKET, Key="objects/0499")["Metadata"] == {"i": "499"}
    assert seconds < 30  # ~1-2 s measured on a loaded machine; moto's import dominates

    # Another server on the same directory would overwrite the snapshot: it refuses to start.
    with pytest.raises(ServiceError, match="another S3 store process"):
        start_moto(servers.state_dir)


def test_an_unreadable_snapshot_stops_the_start_and_is_left_alone(servers: _Servers) -> None:
    """Starting empty would lose every backup: the server refuses, and changes nothing."""
    first = servers.start()
    s3 = _client(first)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"kept on disk")
    servers.stop(first)
    data = servers.state_dir / "data"
    blobs = sorted(p.name for p in (data / "blobs").glob("*/*"))
    snapshot = data / SNAPSHOT
    snapshot.write_bytes(snapshot.read_bytes()[:40])  # as if truncated by a broken disk

    with pytest.raises(ServiceError, match="cannot restore the S3 state"):
        start_moto(servers.state_dir)
    assert len(snapshot.read_bytes()) == 40
    assert sorted(p.name for p in (data / "blobs").glob("*/*")) == blobs
