"""Bad input never crashes the run or loses a record: each ends kept, dropped or errored with a reason.

The damaged files are built in tmp_path from a real bundled WARC (dolma's sample-0000.warc.gz, one gzip
member per record): cut, padded with garbage, given a lying Content-Length, or with a crafted response
record (a 10 MB page, binary bytes, an empty page, a slow page) spliced between its real records.
"""

from __future__ import annotations

import gzip
import re
import threading
import time
import uuid
import zlib
from collections import Counter
from pathlib import Path

import pytest

from pipeline import extract, schemas
from pipeline.config import ExtractConfig, InputConfig, RunConfig, load_config
from pipeline.io import RunLayout, read_dataset
from pipeline.report import build_report
from pipeline.runtime.executor import LocalExecutor
from pipeline.runtime.runner import StageFailed, run_stage
from stagehelpers import extract_run

SOURCE = Path(__file__).resolve().parents[1] / "data" / "sample" / "warc" / "sample-0000.warc.gz"
KEPT_RESPONSE = 6  # member 6 of SOURCE is a response record whose page is kept


def gzip_members(data: bytes) -> list[bytes]:
    members, position = [], 0
    while position < len(data):
        inflater = zlib.decompressobj(wbits=31)
        inflater.decompress(data[position:])
        end = len(data) - len(inflater.unused_data)
        members.append(data[position:end])
        position = end
    return members


MEMBERS = gzip_members(SOURCE.read_bytes())
RECORDS = [gzip.decompress(m) for m in MEMBERS]


def record_id(record: bytes) -> str:
    return re.search(rb"WARC-Record-ID: (<[^>]+>)", record).group(1).decode()


def target_uri(record: bytes) -> str:
    return re.search(rb"WARC-Target-URI: <?([^>\r]+)", record).group(1).decode()


def response_member(url: str, body: bytes, content_type: str = "text/html; charset=utf-8") -> bytes:
    """One WARC/1.0 response record (its own gzip member) carrying `body` as an HTTP 200 payload."""
    http = (f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:{uuid.uuid4()}>\r\n"
            f"WARC-Date: 2024-08-02T10:00:00Z\r\nWARC-Target-URI: {url}\r\n"
            f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(http)}\r\n\r\n").encode()
    return gzip.compress(head + http + b"\r\n\r\n", 1)


def with_content_length(record: bytes, delta: int) -> bytes:
    match = re.search(rb"Content-Length: (\d+)", record)
    return record[: match.start(1)] + str(int(match.group(1)) + delta).encode() + record[match.end(1):]


def run_one(path: Path, out: Path, **extract_settings):
    """The extract stage on one file, in this process (the runtime's local executor); returns the shard's
    (stats, extracted pages, decisions)."""
    cfg = RunConfig(out=str(out), input=InputConfig(warcs=[str(path)]), extract=ExtractConfig(**extract_settings))
    try:
        run_stage(extract.ExtractStage(cfg), executor=LocalExecutor(), quiet=True)
    except StageFailed:
        pass  # a file none of whose records came through: the stage says so after recording them
    layout = RunLayout(out)
    (stats,) = layout.shard_stats("extract")
    docs = read_dataset(layout.dataset("extracted"), schemas.EXTRACTED).to_pylist()
    decisions = read_dataset(layout.decisions("extract"), schemas.DECISIONS).to_pylist()
    assert stats["input"] == len(docs) + len(decisions), "every record is an extracted page or a decision row"
    return stats, docs, decisions


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    stats, docs, _ = run_one(SOURCE, tmp_path_factory.mktemp("baseline"))
    assert record_id(RECORDS[KEPT_RESPONSE]) in {d["warc_record_id"] for d in docs}
    return stats, {d["warc_record_id"] for d in docs}


def by_reason(decisions, reason):
    return [d for d in decisions if d["reason"] == reason]


