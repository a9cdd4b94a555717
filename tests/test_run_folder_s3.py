"""A run folder on object storage (`--out s3://bucket/prefix`) on moto's S3 server on loopback: `curate run`
killed with SIGKILL mid-stage and run again ends equal to a local run, file for file; report, explain and
the classifier read from the store; SlowDown answers are retried; one writer at a time."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.io import RunLayout
from pipeline.run import run_stages
from pipeline.runtime.executor import LocalExecutor
from runfolders import BUCKET, assert_same_run, keys, run_config, tables


def _curate(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, **kwargs)


def test_a_run_on_object_storage_killed_mid_stage_resumes_and_equals_a_local_run(s3_runs, local_reference, tmp_path):
    server, client = s3_runs
    local, classifier = local_reference
    url = f"s3://{BUCKET}/killed"
    cache = tmp_path / "cache"
    config = tmp_path / "run.yaml"
    cfg = run_config(url, classifier, cache, server.storage_options())
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))

    # 1. `curate run` killed (SIGKILL, with its Ray) once the first WARC file's marker is on the store
    first = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(config)], cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not [k for k in keys(client, "killed/_state/extract/") if "/part-" in k]:
            assert first.poll() is None and time.monotonic() < deadline, "curate run ended before a shard was done"
            time.sleep(0.05)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    time.sleep(3)  # a Ray worker of the killed run may put the shard it was finishing before it dies too
    done = [k for k in keys(client, "killed/_state/extract/") if "/part-" in k]
    assert "killed/_state/extract/_STAGE_COMPLETE.json" not in keys(client, "killed/_state/extract/")
    assert 1 <= len(done) < 11

    # 2. a marker the killed run wrote locally but never put: the store is the truth, the shard is redone
    planted_key = next(k for k in _local_extract_keys(local) if f"killed/_state/extract/{k}.json" not in done)
    copy_root = next((cache / "runs").iterdir())
    planted = copy_root / "_state" / "extract" / f"{planted_key}.json"
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_text(json.dumps({"input": 0, "kept": 0, "files": {}, "transient_errors": 0}))

    # 3. the same command again finishes the run, redoing only what is not on the store
    second = _curate("run", str(config), cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"[extract] 11 WARC files ({11 - len(done)} run now)" in second.stdout, second.stdout
    # the killed run's lock: its holder is gone, so it is taken over, saying whose it was
    assert f"took over the lock of {url} from a writer that is gone" in second.stdout

    assert_same_run(copy_root, url, local)  # every dataset and decision, row for row; no doc twice
    # what the store holds is what the local copy holds (no object missing, none left over)
    stored = {k.removeprefix("killed/") for k in keys(client, "killed/")}
    copied = {p.relative_to(copy_root).as_posix() for p in copy_root.rglob("*") if p.is_file()}
    assert stored == {p for p in copied if not p.startswith(("_state/_lock", "_state/llm-server"))}
    assert json.loads(planted.read_text())["input"] > 0  # the planted marker was replaced by the real one

    # 4. the read side, from the URL in a fresh cache: report, explain, the classifier
    fresh = {**os.environ, "CURATE_RUN_CACHE": str(tmp_path / "reader")}
    report = _curate("report", "--out", url, "--set", f"storage.options={json.dumps(server.storage_options())}",
                     cwd=tmp_path, env=fresh)
    assert report.returncode == 0, report.stderr[-2000:]
    kept = pq.read_table(sorted((local / "corpus").glob("*.parquet"))[0], columns=["doc_id", "url"]).to_pylist()[0]
    explain = _curate("explain", kept["url"], "--out", url, "--set",
                      f"storage.options={json.dumps(server.storage_options())}", cwd=tmp_path, env=fresh)
    assert explain.returncode == 0 and "kept" in explain.stdout.lower(), explain.stdout + explain.stderr


def _local_extract_keys(local: Path) -> list[str]:
    return sorted(p.stem for p in (local / "_state" / "extract").glob("part-*.json"))


def test_a_classifier_on_object_storage_loads_and_scores_as_the_local_one(s3_runs, local_reference, tmp_path):
    from classifiers.artifact import QualityClassifier
    from pipeline import store

    server, client = s3_runs
    _, classifier = local_reference
    for path in sorted(classifier.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"models/clf/{path.relative_to(classifier).as_posix()}")
    store.configure(str(tmp_path / "cache"), server.storage_options(), 2)
    remote = QualityClassifier.load(f"s3://{BUCKET}/models/clf")
    here = QualityClassifier.load(classifier)
    texts = ["A long article about the history of the river and its bridges.", "click here buy now"]
    assert remote.score(texts).tolist() == here.score(texts).tolist()
    assert remote.artifact.fingerprint() == here.artifact.fingerprint()


def test_slowdown_answers_from_the_store_are_retried(s3_runs, local_reference, tmp_path):
    from servers import S3FaultProxy

    server, _ = s3_runs
    local, classifier = local_reference
    proxy = S3FaultProxy(server.endpoint_url).start()
    try:
        options = {"s3": {**server.storage_options()["s3"], "endpoint_url": proxy.endpoint_url}}
        cfg = run_config(f"s3://{BUCKET}/throttled", classifier, tmp_path / "cache", options)
        cfg = cfg.updated(**{"storage.retries": 6})
        proxy.fail_next(4)  # the first requests of the run: its listing and first puts
        run_stages(cfg, "extract", "rules", executor=LocalExecutor(), quiet=True)
        assert proxy.failures_left == 0 and sum(proxy.failed.values()) == 4
        proxy.fail_next(3)
        run_stages(cfg, "dedup", executor=LocalExecutor(), quiet=True)
        assert sum(proxy.failed.values()) == 7
    finally:
        proxy.stop()
    root = RunLayout(cfg.out).root
    for folder in ["docs", "unique", "decisions/rules", "decisions/dedup"]:
        assert tables(root, folder, cfg.out).equals(tables(local, folder)), folder


def test_one_writer_at_a_time_on_object_storage(s3_runs, tmp_path, capsys):
    from pipeline import store
    from pipeline.runlock import RunLock, RunLocked

    server, client = s3_runs
    store.configure(str(tmp_path / "cache"), server.storage_options(), 2)
    url = f"s3://{BUCKET}/locked"
    first = RunLock(url, "curate dedup").acquire()
    try:
        assert "locked/_state/_lock.json" in keys(client, "locked/")
        with pytest.raises(RunLocked, match=r"s3://runs/locked is being written by another command \(pid"):
            RunLock(url, "curate classify").acquire()
    finally:
        first.release()
    assert "locked/_state/_lock.json" not in keys(client, "locked/")
    # a holder that died on this host without releasing: taken over, saying whose it was
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    client.put_object(Bucket=BUCKET, Key="locked/_state/_lock.json",
                      Body=json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "command": "curate x"}))
    second = RunLock(url, "curate dedup").acquire()
    second.release()
    assert "took over the lock of s3://runs/locked from a writer that is gone" in capsys.readouterr().out
