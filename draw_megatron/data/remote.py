"""Data roots on object storage (``s3://bucket/prefix``, ``gs://...``): URLs, reads, uploads.

Shards move through the MDS library's own storage layer (its uploaders when converting, its
downloaders and cache when reading); this module adds what the library leaves out: reading
small objects (manifest.json, the tokenizer, index files) with errors that name the bucket
and key, one uploader shared by every domain of a conversion (``Publisher``), and deleting
an old dataset before ``--overwrite`` replaces it.

Credentials come only from the environment or the standard AWS files (boto3's own chain);
the S3 endpoint from ``S3_ENDPOINT_URL`` (what the library reads) or ``AWS_ENDPOINT_URL``
(what boto3 reads). No message here ever holds a credential.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
import urllib.parse
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class RemoteError(ValueError):
    """An object-storage read or write that failed; the message is one line naming the URL.
    ``missing``: the bucket exists but the object does not."""

    def __init__(self, message: str, missing: bool = False):
        super().__init__(message)
        self.missing = missing


def scheme(path: str) -> str:
    """The URL scheme of ``path`` ('s3', 'gs', ...); '' for a local path."""
    found = urllib.parse.urlparse(path).scheme
    # One letter is a Windows drive, not a scheme; file:// is local.
    return found if len(found) > 1 and found != "file" else ""


def is_remote(path: str) -> bool:
    """Whether ``path`` is a URL of object storage rather than a local path."""
    return bool(scheme(path))


def join(root: str, *parts: str) -> str:
    """``root`` joined with ``parts``: '/'-separated for URLs, os.path for local paths."""
    if is_remote(root):
        return posixpath.join(root.rstrip("/"), *parts)
    return os.path.join(root, *parts)


def bucket_and_key(url: str) -> tuple[str, str]:
    """('bucket', 'path/in/bucket') of ``scheme://bucket/path/in/bucket``."""
    parsed = urllib.parse.urlparse(url)
    return parsed.netloc, parsed.path.lstrip("/")


def s3_client() -> Any:
    """A boto3 S3 client on the configured endpoint (None: boto3's default, which itself
    honours AWS_ENDPOINT_URL)."""
    from boto3.session import Session

    endpoint = os.environ.get("S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL") or None
    return Session().client("s3", endpoint_url=endpoint)


def describe_error(exc: BaseException, url: str) -> str:
    """One line saying why an access to ``url`` failed, without any credential."""
    from botocore.exceptions import (ClientError, EndpointConnectionError, NoCredentialsError,
                                     PartialCredentialsError)

    bucket, key = bucket_and_key(url)
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code == "NoSuchBucket":
            return f"bucket {bucket!r} does not exist (reading {url})"
        if code in ("NoSuchKey", "404"):
            return f"no object {key!r} in bucket {bucket!r} ({url})"
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403",
                    "ExpiredToken", "InvalidToken"):
            return (f"access to {url} refused ({code}): check the credentials "
                    "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws)")
        return f"cannot access {url}: {code or type(exc).__name__}"
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return (f"no usable credentials to read {url}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE / ~/.aws/credentials")
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach the S3 endpoint for {url} ({exc.kwargs.get('endpoint_url')})"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"cannot access {url}: {type(exc).__name__}{': ' + first if first else ''}"


def _storage_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError, OSError, ValueError)


def read_bytes(url: str, client: Any = None) -> bytes:
    """The content of one object. S3 is read with boto3 (for errors that name the bucket
    and key; ``client`` reuses a client); other schemes through the library's downloader."""
    try:
        if scheme(url) == "s3":
            bucket, key = bucket_and_key(url)
            client = client or s3_client()
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        with tempfile.TemporaryDirectory(prefix="draw-remote-") as tmp:
            local = os.path.join(tmp, posixpath.basename(url) or "object")
            _library_download(url, local)
            with open(local, "rb") as fh:
                return fh.read()
    except _storage_errors() as exc:
        raise RemoteError(describe_error(exc, url), missing=_is_missing(exc)) from None


