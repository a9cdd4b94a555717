"""Common Crawl input against real loopback servers: a stdlib HTTP server and moto's S3 server, both
holding a Common-Crawl-shaped tree of the bundled WARC files (fixtures in conftest.py, tests/servers.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from pipeline import schemas
from pipeline.config import ExtractConfig, InputConfig, load_config
from pipeline.io import RunLayout, read_dataset
from pipeline.report import build_report
from pipeline.runtime.runner import StageFailed
from pipeline.sources import resolve_warcs
from stagehelpers import extract_one, extract_run

SNAPSHOT = "CC-MAIN-2024-33"


def run_config(out, *overrides, **input_fields):
    cfg = load_config(None, [f"out={out}", "input.retry_backoff_s=0.01", *overrides])
    for name, value in input_fields.items():
        setattr(cfg.input, name, value)
    return cfg


def test_cli_snapshot_over_http(tmp_path, ray_local, cc_http, cc_tree):
    # The real command line, as a user runs it, joining the session's Ray through RAY_ADDRESS.
    out = tmp_path / "run"
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "extract", "--snapshot", SNAPSHOT, "--max-warcs", "2",
         "--base-url", cc_http.url, "--out", str(out), "--set", "input.retry_backoff_s=0.01"],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "conservation extract:" in result.stdout and "[ok]" in result.stdout
    listing = f"/crawl-data/{SNAPSHOT}/warc.paths.gz"
    fetched = {path for _, path, status in cc_http.requests if status in (200, 206) and path.endswith(".warc.gz")}
    assert len(fetched) == 2 and any(path == listing for _, path, _ in cc_http.requests)
    docs = read_dataset(RunLayout(out).dataset("docs"), schemas.DOCS)
    warc_paths = set(docs.column("warc_path").to_pylist())
    assert warc_paths and all(p.startswith(cc_http.url + f"crawl-data/{SNAPSHOT}/segments/") for p in warc_paths)
    # the two files read are the seeded sample that resolve_warcs picks for the same settings
    expected = resolve_warcs(InputConfig(snapshot=SNAPSHOT, base_url=cc_http.url, max_warcs=2))
    assert {cc_http.url + p.lstrip("/") for p in fetched} == set(expected)


def test_seeded_sample_is_deterministic_and_shard_range_is_a_slice(cc_http, cc_tree):
    _, listed = cc_tree

    def sample(**fields):
        return resolve_warcs(InputConfig(snapshot=SNAPSHOT, base_url=cc_http.url, **fields))

    first = sample(max_warcs=3, seed=7)
    assert first == sample(max_warcs=3, seed=7) and len(first) == 3
    assert len({tuple(sample(max_warcs=3, seed=seed)) for seed in range(6)}) > 1, "the seed changes the sample"
    ordered = sorted(listed)
    assert sample(shard_range=(2, 5)) == [cc_http.url + p for p in ordered[2:5]]
    # a shard range then sampled: the sample is drawn from the slice only
    assert set(sample(shard_range=(0, 4), max_warcs=2)) <= {cc_http.url + p for p in ordered[:4]}


def test_warc_urls_over_http(tmp_path, ray_local, cc_http, cc_tree):
    _, listed = cc_tree
    urls = [cc_http.url + p for p in listed if p.endswith(("sample-0001.warc.gz", "jwarc-cc.warc.gz"))]
    cfg = run_config(tmp_path, warcs=urls)
    extract_run(cfg, quiet=True)
    report = build_report(RunLayout(tmp_path))
    assert report["conserved"] and report["stages"]["extract"]["shards"] == 2
    assert report["stages"]["extract"]["kept"] > 5


def test_503_slowdown_is_retried_with_backoff_and_recovers(tmp_path, cc_http, cc_tree):
    _, listed = cc_tree
    url = cc_http.url + next(p for p in listed if p.endswith("whirlwind.warc.gz"))
    from pipeline.config import ExtractConfig

    input_cfg = InputConfig(retries=5, retry_backoff_s=0.05)
    clean = extract_one(url, ExtractConfig(), input_cfg, str(tmp_path / "clean"))
    clean_requests = len(cc_http.requests)
    cc_http.reset()
    cc_http.fail_next = 4
    started = time.perf_counter()
    stats = extract_one(url, ExtractConfig(), input_cfg, str(tmp_path / "throttled"))
    waited = time.perf_counter() - started
    assert cc_http.statuses()[503] == 4, cc_http.requests
    assert len(cc_http.requests) == 4 + clean_requests  # each failure cost one request, then a clean fetch
    assert stats["kept"] == clean["kept"] > 0 and stats["errored"] == {}
    # fsspec opens with HEAD, and tries GET when HEAD fails: three attempts, the first two answered 503 twice
    attempts = [status for method, _, status in cc_http.requests if method == "HEAD"]
    assert attempts == [503, 503, 200]
    # exponential back-off with jitter (0.5x-1.5x): 0.05 s, then 0.1 s
    assert waited >= 0.5 * (0.05 + 0.1)


def test_503_past_every_retry_is_errored_then_recovered_on_the_next_run(tmp_path, cc_http, cc_tree):
    # Common Crawl answers 503 SlowDown at scale: a file that still fails after its retries is errored, with
    # the status said, and its shard is not done, so the next run (the server healthy again) fetches it.
    _, listed = cc_tree
    url = cc_http.url + next(p for p in listed if p.endswith("whirlwind.warc.gz"))
    clean = extract_one(url, ExtractConfig(), InputConfig(retries=1, retry_backoff_s=0.01), tmp_path / "clean")
    cc_http.reset()
    cc_http.fail_next = 10_000
    cfg = run_config(tmp_path / "run", "input.retries=2", warcs=[url])
    with pytest.raises(StageFailed, match="transient"):
        extract_run(cfg, quiet=True)
    layout = RunLayout(cfg.out)
    (marker,) = layout.shard_stats("extract")
    assert marker["errored"] == {"warc_unreadable": 1} and marker["transient_errors"] == 1
    assert not layout.is_shard_done("extract", marker["shard"]) and not layout.is_stage_done("extract")
    (decision,) = read_dataset(layout.decisions("extract"), schemas.DECISIONS).to_pylist()
    assert "HTTP 503" in decision["detail"] and "not found" not in decision["detail"]
    assert cc_http.statuses()[503] >= 3  # the first try and both retries
    cc_http.reset()  # healthy again
    summary = extract_run(cfg, quiet=True)
    assert summary["shards_run"] == 1 and summary["errored"] == {} and summary["kept"] == clean["kept"] > 0
    assert read_dataset(layout.decisions("extract"), schemas.DECISIONS).num_rows == len(
        read_dataset(tmp_path / "clean" / "decisions" / "extract", schemas.DECISIONS))
    assert build_report(layout)["stages"]["extract"]["errored"] == {} and layout.is_stage_done("extract")


def test_503_on_the_listing_is_retried(cc_http):
    cc_http.fail_next = 2
    warcs = resolve_warcs(InputConfig(snapshot=SNAPSHOT, base_url=cc_http.url, retry_backoff_s=0.01))
    assert len(warcs) == 10 and cc_http.statuses()[503] == 2


def test_404_warc_url_is_errored_naming_the_url_and_not_retried(tmp_path, cc_http):
    from pipeline.config import ExtractConfig

    url = cc_http.url + f"crawl-data/{SNAPSHOT}/segments/x/warc/missing.warc.gz"
    stats = extract_one(url, ExtractConfig(), InputConfig(retries=5, retry_backoff_s=0.01), str(tmp_path))
    assert stats["input"] == 1 and stats["errored"] == {"warc_unreadable": 1}
    (decision,) = read_dataset(RunLayout(tmp_path).decisions("extract"), schemas.DECISIONS).to_pylist()
    assert url in decision["detail"] and "not found" in decision["detail"]
    assert cc_http.statuses()[404] == len(cc_http.requests) <= 2  # fsspec's HEAD + GET, no retries


def test_snapshot_listing_404_is_a_clear_input_error(cc_http):
    from pipeline.sources import InputError

    with pytest.raises(InputError, match="CC-MAIN-2099-01/warc.paths.gz"):
        resolve_warcs(InputConfig(snapshot="CC-MAIN-2099-01", base_url=cc_http.url, retry_backoff_s=0.01))


def test_snapshot_from_s3_moto_server(tmp_path, ray_local, moto_s3):
    cfg = run_config(tmp_path, snapshot=SNAPSHOT, base_url="s3://commoncrawl-test/", max_warcs=2,
                     storage_options=moto_s3.storage_options())
    sources = resolve_warcs(cfg.input)
    assert len(sources) == 2 and all(s.startswith(f"s3://commoncrawl-test/crawl-data/{SNAPSHOT}/") for s in sources)
    extract_run(cfg, quiet=True)
    report = build_report(RunLayout(tmp_path))
    assert report["conserved"] and report["stages"]["extract"]["shards"] == 2
    assert report["stages"]["extract"]["errored"] == {}
    docs = read_dataset(RunLayout(tmp_path).dataset("docs"), schemas.DOCS)
    assert set(docs.column("warc_path").to_pylist()) <= set(sources)


def test_warc_glob_and_missing_key_on_s3(tmp_path, moto_s3):
    from pipeline.config import ExtractConfig

    options = moto_s3.storage_options()
    found = resolve_warcs(InputConfig(warcs=[f"s3://commoncrawl-test/crawl-data/{SNAPSHOT}/segments/*/warc/*.warc.gz"],
                                      storage_options=options))
    assert len(found) == 10
    missing = "s3://commoncrawl-test/crawl-data/nothing-here.warc.gz"
    stats = extract_one(missing, ExtractConfig(), InputConfig(storage_options=options, retry_backoff_s=0.01),
                                 str(tmp_path))
    assert stats["errored"] == {"warc_unreadable": 1}
    (decision,) = read_dataset(RunLayout(tmp_path).decisions("extract"), schemas.DECISIONS).to_pylist()
    assert missing in decision["detail"]
