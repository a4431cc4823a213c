"""S3 object storage (backups, evidence, the incident journal) through boto3.

Every object is written with its sha256 as object metadata (`sha256`) and with the configured
server-side encryption, and is verified against that sha256 when read back. Keys given to the
methods are relative to the configured prefix (`<prefix>/<key>` in the bucket). Network calls
are bounded by `timeout_s` (connect and read) with a bounded number of retries. boto3 and
botocore are imported in this module only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from tbs_emergency.config import StorageConfig
from tbs_emergency.connectors._common import probe, redact_text
from tbs_emergency.connectors.base import Probe, StoredObject
from tbs_emergency.errors import (
    ConnectorError,
    IntegrityError,
    NotFound,
    Refused,
    TimedOut,
    Unreachable,
)

SHA256_META = "sha256"
_CHUNK = 1024 * 1024
_MAX_ATTEMPTS = 3
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NoSuchBucket", "NotFound", "NoSuchUpload"}
_REFUSED_CODES = {
    "400",
    "401",
    "403",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidRequest",
    "InvalidArgument",
    "InvalidBucketName",
    "KMS.NotFoundException",
    "KMSAccessDenied",
    "ObjectLocked",
    "MethodNotAllowed",
    "BucketAlreadyOwnedByYou",
}


def sha256_file(path: str | os.PathLike[str]) -> tuple[str, int]:
    """(hex sha256, size) of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


