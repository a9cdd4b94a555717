"""Loopback servers for tests: a Common-Crawl-shaped HTTP server and an S3 server (moto in server mode).

Both serve the same tree, built from the bundled WARC files:

    crawl-data/<snapshot>/warc.paths.gz                            the listing (gzip, one path per line)
    crawl-data/<snapshot>/segments/<segment>/warc/<file>.warc.gz   the WARC files it lists

Everything binds 127.0.0.1. The fixtures in conftest.py start these and stop them.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import threading
from collections import Counter
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SNAPSHOT = "CC-MAIN-2024-33"


def build_cc_tree(root: Path, warcs: list[Path], snapshot: str = SNAPSHOT) -> list[str]:
    """Copy `warcs` into a Common Crawl layout under `root` and write the listing. Returns the listed
    relative paths, in listing order."""
    listed = []
    for index, warc in enumerate(warcs):
        relative = f"crawl-data/{snapshot}/segments/1722641{index:06d}.{index}/warc/{warc.name}"
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(warc, target)
        listed.append(relative)
    listing = root / f"crawl-data/{snapshot}/warc.paths.gz"
    listing.write_bytes(gzip.compress(("\n".join(listed) + "\n").encode()))
    return listed


class CCHttpServer:
    """A threaded stdlib HTTP server on 127.0.0.1 (free port) serving `root`, with byte ranges (fsspec
    reads files in ranges) and, on request, `503 SlowDown` answers to the next N requests, the way
    data.commoncrawl.org sheds load. Every request is logged as (method, path, status)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: list[tuple[str, str, int]] = []
        self.fail_next = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def statuses(self) -> Counter:
        with self._lock:
            return Counter(status for _, _, status in self.requests)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.fail_next = 0

    def start(self) -> CCHttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _take_failure(self) -> bool:
        with self._lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return True
            return False

    def _log(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.requests.append((method, path, status))

    def _handler_class(self):
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(server.root), **kwargs)

            def log_message(self, *args):  # keep test output clean
                pass

            def _answer(self, head_only: bool) -> None:
                path = self.path.split("?")[0]
                if server._take_failure():
                    body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                    server._log(self.command, path, 503)
                    self.send_response(HTTPStatus.SERVICE_UNAVAILABLE, "Slow Down")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if not head_only:
                        self.wfile.write(body)
                    return
                file = Path(self.translate_path(path))
                if not file.is_file():
                    server._log(self.command, path, 404)
                    self.send_error(HTTPStatus.NOT_FOUND, "Not Found")
                    return
                data = file.read_bytes()
                status, start, end = 200, 0, len(data)
                match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
                if match and data:
                    first, last = match.groups()
                    if first:
                        start, end = int(first), min(int(last) + 1 if last else len(data), len(data))
                    else:  # suffix range: the last N bytes
                        start = max(len(data) - int(last), 0)
                    status = 206
                server._log(self.command, path, status)
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(end - start))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
                self.end_headers()
                if not head_only:
                    self.wfile.write(data[start:end])

            def do_GET(self):
                self._answer(head_only=False)

            def do_HEAD(self):
                self._answer(head_only=True)

        return Handler


# Dummy credentials and no instance-metadata lookups: nothing may try to reach real AWS.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "x",
    "AWS_SECRET_ACCESS_KEY": "x",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


class MotoS3Server:
    """moto's S3 in server mode on 127.0.0.1 (free port), a real HTTP S3 endpoint for s3fs."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        self._saved_env = {name: os.environ.get(name) for name in [*S3_ENV, "AWS_ENDPOINT_URL"]}
        os.environ.update(S3_ENV)
        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)

    def start(self) -> MotoS3Server:
        self._server.start()
        # an S3 client given no endpoint (a command run without the storage options) reaches this server too,
        # never AWS
        os.environ["AWS_ENDPOINT_URL"] = self.endpoint_url
        return self

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.get_host_and_port()
        return f"http://{host}:{port}"

    def storage_options(self) -> dict:
        """input.storage_options for the pipeline: explicit endpoint, dummy keys, fixed region."""
        return {"s3": {"endpoint_url": self.endpoint_url, "key": "x", "secret": "x",
                       "client_kwargs": {"region_name": "us-east-1"}}}

    def upload_tree(self, bucket: str, root: Path) -> None:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id="x",
                              aws_secret_access_key="x", region_name="us-east-1")
        client.create_bucket(Bucket=bucket)
        for path in sorted(Path(root).rglob("*")):
            if path.is_file():
                client.upload_file(str(path), bucket, path.relative_to(root).as_posix())

    def stop(self) -> None:
        self._server.stop()
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class S3FaultProxy:
    """A loopback HTTP proxy in front of an S3 server that answers `503 SlowDown` to the next N requests it is
    told to fail, and forwards every other request unchanged (moto has no switch to throttle: this is the one
    fault here that a real server cannot be made to produce on demand)."""

    def __init__(self, upstream: str):
        import http.client
        from urllib.parse import urlsplit

        target = urlsplit(upstream)
        self.failures_left = 0
        self.failed: Counter = Counter()  # method -> SlowDown answers given
        self.requests = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(SimpleHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self):
                body = self._body()
                with proxy.lock:
                    proxy.requests += 1
                    fail = proxy.failures_left > 0
                    if fail:
                        proxy.failures_left -= 1
                        proxy.failed[self.command] += 1
                if fail:
                    payload = (b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code>"
                               b"<Message>Please reduce your request rate.</Message></Error>")
                    self.send_response(HTTPStatus.SERVICE_UNAVAILABLE)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("transfer-encoding", "connection")}
                headers["Content-Length"] = str(len(body))
                connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                try:
                    connection.request(self.command, self.path, body=body, headers=headers)
                    answer = connection.getresponse()
                    data = answer.read()
                finally:
                    connection.close()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(name, value)
                # a HEAD answer's length is the object's (its body is empty)
                length = answer.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> S3FaultProxy:
        self._thread.start()
        return self

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def fail_next(self, count: int) -> None:
        with self.lock:
            self.failures_left = count

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
