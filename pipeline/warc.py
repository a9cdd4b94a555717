"""Reading WARC files record by record, surviving damage, and decoding HTTP responses.

fastwarc reads the records (WARC/1.0, 1.1 and ClueWeb's 0.18). It stops at the first damaged spot (a
truncated gzip member, garbage between records, a Content-Length that lies), so `iter_warc` resumes at
the next record boundary and reports each unreadable region as a `WarcDamage` item: the caller turns it
into an errored decision naming the file and the byte offsets. Nothing after the damage is lost.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fastwarc.warc import ArchiveIterator, WarcRecordType

GZIP_MAGIC = b"\x1f\x8b\x08"
WARC_MAGIC = b"WARC/"


@dataclass
class RawRecord:
    record_type: str
    record_id: str
    url: str | None
    date: str | None
    offset: int
    block: bytes
    content_length: int
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        return len(self.block) < self.content_length


@dataclass
class WarcDamage:
    offset: int
    resumed_at: int | None
    message: str


@dataclass
class HttpResponse:
    status: int | None
    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def charset(self) -> str | None:
        match = re.search(r"charset\s*=\s*[\"']?([\w.:-]+)", self.headers.get("content-type", ""), re.I)
        return match.group(1) if match else None


_RECORD_TYPE_NAMES = ("warcinfo", "response", "resource", "request", "metadata", "revisit", "conversion",
                      "continuation")


def _record_type_name(record_type: WarcRecordType) -> str:
    for name in _RECORD_TYPE_NAMES:
        if record_type == getattr(WarcRecordType, name):
            return name
    return "unknown"


def _clean_uri(value: str | None) -> str | None:
    # wget writes WARC-Target-URI as <http://...>
    return value.strip().removeprefix("<").removesuffix(">") if value else value


def _next_boundary(handle, start: int, gzipped: bool, chunk: int = 1 << 20) -> int | None:
    """Offset of the next gzip member (or `WARC/` header line) at or after `start`."""
    magic = GZIP_MAGIC if gzipped else WARC_MAGIC
    position = start
    while True:
        handle.seek(position)
        data = handle.read(chunk + len(magic))
        if not data:
            return None
        index = data.find(magic)
        while index != -1:
            candidate = position + index
            if not gzipped:
                if candidate == 0 or data[index - 1: index] == b"\n":
                    return candidate
            else:
                # a real member header inflates; random bytes matching the magic rarely do
                try:
                    zlib.decompressobj(wbits=31).decompress(data[index: index + 4096])
                    return candidate
                except zlib.error:
                    pass
            index = data.find(magic, index + 1)
        if len(data) < chunk + len(magic):
            return None
        position += chunk


def iter_warc(path: str | Path) -> Iterator[RawRecord | WarcDamage]:
    """Yield every record of a WARC file (gzip or not), and a WarcDamage for each unreadable region."""
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
        handle.seek(0)
        position = 0
        while True:
            handle.seek(position)
            last_offset = position - 1
            try:
                for record in ArchiveIterator(handle, parse_http=False, record_types=WarcRecordType.any_type):
                    last_offset = record.stream_pos
                    headers = dict(record.headers)
                    block = record.reader.read()
                    yield RawRecord(
                        record_type=_record_type_name(record.record_type),
                        record_id=headers.get("WARC-Record-ID", "").strip(),
                        url=_clean_uri(headers.get("WARC-Target-URI")),
                        date=headers.get("WARC-Date"),
                        offset=record.stream_pos,
                        block=block,
                        content_length=record.content_length,
                        headers=headers,
                    )
                return
            except OSError as exc:
                resume = _next_boundary(handle, last_offset + 1, gzipped)
                yield WarcDamage(offset=max(last_offset, position), resumed_at=resume, message=str(exc))
                if resume is None or resume <= position:
                    return
                position = resume


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    position = 0
    while position < len(body):
        end = body.find(b"\r\n", position)
        if end == -1:
            break
        try:
            size = int(body[position:end].split(b";")[0].strip() or b"0", 16)
        except ValueError:
            return body  # not really chunked
        if size == 0:
            break
        out += body[end + 2: end + 2 + size]
        position = end + 2 + size + 2
    return bytes(out)


def parse_http_response(block: bytes) -> HttpResponse:
    """Split an HTTP response block into status, lower-cased headers and the decoded body."""
    head, sep, body = block.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = block.partition(b"\n\n")
    lines = head.decode("latin-1").splitlines()
    status = None
    if lines and lines[0].startswith("HTTP/"):
        parts = lines[0].split()
        if len(parts) > 1 and parts[1].isdigit():
            status = int(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    encoding = headers.get("content-encoding", "").lower().strip()
    if encoding in ("gzip", "x-gzip", "deflate"):
        try:
            body = zlib.decompress(body, wbits=47)  # gzip or zlib header, auto-detected
        except zlib.error:
            pass  # many servers label identity bodies as gzip; keep the bytes
    return HttpResponse(status=status, headers=headers, body=body)


_META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([\w.:-]+)", re.I)


def decode_html(body: bytes, http_charset: str | None) -> tuple[str, str]:
    """Decode an HTML payload: HTTP charset, then <meta charset>, then detection. Returns (text, charset)."""
    candidates: list[str] = []
    if http_charset:
        candidates.append(http_charset)
    meta = _META_CHARSET.search(body[:4096])
    if meta:
        candidates.append(meta.group(1).decode("ascii", "ignore"))
    for charset in candidates:
        try:
            return body.decode(charset), charset.lower()
        except (LookupError, UnicodeDecodeError):
            continue
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    import cchardet  # faust-cchardet, a trafilatura dependency

    detected = (cchardet.detect(body[:65536]) or {}).get("encoding") or "utf-8"
    try:
        return body.decode(detected, errors="replace"), detected.lower()
    except LookupError:
        return body.decode("utf-8", errors="replace"), "utf-8"


def looks_binary(text: str) -> bool:
    """True for bytes that are not text (images, archives) served as text/html."""
    sample = text[:4096]
    if not sample:
        return False
    control = sum(1 for ch in sample if (ord(ch) < 32 and ch not in "\t\n\r\f") or ch == "\ufffd")
    return control / len(sample) > 0.05
