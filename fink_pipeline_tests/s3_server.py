"""A local S3-compatible server for tests: moto's server (`python -m moto.server`, from PyPI's
`moto` with flask), started on a free loopback port in its own process and stopped by the test.

Why moto: it is on PyPI (MinIO's server is a Go binary that PyPI does not carry), speaks the S3
HTTP API that delta-rs, pyarrow and polars use (signed requests, multipart uploads, listing,
conditional puts with `If-None-Match`, which delta-rs's S3 commits rely on), and starts in about a
second. It keeps objects in memory: a server per test module, one bucket per test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field

ACCESS_KEY = "fink-test-key"
SECRET_KEY = "fink-test-secret"
REGION = "us-east-1"


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class S3Server:
    """A running moto S3 server: its endpoint, and the options and environment to reach it."""

    endpoint: str
    process: subprocess.Popen = field(repr=False)

    @property
    def storage_options(self) -> dict[str, str]:
        """delta-rs options of the server, without credentials (those come from `credentials_env`)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": REGION, "AWS_ALLOW_HTTP": "true"}

    @property
    def credentials_env(self) -> dict[str, str]:
        """The credential variables a process needs to reach the server."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}

    def filesystem(self):
        """A pyarrow S3FileSystem of the server (creates buckets)."""
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(endpoint_override=self.endpoint, scheme="http", region=REGION,
                                 access_key=ACCESS_KEY, secret_key=SECRET_KEY, allow_bucket_creation=True,
                                 allow_bucket_deletion=True)

    def create_bucket(self, name: str) -> str:
        """Create bucket `name`; returns `s3://name`."""
        self.filesystem().create_dir(name)
        return f"s3://{name}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_s3_server(timeout_s: float = 30.0) -> S3Server:
    """Start moto's S3 server on a free loopback port and wait until it answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    server = S3Server(endpoint, process)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).read()
            return server
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"moto's S3 server did not start on {endpoint} (exit code {process.poll()})")
            time.sleep(0.1)
