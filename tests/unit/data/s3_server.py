"""A real S3 server (moto's) on a free port of 127.0.0.1, with authentication on.

The server starts with ``INITIAL_NO_AUTH_ACTION_COUNT``: its first IAM calls create a user
and an access key allowed s3:*, after which every request must be signed with that key, so
wrong credentials are refused as on AWS. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

_SETUP_CALLS = 3  # create_user, put_user_policy, create_access_key
_POLICY = {"Version": "2012-10-17",
           "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    key_id: str
    secret: str

    def env(self) -> dict[str, str]:
        """The environment a client of this server needs (credentials from env only)."""
        return {"S3_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.key_id,
                "AWS_SECRET_ACCESS_KEY": self.secret, "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true", "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
                # Never the machine's own ~/.aws files or profile.
                "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.key_id, aws_secret_access_key=self.secret)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(proc: subprocess.Popen, endpoint: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with code {proc.returncode}")
        try:
            opener.open(f"{endpoint}/moto-api/", timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not answer on {endpoint} in {timeout} s")
            time.sleep(0.1)


def _make_user(endpoint: str) -> tuple[str, str]:
    import boto3

    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="setup", aws_secret_access_key="setup")
    iam.create_user(UserName="draw")
    iam.put_user_policy(UserName="draw", PolicyName="s3", PolicyDocument=json.dumps(_POLICY))
    key = iam.create_access_key(UserName="draw")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


@contextmanager
def running_s3_server() -> Iterator[S3Server]:
    """Start moto's server, yield it with a working access key, stop it afterwards."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install "
                                              "-e '.[dev]')")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(_SETUP_CALLS)}
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_until_up(proc, endpoint)
        key_id, secret = _make_user(endpoint)
        yield S3Server(endpoint, key_id, secret)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def s3_environment() -> Iterator[S3Server]:
    """A running server, with this process's environment pointing at it (credentials from
    the environment only, none of the machine's own AWS settings) until the block ends."""
    with running_s3_server() as server, pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
            mp.delenv(name, raising=False)
        for name, value in server.env().items():
            mp.setenv(name, value)
        yield server


def upload_tree(server: S3Server, local: str, url: str) -> None:
    """Copy a local data root to ``url`` (s3://bucket/prefix, bucket created), manifest last.
    The client's environment must point at ``server``."""
    from draw_megatron.data.remote import bucket_and_key, upload_tree as upload

    server.client().create_bucket(Bucket=bucket_and_key(url)[0])
    upload(local, url, last="manifest.json")
