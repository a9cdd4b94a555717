"""Extract-stage throughput and memory, against the limit and a peer, in one invocation on the same pages.

  (a) limit: a plain loop of `trafilatura.extract` over the already-decoded HTML, one process, with the
      same options the stage uses. Nothing else (no WARC reading, language ID, rules or output).
  (b) peer:  datatrove's LocalPipelineExecutor: WarcReader -> Trafilatura -> Gopher repetition, Gopher
      quality, C4 quality, FineWeb quality filters -> ParquetWriter, with the same number of workers.
  (c) ours:  the extract and rules stages on a local Ray with that many CPUs (the same code `curate extract`
      runs), at 1x and 4x the input, with the peak RSS of the largest Ray worker and of the driver.

Input: the WARC files under ../shared/data/warc when present, else the bundled data/sample/warc, each
gzip member of every file concatenated into one "copy" file, repeated until there are >= --pages HTML
pages (HTTP 200 text/html responses). docs/s counts those HTML pages for every contender.

The machine may be shared, so besides wall-clock docs/s the script prints CPU seconds per page (user+sys
of every process that did the work), which other processes' load does not inflate.

    .venv/bin/python benchmarks/extract.py [--pages 2000] [--workers 2] [--no-peer] [--no-4x]
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
SHARED_WARCS = ROOT.parent / "shared" / "data" / "warc"
BUNDLED_WARCS = ROOT / "data" / "sample" / "warc"


def source_files() -> tuple[list[Path], str]:
    if SHARED_WARCS.is_dir():
        files = sorted(p for p in SHARED_WARCS.rglob("*") if p.name.endswith((".warc.gz", ".warc"))
                       and ".wat." not in p.name and ".wet." not in p.name)
        if files:
            return files, str(SHARED_WARCS)
    return sorted(p for p in BUNDLED_WARCS.iterdir() if p.name.endswith((".warc.gz", ".warc"))), str(BUNDLED_WARCS)


def build_copy(files: list[Path]) -> bytes:
    """All records of all files as one multi-member gzip WARC (uncompressed files get compressed)."""
    parts = []
    for path in files:
        data = path.read_bytes()
        parts.append(data if data[:2] == b"\x1f\x8b" else gzip.compress(data, 6))
    return b"".join(parts)


def html_pages(path: Path) -> list[tuple[str, str | None]]:
    """(decoded HTML, url) of every HTTP 200 HTML response, decoded exactly as the stage decodes it."""
    from pipeline.extract import HTML_TYPES
    from pipeline.warc import RawRecord, decode_html, iter_warc, parse_http_response

    pages = []
    for record in iter_warc(path):
        if not isinstance(record, RawRecord) or record.record_type != "response" or record.length_error:
            continue
        response = parse_http_response(record.block)
        if response.status == 200 and (not response.content_type or response.content_type in HTML_TYPES):
            pages.append((decode_html(response.body, response.charset)[0], record.url))
    return pages


class ProcessSampler:
    """Samples this process and all its descendants every few ms: each one's peak RSS and CPU seconds.

    Executors hand work to processes that are not our direct children (datatrove's pool forks from a
    forkserver; Ray workers descend from the raylet), so their CPU is sampled, not taken from rusage.
    A process's last few ms before it exits can be missed, which favours short-lived processes."""

    def __init__(self, interval_s: float = 0.02):
        self.interval_s = interval_s
        self.peaks: dict[int, tuple[int, str]] = {}
        self.cpu: dict[int, float] = {}
        self.baseline: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> dict[int, float]:
        me = psutil.Process()
        seen = {}
        for proc in [me, *me.children(recursive=True)]:
            try:
                with proc.oneshot():
                    rss = proc.memory_info().rss
                    times = proc.cpu_times()
                    name = " ".join(proc.cmdline()[:3])[:80] or proc.name()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            seen[proc.pid] = times.user + times.system
            if rss > self.peaks.get(proc.pid, (0, ""))[0]:
                self.peaks[proc.pid] = (rss, name)
        return seen

    def _run(self) -> None:
        while not self._stop.is_set():
            self.cpu.update(self._sample())
            self._stop.wait(self.interval_s)

    def __enter__(self):
        self.baseline = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.cpu.update(self._sample())

    def cpu_seconds(self, exclude_self: bool = True) -> float:
        """CPU used during the sampling window by the descendants (and this process unless excluded)."""
        return sum(cpu - self.baseline.get(pid, 0.0) for pid, cpu in self.cpu.items()
                   if not (exclude_self and pid == os.getpid()))

    def largest_worker(self) -> int:
        return max((rss for rss, name in self.peaks.values() if _is_ray_worker(name)), default=0)