def test_truncated_gzip_member_mid_file_loses_only_that_record(tmp_path, baseline):
    victim = MEMBERS[KEPT_RESPONSE]
    bad = tmp_path / "truncated-member.warc.gz"
    bad.write_bytes(b"".join(MEMBERS[:KEPT_RESPONSE]) + victim[: len(victim) // 2]
                    + b"".join(MEMBERS[KEPT_RESPONSE + 1:]))
    stats, docs, decisions = run_one(bad, tmp_path / "out")
    (damage,) = by_reason(decisions, "warc_damaged")
    assert damage["outcome"] == schemas.ERRORED and str(bad) in damage["detail"]
    start = sum(map(len, MEMBERS[:KEPT_RESPONSE]))
    assert f"from offset {start}" in damage["detail"]  # the damage starts where the last good record ends
    # the damaged record is the only loss; every record after it was read again
    assert {d["warc_record_id"] for d in docs} == baseline[1] - {record_id(RECORDS[KEPT_RESPONSE])}
    assert stats["input"] == baseline[0]["input"]  # one record lost, one damage row in its place


def test_truncated_file_end_errors_the_cut_record(tmp_path, baseline):
    cut = MEMBERS[KEPT_RESPONSE]
    bad = tmp_path / "truncated-end.warc.gz"
    bad.write_bytes(b"".join(MEMBERS[:KEPT_RESPONSE]) + cut[: len(cut) * 2 // 3])
    stats, docs, decisions = run_one(bad, tmp_path / "out")
    errored = [d for d in decisions if d["outcome"] == schemas.ERRORED]
    assert len(errored) == 1 and errored[0]["reason"] == "warc_truncated_record"
    assert str(bad) in errored[0]["detail"]
    assert stats["input"] == KEPT_RESPONSE + 1
    assert record_id(RECORDS[KEPT_RESPONSE]) not in {d["warc_record_id"] for d in docs}


def test_garbage_between_records_is_one_damaged_region(tmp_path, baseline):
    bad = tmp_path / "garbage.warc.gz"
    bad.write_bytes(b"".join(MEMBERS[:10]) + b"\x00junk\xff\x1f\x8b" * 300 + b"".join(MEMBERS[10:]))
    stats, docs, decisions = run_one(bad, tmp_path / "out")
    (damage,) = by_reason(decisions, "warc_damaged")
    offset = sum(map(len, MEMBERS[:10]))
    assert f"from offset {offset}, resumed at {offset + 300 * 8}" in damage["detail"]
    assert {d["warc_record_id"] for d in docs} == baseline[1]  # nothing lost
    assert stats["input"] == baseline[0]["input"] + 1


def test_zero_byte_file_is_an_errored_record_naming_it(tmp_path):
    empty = tmp_path / "empty.warc.gz"
    empty.write_bytes(b"")
    stats, docs, decisions = run_one(empty, tmp_path / "out")
    assert docs == [] and stats["errored"] == {"warc_empty": 1}
    assert str(empty) in decisions[0]["detail"]


def test_missing_file_is_an_errored_record_naming_it(tmp_path):
    missing = tmp_path / "nowhere" / "missing.warc.gz"
    stats, _, decisions = run_one(missing, tmp_path / "out")
    assert stats["errored"] == {"warc_unreadable": 1}
    assert str(missing) in decisions[0]["detail"] and "not found" in decisions[0]["detail"]


@pytest.mark.parametrize("delta", [+700, -700], ids=["longer", "shorter"])
@pytest.mark.parametrize("compressed", [True, False], ids=["gzip", "plain"])
def test_lying_content_length_errors_that_record_only(tmp_path, baseline, delta, compressed):
    records = list(RECORDS)
    records[KEPT_RESPONSE] = with_content_length(records[KEPT_RESPONSE], delta)
    bad = tmp_path / ("lie.warc.gz" if compressed else "lie.warc")
    bad.write_bytes(b"".join(gzip.compress(r, 1) for r in records) if compressed else b"".join(records))
    stats, docs, decisions = run_one(bad, tmp_path / "out")
    (liar,) = [d for d in decisions if d["outcome"] == schemas.ERRORED]
    assert liar["reason"] == "warc_bad_content_length"
    assert liar["url"] == target_uri(RECORDS[KEPT_RESPONSE])
    assert str(bad) in liar["detail"] and "Content-Length" in liar["detail"]
    # the lying record is errored instead of kept with a corrupted text; everything else is intact
    assert {d["warc_record_id"] for d in docs} == baseline[1] - {record_id(RECORDS[KEPT_RESPONSE])}
    assert stats["input"] == baseline[0]["input"]


def spliced(tmp_path: Path, name: str, *crafted: bytes) -> Path:
    """SOURCE with `crafted` records inserted after its first 10 records."""
    path = tmp_path / name
    path.write_bytes(b"".join(MEMBERS[:10]) + b"".join(crafted) + b"".join(MEMBERS[10:]))
    return path


def wide_page(rows: int) -> bytes:
    """A genuinely slow page for trafilatura: `rows` sibling blocks (~100 bytes each), ~0.2 ms per row."""
    cells = "".join(f"<div><p>Row {i} has a sentence of several words in it.</p><a href='/r{i}'>link {i}</a></div>"
                    for i in range(rows))
    return f"<html><head><title>wide</title></head><body>{cells}</body></html>".encode()


@pytest.fixture(scope="module")
def ten_mb_page() -> bytes:
    page = wide_page(105_000)
    assert len(page) > 10_000_000
    return page


def test_page_over_max_html_bytes_is_dropped(tmp_path, baseline, ten_mb_page):
    path = spliced(tmp_path, "big.warc.gz", response_member("https://big.example/", ten_mb_page))
    _stats, docs, decisions = run_one(path, tmp_path / "out")
    (big,) = by_reason(decisions, "html_too_large")
    assert big["outcome"] == schemas.DROPPED and big["url"] == "https://big.example/"
    assert "extract.max_html_bytes" in big["detail"]
    assert {d["warc_record_id"] for d in docs} == baseline[1]


def test_binary_empty_and_non_html_payloads(tmp_path, baseline):
    binary = SOURCE.read_bytes()[:20_000]  # compressed bytes: not text, whatever the header says
    empty = b"<html><head><script>var x = 1;</script><style>p{}</style></head><body><div> </div></body></html>"
    path = spliced(tmp_path, "payloads.warc.gz",
                   response_member("https://bin.example/", binary),
                   response_member("https://empty.example/", empty),
                   response_member("https://img.example/a.png", b"\x89PNG....", "image/png"))
    _stats, docs, decisions = run_one(path, tmp_path / "out")
    reasons = {d["url"]: (d["outcome"], d["reason"]) for d in decisions if d["url"] and "example" in d["url"]}
    assert reasons == {
        "https://bin.example/": (schemas.DROPPED, "binary_payload"),
        "https://empty.example/": (schemas.DROPPED, "no_text"),
        "https://img.example/a.png": (schemas.DROPPED, "not_html"),
    }
    assert {d["warc_record_id"] for d in docs} == baseline[1]


def test_time_limit_fires_in_a_ray_task_and_the_worker_goes_on(tmp_path, ray_local, baseline, ten_mb_page):
    # Unbounded, trafilatura needs ~20 s for this page; the limit must cut it at 0.5 s inside the Ray task
    # (Ray runs tasks on the worker's main thread, where SIGALRM is delivered) and the records after it
    # in the same file must still be extracted.
    path = spliced(tmp_path, "slow.warc.gz", response_member("https://slow.example/", ten_mb_page))
    cfg = load_config(None, [f"out={tmp_path / 'out'}", "extract.timeout_s=0.5", "extract.max_html_bytes=20000000"])
    cfg.input.warcs = [str(path)]
    extract_run(cfg, quiet=True)
    layout = RunLayout(cfg.out)
    decisions = read_dataset(layout.decisions("extract"), schemas.DECISIONS).to_pylist()
    timeouts = by_reason(decisions, "extract_timeout")
    (slow,) = [d for d in timeouts if d["url"] == "https://slow.example/"]
    assert slow["outcome"] == schemas.ERRORED and "0.5" in slow["detail"]
    docs = read_dataset(layout.dataset("extracted"), schemas.EXTRACTED).column("warc_record_id").to_pylist()
    # every other page came through; on a heavily loaded machine another one may also hit the 0.5 s limit,
    # and is then errored with its reason, never lost
    assert set(docs) <= baseline[1] and len(baseline[1]) - len(docs) == len(timeouts) - 1
    (shard,) = layout.shard_stats("extract")
    assert shard["seconds"] < 10, "the page was cut at the limit, not extracted to the end"
    assert build_report(layout)["conserved"]


def test_time_limit_off_the_main_thread(ten_mb_page):
    # Threads get no signals: there the limit is an exception injected by a watchdog timer.
    html = ten_mb_page[:2_000_000].decode()  # ~3 s unbounded
    extractor = extract.Extractor(ExtractConfig(timeout_s=0.3, rules={"enabled": False}))
    outcome: dict = {}

    def work():
        started = time.perf_counter()
        try:
            extractor.extract_text(html, None)
            outcome["result"] = "finished"
        except extract.ExtractTimeout:
            outcome["result"] = "timeout"
        outcome["seconds"] = time.perf_counter() - started
        with extract.time_limit(0.2):
            pass  # a limit that is not reached leaves nothing armed behind
        time.sleep(0.4)
        outcome["after"] = "clean"

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(30)
    assert outcome["result"] == "timeout" and outcome["after"] == "clean"


def test_one_run_over_every_bad_file_is_conserved(tmp_path, ray_local):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.warc.gz").write_bytes(b"")
    (bad / "garbage.warc.gz").write_bytes(b"".join(MEMBERS[:5]) + b"\x00" * 999 + b"".join(MEMBERS[5:9]))
    (bad / "cut.warc.gz").write_bytes(b"".join(MEMBERS[:3]) + MEMBERS[3][:50])
    (bad / "not-a-warc.warc.gz").write_bytes(gzip.compress(b"hello, this is no WARC file\n" * 50))
    cfg = load_config(None, [f"out={tmp_path / 'out'}"])
    cfg.input.warcs = [str(bad / "*.warc.gz"), str(bad / "missing.warc.gz")]
    extract_run(cfg, quiet=True)
    report = build_report(RunLayout(cfg.out))
    stage = report["stages"]["extract"]
    assert report["conserved"] and stage["shards"] == 5
    assert Counter(stage["errored"]) >= Counter({"warc_empty": 1, "warc_unreadable": 1, "warc_damaged": 2})
    assert stage["kept"] >= 1  # the good records of the damaged files came through
