"""The run folder on object storage against a local one: the same stages on the same input, one after the other
in this invocation, into a local folder and into an S3 bucket (moto's server, its own process on loopback).
Prints the wall time of each stage in both and the ratio, the objects the store holds, and what a rerun with
nothing to do costs (the driver's copy brought up to date: one listing, no downloads).

    .venv/bin/python benchmarks/storage.py [--stages extract rules dedup] [--repeat 2]

moto keeps objects in memory and answers in microseconds: the ratio is the price of the copy, the puts and
the listings in our code, not of a real store's latency (a real S3 adds ~10-30 ms per request; the puts of a
shard run in its worker, in parallel with other shards).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _timed_stages(cfg, stages: list[str]) -> dict[str, float]:
    from pipeline.run import run_stages
    from pipeline.runtime.executor import LocalExecutor

    seconds = {}
    for stage in stages:
        started = time.perf_counter()
        run_stages(cfg, stage, executor=LocalExecutor(), quiet=True)
        seconds[stage] = time.perf_counter() - started
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", nargs="+", default=["extract", "rules", "dedup"])
    parser.add_argument("--repeat", type=int, default=2, help="rounds of (local, object storage)")
    args = parser.parse_args()

    import boto3

    from pipeline.config import load_config

    port = _free_port()
    os.environ.update({"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"})
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    try:
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")
        for _ in range(100):
            try:
                client.create_bucket(Bucket="bench")
                break
            except Exception:  # noqa: BLE001 - the server is still starting
                time.sleep(0.1)
        base = load_config(ROOT / "jobs/configs/demo.yaml",
                           [f"storage.cache_dir={work / 'cache'}", "extract.timeout_s=30"])
        base = base.updated(**{"input.warcs": [str(ROOT / w) for w in base.input.warcs]})
        rows = []
        for round_ in range(args.repeat):
            local = _timed_stages(base.updated(out=str(work / f"local-{round_}")), args.stages)
            remote_cfg = base.updated(out=f"s3://bench/run-{round_}")
            remote = _timed_stages(remote_cfg, args.stages)
            started = time.perf_counter()
            _timed_stages(remote_cfg, args.stages)  # everything done: the copy is brought up to date, stages skip
            rerun = time.perf_counter() - started
            pages = client.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix=f"run-{round_}/")
            objects = sum(len(page.get("Contents", [])) for page in pages)
            rows.append((local, remote, rerun, objects))
        print(f"{'stage':<10} {'local s':>9} {'s3 s':>9} {'s3/local':>9}")
        for stage in args.stages:
            for local, remote, _, _ in rows:
                print(f"{stage:<10} {local[stage]:>9.2f} {remote[stage]:>9.2f} {remote[stage] / local[stage]:>8.2f}x")
        for local, remote, rerun, objects in rows:
            total_local, total_remote = sum(local.values()), sum(remote.values())
            print(f"all stages: local {total_local:.2f}s, object storage {total_remote:.2f}s "
                  f"({total_remote / total_local:.2f}x); {objects} objects; a rerun with nothing left to do "
                  f"{rerun:.2f}s")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