def _is_ray_worker(cmdline: str) -> bool:
    # Ray renames its worker processes "ray::IDLE", "ray::extract_warc", ...
    return "ray::" in cmdline or "default_worker.py" in cmdline


def run_limit(pages: list[tuple[str, str | None]], extract_cfg) -> tuple[float, float]:
    import trafilatura

    cpu0, wall0 = time.process_time(), time.perf_counter()
    for html, url in pages:
        trafilatura.extract(html, url=url, include_comments=False, include_tables=extract_cfg.include_tables,
                            favor_precision=extract_cfg.favor_precision, deduplicate=False, with_metadata=False)
    return time.perf_counter() - wall0, time.process_time() - cpu0


def run_peer(input_dir: Path, out_dir: Path, workers: int, extract_cfg):
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.writers import ParquetWriter

    files = sorted(input_dir.glob("*.warc.gz"))
    pipeline = [
        WarcReader(str(input_dir), glob_pattern="*.warc.gz"),
        Trafilatura(favour_precision=extract_cfg.favor_precision, deduplicate=False,
                    include_tables=extract_cfg.include_tables, timeout=extract_cfg.timeout_s),
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(filter_no_terminal_punct=False),
        FineWebQualityFilter(),
        ParquetWriter(str(out_dir / "output")),
    ]
    executor = LocalPipelineExecutor(pipeline=pipeline, tasks=len(files), workers=workers,
                                     logging_dir=str(out_dir / "logs"), skip_completed=False)
    with ProcessSampler() as sampler:
        wall0 = time.perf_counter()
        executor.run()
        wall = time.perf_counter() - wall0
    return wall, sampler.cpu_seconds(), sampler.peaks


