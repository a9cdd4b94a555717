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
    # set when the record's Content-Length disagrees with where its block really ends
    length_error: str | None = None

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


def _header_dict(headers) -> dict[str, str]:
    """dict(headers), ~10x faster: dict() of FastWARC's header map looks every name up again (case-insensitively,
    the first value wins), which for names that are distinct in any case gives each its own value."""
    items = headers.items()
    if len({name.lower() for name, _ in items}) == len(items):
        return dict(items)
    return dict(headers)


def _raw_record(record) -> RawRecord:
    headers = _header_dict(record.headers)
    return RawRecord(
        record_type=_record_type_name(record.record_type),
        record_id=headers.get("WARC-Record-ID", "").strip(),
        url=_clean_uri(headers.get("WARC-Target-URI")),
        date=headers.get("WARC-Date"),
        offset=record.stream_pos,
        block=record.reader.read(),
        content_length=record.content_length,
        headers=headers,
    )


def _check_length(handle, record: RawRecord, gzipped: bool, region_end: int | None) -> tuple[str | None, int | None]:
    """Re-read the last record before a parse failure to tell whether the record itself is at fault (its
    Content-Length does not match where its block really ends, so the reader ran into, or stopped short
    of, the next record) or the damage starts after it.

    Returns (what is wrong with the record or None, the file offset where the record ends when known)."""
    margin = 1 << 16
    handle.seek(record.offset)
    limit = record.content_length + margin  # bounded: never the rest of a large file
    if region_end is not None:
        limit = min(limit, max(region_end - record.offset, 0))
    raw = handle.read(limit)
    member_size = None
    if gzipped:
        inflater = zlib.decompressobj(wbits=31)
        try:
            data = inflater.decompress(raw, record.content_length + margin)
        except zlib.error:
            data = b""
        if inflater.eof:
            member_size = len(raw) - len(inflater.unused_data)
    else:
        data = raw
    header_end = data.find(b"\r\n\r\n")
    if header_end == -1:
        return None, None  # cannot tell: the damage is reported as starting after the record
    block_end = header_end + 4 + record.content_length
    if data[block_end: block_end + 4] != b"\r\n\r\n":
        problem = f"Content-Length {record.content_length} does not match the record"
        if data.endswith(b"\r\n\r\n") and len(data) < block_end:
            problem += f", whose block is {len(data) - header_end - 8} bytes"
        return problem, None
    if not gzipped:
        return None, record.offset + block_end + 4
    # per-record gzip: the member ends with the record; whole-file gzip: the end offset is not addressable
    per_record = member_size is not None and len(data) == block_end + 4
    return None, (record.offset + member_size) if per_record else None


def iter_warc(path: str | Path) -> Iterator[RawRecord | WarcDamage]:
    """Yield every record of a WARC file (gzip or not), and a WarcDamage for each unreadable region.

    A record is held back until the next one parses: when parsing fails right after it, its own
    Content-Length may be the cause (a length that lies makes the reader run into, or stop short of, the
    next record), so it is re-checked and yielded with `length_error` set instead of passing as good."""
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
        position = 0
        while True:
            handle.seek(position)
            held: RawRecord | None = None
            try:
                for record in ArchiveIterator(handle, parse_http=False, record_types=WarcRecordType.any_type):
                    current = _raw_record(record)
                    if held is not None:
                        yield held
                    held = current
                if held is not None:
                    yield held
                return
            except OSError as exc:
                message = str(exc)
            resume = _next_boundary(handle, (held.offset if held else position) + 1, gzipped)
            if held is None:
                yield WarcDamage(offset=position, resumed_at=resume, message=message)
            else:
                problem, held_end = _check_length(handle, held, gzipped, resume)
                held.length_error = problem
                yield held
                if problem is None:
                    # the record is sound: the unreadable bytes start where it ends
                    yield WarcDamage(offset=held_end if held_end is not None else held.offset,
                                     resumed_at=resume, message=message)
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


# C0 control characters other than tab, newlines and form feed, and U+FFFD (undecodable bytes)
_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0e-\x1f\ufffd]")


def looks_binary(text: str) -> bool:
    """True for bytes that are not text (images, archives) served as text/html."""
    sample = text[:4096]
    if not sample:
        return False
    return len(_NOT_TEXT.findall(sample)) / len(sample) > 0.05