class S3ObjectStore:
    """The configured bucket and prefix."""

    def __init__(self, config: StorageConfig, name: str = "s3") -> None:
        self.config = config
        self.name = name
        self._client: Any = None
        self._lock = threading.Lock()

    # -- client -------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        c = self.config
        session_kwargs: dict[str, Any] = {"region_name": c.region}
        if c.access_key_id is not None and c.secret_access_key is not None:
            session_kwargs["aws_access_key_id"] = c.access_key_id.get_secret_value()
            session_kwargs["aws_secret_access_key"] = c.secret_access_key.get_secret_value()
        session = boto3.session.Session(**session_kwargs)
        config = Config(
            connect_timeout=c.timeout_s,
            read_timeout=c.timeout_s,
            retries={"max_attempts": _MAX_ATTEMPTS, "mode": "standard"},
            s3={"addressing_style": "path"} if c.endpoint_url else None,
        )
        return session.client("s3", endpoint_url=c.endpoint_url, config=config)

    def full_key(self, key: str) -> str:
        key = key.lstrip("/")
        if not key:
            raise ValueError("an object key cannot be empty")
        return f"{self.config.prefix}/{key}" if self.config.prefix else key

    def _relative(self, full_key: str) -> str:
        p = self.config.prefix
        return full_key[len(p) + 1 :] if p and full_key.startswith(p + "/") else full_key

    def _sse_args(self) -> dict[str, str]:
        c = self.config
        if c.sse == "none":
            return {}
        args: dict[str, str] = {"ServerSideEncryption": c.sse}
        if c.sse == "aws:kms" and c.kms_key_id:
            args["SSEKMSKeyId"] = c.kms_key_id
        return args

    # -- errors -------------------------------------------------------------------------------

    def _error(self, operation: str, exc: BaseException) -> ConnectorError:
        from botocore import exceptions as bx

        secrets = []
        for s in (self.config.access_key_id, self.config.secret_access_key):
            with contextlib.suppress(Exception):
                secrets.append(s.get_secret_value() if s is not None else None)
        where = redact_text(self.config.endpoint_url or f"AWS S3 ({self.config.region})")
        if isinstance(exc, bx.ConnectTimeoutError | bx.ReadTimeoutError | TimeoutError):
            return TimedOut(
                self.name,
                operation,
                f"no answer from {where} within {self.config.timeout_s:g}s"
                f" ({_MAX_ATTEMPTS} attempts)",
            )
        if isinstance(exc, bx.EndpointConnectionError | bx.ConnectionClosedError):
            return Unreachable(self.name, operation, f"cannot connect to {where}")
        if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
            return Refused(self.name, operation, "no usable credentials configured")
        if isinstance(exc, bx.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            message = redact_text(str(err.get("Message") or code or status), secrets)
            detail = f"{code or status}: {message}" if message != code else code
            if code in _NOT_FOUND_CODES or status == "404":
                return NotFound(self.name, operation, detail)
            if code in _REFUSED_CODES or status in ("400", "401", "403", "405", "409"):
                return Refused(self.name, operation, detail)
            return ConnectorError(self.name, operation, detail)
        if isinstance(exc, bx.BotoCoreError):
            return ConnectorError(self.name, operation, redact_text(str(exc), secrets))
        return ConnectorError(
            self.name, operation, redact_text(f"{type(exc).__name__}: {exc}", secrets)
        )

    def _where_key(self, key: str) -> str:
        return f"s3://{self.config.bucket}/{self.full_key(key)}"

    # -- writes -------------------------------------------------------------------------------

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> StoredObject:
        """Write bytes with their sha256 in metadata and server-side encryption."""
        digest = hashlib.sha256(data).hexdigest()
        meta = {**(metadata or {}), SHA256_META: digest}
        try:
            self.client.put_object(
                Bucket=self.config.bucket,
                Key=self.full_key(key),
                Body=data,
                Metadata=meta,
                **self._sse_args(),
            )
        except Exception as exc:
            raise self._error(f"put {self._where_key(key)}", exc) from None
        return StoredObject(
            key=key,
            size=len(data),
            sha256=digest,
            metadata=meta,
            sse=self._sse_args().get("ServerSideEncryption"),
        )

    def put_file(
        self, key: str, path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None
    ) -> StoredObject:
        """Upload a file, streamed, multipart above `multipart_threshold_mb`.

        The sha256 is computed in a streaming pass before the upload (S3 needs the metadata
        when the upload starts); a file that changes while it is uploaded is refused.
        """
        from boto3.s3.transfer import TransferConfig

        before = os.stat(path)
        digest, size = sha256_file(path)
        threshold = self.config.multipart_threshold_mb * 1024 * 1024
        transfer = TransferConfig(
            multipart_threshold=threshold,
            multipart_chunksize=max(threshold, 5 * 1024 * 1024),
            max_concurrency=4,
        )
        meta = {**(metadata or {}), SHA256_META: digest}
        where = self._where_key(key)
        try:
            self.client.upload_file(
                str(path),
                self.config.bucket,
                self.full_key(key),
                ExtraArgs={"Metadata": meta, **self._sse_args()},
                Config=transfer,
            )
        except Exception as exc:
            raise self._error(f"upload {path} to {where}", exc) from None
        after = os.stat(path)
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            raise IntegrityError(
                self.name, f"upload {path} to {where}", "the file changed while it was uploaded"
            )
        stored = self.head(key)
        if stored.size != size or stored.sha256 != digest:
            raise IntegrityError(
                self.name,
                f"upload {path} to {where}",
                f"stored object has size {stored.size} and sha256 {stored.sha256},"
                f" expected {size} and {digest}",
            )
        return stored

    def put_locked(
        self,
        key: str,
        data: bytes,
        *,
        mode: str,
        retain_until: datetime,
        metadata: Mapping[str, str] | None = None,
    ) -> StoredObject:
        """Write bytes under S3 Object Lock (mode COMPLIANCE or GOVERNANCE until retain_until):
        that version cannot be deleted or overwritten before then. The bucket must have Object
        Lock enabled (`object_lock_enabled`)."""
        digest = hashlib.sha256(data).hexdigest()
        meta = {**(metadata or {}), SHA256_META: digest}
        try:
            resp = self.client.put_object(
                Bucket=self.config.bucket,
                Key=self.full_key(key),
                Body=data,
                Metadata=meta,
                ObjectLockMode=mode,
                ObjectLockRetainUntilDate=retain_until,
                **self._sse_args(),
            )
        except Exception as exc:
            raise self._error(f"put locked {self._where_key(key)}", exc) from None
        return StoredObject(
            key=key,
            size=len(data),
            sha256=digest,
            metadata=meta,
            sse=self._sse_args().get("ServerSideEncryption"),
            version_id=resp.get("VersionId"),
            lock_mode=mode,
            retain_until=retain_until,
        )

    def object_lock_enabled(self) -> bool:
        """Whether the bucket has S3 Object Lock enabled (set when the bucket was created)."""
        try:
            resp = self.client.get_object_lock_configuration(Bucket=self.config.bucket)
        except Exception as exc:
            err = self._error(f"read the Object Lock configuration of {self.config.bucket}", exc)
            if "ObjectLockConfigurationNotFound" in err.detail:
                return False
            raise err from None
        conf = resp.get("ObjectLockConfiguration") or {}
        return conf.get("ObjectLockEnabled") == "Enabled"

    def delete_version(self, key: str, version_id: str) -> None:
        """Delete one version for good (refused while Object Lock retains it)."""
        try:
            self.client.delete_object(
                Bucket=self.config.bucket, Key=self.full_key(key), VersionId=version_id
            )
        except Exception as exc:
            raise self._error(f"delete version of {self._where_key(key)}", exc) from None

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.config.bucket, Key=self.full_key(key))
        except Exception as exc:
            raise self._error(f"delete {self._where_key(key)}", exc) from None

    # -- reads --------------------------------------------------------------------------------

    def get(self, key: str, *, verify: bool = True) -> bytes:
        """The object's bytes, verified against its recorded sha256 (IntegrityError if not)."""
        where = self._where_key(key)
        try:
            resp = self.client.get_object(Bucket=self.config.bucket, Key=self.full_key(key))
            data = resp["Body"].read()
        except Exception as exc:
            raise self._error(f"get {where}", exc) from None
        if verify:
            expected = (resp.get("Metadata") or {}).get(SHA256_META)
            self._verify(where, expected, hashlib.sha256(data).hexdigest())
        return bytes(data)

    def get_file(
        self, key: str, path: str | os.PathLike[str], *, verify: bool = True
    ) -> StoredObject:
        """Download to path (written beside it, verified, then renamed into place)."""
        where = self._where_key(key)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        stored = self.head(key)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        os.close(fd)
        try:
            try:
                self.client.download_file(self.config.bucket, self.full_key(key), tmp)
            except Exception as exc:
                raise self._error(f"download {where}", exc) from None
            if verify:
                digest, _ = sha256_file(tmp)
                self._verify(where, stored.sha256, digest)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return stored

    def _verify(self, where: str, expected: str | None, actual: str) -> None:
        if not expected:
            raise IntegrityError(self.name, f"verify {where}", "the object has no recorded sha256")
        if expected != actual:
            raise IntegrityError(
                self.name,
                f"verify {where}",
                f"sha256 of the content is {actual}, the object records {expected}",
            )

    def head(self, key: str) -> StoredObject:
        try:
            resp = self.client.head_object(Bucket=self.config.bucket, Key=self.full_key(key))
        except Exception as exc:
            raise self._error(f"head {self._where_key(key)}", exc) from None
        meta = dict(resp.get("Metadata") or {})
        return StoredObject(
            key=key,
            size=int(resp.get("ContentLength", 0)),
            sha256=meta.get(SHA256_META),
            last_modified=resp.get("LastModified"),
            metadata=meta,
            sse=resp.get("ServerSideEncryption"),
            version_id=resp.get("VersionId"),
            lock_mode=resp.get("ObjectLockMode"),
            retain_until=resp.get("ObjectLockRetainUntilDate"),
        )

    def exists(self, key: str) -> bool:
        try:
            self.head(key)
        except NotFound:
            return False
        return True

    def list(self, prefix: str = "", *, page_size: int = 1000) -> Iterator[StoredObject]:
        """Objects whose relative key starts with prefix, all pages, in key order."""
        base = self.config.prefix + "/" if self.config.prefix else ""
        full_prefix = base + prefix.lstrip("/")
        operation = f"list s3://{self.config.bucket}/{full_prefix}"
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.config.bucket,
                Prefix=full_prefix,
                PaginationConfig={"PageSize": page_size},
            )
            for page in pages:
                for item in page.get("Contents", []):
                    yield StoredObject(
                        key=self._relative(item["Key"]),
                        size=int(item.get("Size", 0)),
                        last_modified=item.get("LastModified"),
                    )
        except ConnectorError:
            raise
        except Exception as exc:
            raise self._error(operation, exc) from None

    # -- bucket -------------------------------------------------------------------------------

    def ping(self) -> Probe:
        def check() -> str:
            try:
                self.client.head_bucket(Bucket=self.config.bucket)
            except Exception as exc:
                raise self._error(f"head bucket {self.config.bucket}", exc) from None
            where = redact_text(self.config.endpoint_url or "AWS")
            return f"bucket {self.config.bucket} at {where}"

        return probe(self.name, check)

    def ensure_bucket(self) -> bool:
        """Create the bucket if it does not exist (sandbox use); True if it was created."""
        bucket = self.config.bucket
        try:
            self.client.head_bucket(Bucket=bucket)
            return False
        except Exception as exc:
            err = self._error(f"head bucket {bucket}", exc)
            if not isinstance(err, NotFound):
                raise err from None
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if self.config.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.config.region}
        try:
            self.client.create_bucket(**kwargs)
        except Exception as exc:
            err = self._error(f"create bucket {bucket}", exc)
            if "BucketAlreadyOwnedByYou" in err.detail:
                return False
            raise err from None
        return True