def run_ours(input_files: list[Path], out_dir: Path, workers: int):
    """Wall seconds, CPU seconds of the Ray workers, and the sampler (peak RSS per process)."""
    from pipeline.config import load_config
    from pipeline.run import run_stages

    cfg = load_config(None, [f"out={out_dir}", f"ray.num_cpus={workers}", f"ray.max_in_flight={workers * 2}"])
    cfg.input.warcs = [str(p) for p in input_files]
    with ProcessSampler() as sampler:
        wall0 = time.perf_counter()
        run_stages(cfg, "extract", "rules", quiet=True)
        wall = time.perf_counter() - wall0
    worker_cpu = sum(cpu - sampler.baseline.get(pid, 0.0) for pid, cpu in sampler.cpu.items()
                     if _is_ray_worker(sampler.peaks.get(pid, (0, ""))[1]))
    return wall, worker_cpu, sampler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=2000, help="HTML pages at 1x (default 2000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for peer and ours")
    parser.add_argument("--no-peer", action="store_true", help="skip datatrove")
    parser.add_argument("--no-4x", action="store_true", help="skip the 4x-input memory run")
    args = parser.parse_args()

    from pipeline.config import ExtractConfig, RayConfig
    from pipeline.runtime.executor import ensure_ray

    extract_cfg = ExtractConfig()
    files, origin = source_files()
    work = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    try:
        copy = build_copy(files)
        (work / "probe.warc.gz").write_bytes(copy)
        per_copy = html_pages(work / "probe.warc.gz")
        copies = -(-args.pages // len(per_copy))
        input_1x = work / "in1x"
        input_1x.mkdir()
        for i in range(copies):
            (input_1x / f"copy-{i:04d}.warc.gz").write_bytes(copy)
        n_pages = copies * len(per_copy)
        print(f"input: {len(files)} WARC files from {origin}, {len(per_copy)} HTML pages per copy, "
              f"{copies} copies = {n_pages} pages, {args.workers} workers, {os.cpu_count()} cores on the machine")

        pages = per_copy * copies
        wall, cpu = run_limit(pages, extract_cfg)
        limit = {"docs_s": n_pages / wall, "cpu_per_page": cpu / n_pages}
        print(f"(a) limit  trafilatura.extract loop, 1 process: {limit['docs_s']:7.1f} docs/s "
              f"({wall:.1f}s wall, {1000 * limit['cpu_per_page']:.2f} ms CPU/page)")
        del pages

        peer = None
        if not args.no_peer:
            wall, cpu, _ = run_peer(input_1x, work / "peer", args.workers, extract_cfg)
            peer = {"docs_s": n_pages / wall, "cpu_per_page": cpu / n_pages}
            print(f"(b) peer   datatrove LocalPipelineExecutor, {args.workers} workers: {peer['docs_s']:7.1f} docs/s "
                  f"({wall:.1f}s wall, {1000 * peer['cpu_per_page']:.2f} ms CPU/page)")

        ensure_ray(RayConfig(num_cpus=args.workers))
        # warm the worker processes (imports, language model, rule filters), as on a running cluster
        run_ours(sorted(input_1x.glob("*.warc.gz"))[: args.workers], work / "warmup", args.workers)
        wall, cpu, rss_1x = run_ours(sorted(input_1x.glob("*.warc.gz")), work / "ours1x", args.workers)
        ours = {"docs_s": n_pages / wall, "cpu_per_page": cpu / n_pages}
        print(f"(c) ours   ours on Ray, {args.workers} CPUs: {ours['docs_s']:7.1f} docs/s "
              f"({wall:.1f}s wall, {1000 * ours['cpu_per_page']:.2f} ms CPU/page)")

        print()
        print(f"ours / limit per core (wall):      {ours['docs_s'] / (limit['docs_s'] * args.workers):.2f}x  "
              f"(target >= 0.85)")
        print(f"ours / limit per core (CPU/page):  {limit['cpu_per_page'] / ours['cpu_per_page']:.2f}x")
        if peer:
            print(f"ours / peer (wall):                {ours['docs_s'] / peer['docs_s']:.2f}x  (target >= 1.0)")
            print(f"ours / peer (CPU/page):            {peer['cpu_per_page'] / ours['cpu_per_page']:.2f}x")

        mib = 1024 * 1024
        worker_1x = rss_1x.largest_worker()
        driver_1x = rss_1x.peaks.get(os.getpid(), (0, ""))[0]
        print()
        print(f"peak RSS at 1x ({n_pages} pages): largest Ray worker {worker_1x / mib:.0f} MiB, "
              f"driver {driver_1x / mib:.0f} MiB")
        if not args.no_4x:
            input_4x = work / "in4x"
            input_4x.mkdir()
            for i in range(copies * 4):
                os.link(input_1x / "copy-0000.warc.gz", input_4x / f"copy-{i:04d}.warc.gz")
            wall, _, rss_4x = run_ours(sorted(input_4x.glob("*.warc.gz")), work / "ours4x", args.workers)
            worker_4x = rss_4x.largest_worker()
            driver_4x = rss_4x.peaks.get(os.getpid(), (0, ""))[0]
            print(f"peak RSS at 4x ({4 * n_pages} pages): largest Ray worker {worker_4x / mib:.0f} MiB, "
                  f"driver {driver_4x / mib:.0f} MiB ({4 * n_pages / wall:.1f} docs/s)")
            print(f"RSS ratio 4x/1x: worker {worker_4x / max(worker_1x, 1):.2f}, "
                  f"driver {driver_4x / max(driver_1x, 1):.2f} "
                  f"(target: flat, ~1.0)")
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
