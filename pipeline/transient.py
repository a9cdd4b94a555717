"""Which errors are worth another try, and the one retry loop: HTTP 408/429/5xx, S3 SlowDown and friends, a
dropped or refused connection, a timeout. Used for reading inputs (WARCs over HTTP or S3) and for the run
folder on object storage (`pipeline.store`)."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class TransientError(Exception):
    """An error worth retrying (HTTP 429/5xx, S3 SlowDown, a dropped connection)."""


# HTTP answers worth retrying, and the S3 error codes that mean the same
TRANSIENT_HTTP_STATUS = frozenset({408, 429, 500, 502, 503, 504})
TRANSIENT_S3_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
                                "ServiceUnavailable", "InternalError", "RequestLimitExceeded"})
_TRANSIENT_MARKERS = ("SlowDown", "Service Unavailable", "Too Many Requests", "Connection reset",
                      "ServerDisconnected", "ClientConnectorError", "ClientOSError", "ClientPayloadError",
                      "Timeout", "timed out", "RemoteProtocolError", "ConnectError")
_URL = re.compile(r"\S+://\S+")


def _causes(exc: BaseException):
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_transient(exc: BaseException) -> bool:
    """Whether an error is worth retrying: HTTP 408/429/5xx, S3 SlowDown and friends, a dropped or
    refused connection, a timeout. The chain of causes is searched because fsspec's HTTP filesystem
    reports any failed status, 503 included, as FileNotFoundError(url) raised from the HTTP error.
    An HTTP status found in the chain decides; message text is only a fallback, with URLs removed
    (a port or path may hold "503")."""
    for error in _causes(exc):
        if isinstance(error, TransientError | ConnectionError | TimeoutError):
            return True
        status = getattr(error, "status", None)
        if isinstance(status, int) and 100 <= status < 600:
            return status in TRANSIENT_HTTP_STATUS
        response = getattr(error, "response", None)
        if isinstance(response, dict):  # botocore ClientError
            code = str(response.get("Error", {}).get("Code", ""))
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code or status:
                return code in TRANSIENT_S3_CODES or status in TRANSIENT_HTTP_STATUS
        text = _URL.sub("", f"{type(error).__name__}: {error}")
        if any(marker in text for marker in _TRANSIENT_MARKERS):
            return True
    return False


def http_status(exc: BaseException) -> int | None:
    """The HTTP status somewhere in an error's chain of causes (aiohttp, botocore), if any."""
    for error in _causes(exc):
        status = getattr(error, "status", None)
        if isinstance(status, int) and 100 <= status < 600:
            return status
        response = getattr(error, "response", None)
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if isinstance(status, int):
                return status
    return None


def describe_error(exc: BaseException) -> str:
    """What went wrong, for a decision's detail: the HTTP status when there was one (fsspec reports a 503 as
    FileNotFoundError(url)), else the error's type and message."""
    status = http_status(exc)
    if status is not None:
        from http import HTTPStatus

        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        return f"HTTP {status} {phrase.lower()}".rstrip() + f" ({type(exc).__name__})"
    if isinstance(exc, FileNotFoundError):
        return f"file not found ({exc})"
    return f"{type(exc).__name__}: {exc}"


def unreadable_is_transient(exc: BaseException) -> bool:
    """Whether a source that could not be read at all is worth another try on the next run: an HTTP status
    decides when there is one (429/5xx yes, 404/403 no); else a timeout, a reset connection, a local file not
    there (yet) or not readable, a full disk while downloading."""
    import errno

    status = http_status(exc)
    if status is not None:
        return status in TRANSIENT_HTTP_STATUS
    if is_transient(exc) or isinstance(exc, FileNotFoundError | PermissionError):
        return True
    return getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT)


def retry(call: Callable[[], T], *, attempts: int, backoff_s: float, what: str,
          sleep: Callable[[float], None] = time.sleep) -> T:
    """Call `call`, retrying transient errors with exponential back-off and jitter."""
    for attempt in range(attempts + 1):
        try:
            return call()
        except Exception as exc:
            if attempt >= attempts or not is_transient(exc):
                raise
            sleep(backoff_s * (2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