def _is_missing(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    return (isinstance(exc, ClientError)
            and exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"))


def download(url: str, local: str, client: Any = None) -> None:
    """Copy one object to ``local``, atomically (a reader never sees a partial file);
    ``client``: an S3 client to reuse (building one costs a few tenths of a second)."""
    os.makedirs(os.path.dirname(os.path.abspath(local)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(local)}.tmp-",
                               dir=os.path.dirname(os.path.abspath(local)))
    os.close(fd)
    try:
        with open(tmp, "wb") as fh:
            fh.write(read_bytes(url, client))
        os.replace(tmp, local)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def download_many(pairs: list[tuple[str, str]], workers: int = 16) -> None:
    """``download(url, local)`` for each pair, ``workers`` at a time, over one S3 client
    (other schemes: one after the other through the library)."""
    if not pairs:
        return
    client = s3_client() if scheme(pairs[0][0]) == "s3" else None
    if client is None:
        workers = 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(download, url, local, client) for url, local in pairs]:
            future.result()


def _library_download(url: str, local: str) -> None:
    from streaming.base.storage.download import CloudDownloader

    CloudDownloader.direct_download(url, local)


def exists(url: str) -> bool:
    """Whether an object exists at ``url`` (a missing bucket raises RemoteError)."""
    try:
        read_bytes(url)
    except RemoteError as exc:
        if exc.missing:
            return False
        raise
    return True


def list_keys(root: str) -> list[str]:
    """Keys under the prefix ``root`` (S3 only), as full keys."""
    bucket, prefix = bucket_and_key(root)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    try:
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                       Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]
    except _storage_errors() as exc:
        raise RemoteError(describe_error(exc, root)) from None


def delete_prefix(root: str, first: str) -> None:
    """Delete every object under ``root`` (S3 only), the key ``first`` before all others
    (the manifest: once it is gone no reader takes the rest for a dataset)."""
    bucket, _ = bucket_and_key(root)
    client = s3_client()
    try:
        client.delete_object(Bucket=bucket, Key=bucket_and_key(join(root, first))[1])
        keys = list_keys(root)
        for i in range(0, len(keys), 1000):  # the API's limit per request
            client.delete_objects(Bucket=bucket, Delete={
                "Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
    except _storage_errors() as exc:
        raise RemoteError(describe_error(exc, root)) from None


def upload_tree(local_root: str, url: str, last: str) -> None:
    """Copy every file under ``local_root`` to the S3 prefix ``url``, the file ``last``
    after all others (a data root: its manifest, so readers never see a partial copy)."""
    bucket, prefix = bucket_and_key(url)
    client = s3_client()
    files = sorted(os.path.relpath(os.path.join(base, f), local_root)
                   for base, _, names in os.walk(local_root) for f in names)
    for rel in sorted(files, key=lambda r: r == last):  # stable: ``last`` moves to the end
        key = posixpath.join(prefix, *rel.split(os.sep))
        try:
            client.upload_file(os.path.join(local_root, rel), bucket, key)
        except _storage_errors() as exc:
            raise RemoteError(describe_error(exc, f"s3://{bucket}/{key}")) from None


class Publisher:
    """Uploads files of a local staging folder to the same relative paths under a remote
    root, through ONE of the MDS library's uploaders and one thread pool, deleting each
    local copy once it is uploaded.

    The library's writers build an uploader (a storage client and a thread pool) per
    dataset; with one dataset per domain and split that cost ~0.5 s and ~20 MB apiece.
    """

    def __init__(self, stage: str, remote_root: str, workers: int = 8):
        from streaming.base.storage.upload import CloudUploader

        self.remote_root, self.max_pending = remote_root, 4 * workers
        try:
            self._uploader = CloudUploader.get(out=(stage, remote_root), keep_local=False)
        except _storage_errors() as exc:
            raise RemoteError(describe_error(exc, remote_root)) from None
        self._pool = ThreadPoolExecutor(max_workers=workers)
        self._pending: list[tuple[str, Future]] = []

    def submit(self, rel_path: str) -> None:
        """Upload ``stage/rel_path`` in the background (waits while too many are queued, so
        the staging folder stays small)."""
        self._pending.append((rel_path, self._pool.submit(self._uploader.upload_file,
                                                          rel_path)))
        while len(self._pending) > self.max_pending:
            self._result(*self._pending.pop(0))

    def wait(self) -> None:
        """Block until every submitted file is uploaded; the first failure raises."""
        while self._pending:
            self._result(*self._pending.pop(0))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _result(self, rel_path: str, future: Future) -> None:
        try:
            future.result()
        except _storage_errors() as exc:
            raise RemoteError(describe_error(exc, join(self.remote_root, rel_path))) from None
