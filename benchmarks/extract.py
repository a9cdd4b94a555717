"""Extract-stage throughput per extractor against a bare loop of the same extractor, the WARC reader against
warcio, a peer and memory, in one invocation on the same pages.

  reader: every record of the input read whole (block bytes, WARC headers), one process: FastWARC's
          ArchiveIterator alone, `pipeline.warc.iter_warc` (what the stage reads with: FastWARC plus damage
          handling), warcio's ArchiveIterator; then the HTTP parsing and charset decoding of the HTML pages.
          Their share of the stage's CPU per page.
  per setting (`extract.extractor`: trafilatura, trafilatura-fast, also with favor_precision off, resiliparse),
  R rounds, best of each:
    (a) bare:  `pipeline.extract.text_extractor(cfg)` -- the very function the stage calls -- in a plain loop
               over the already-decoded HTML, in --workers processes at once (the pages split between them
               as the stage splits them into shards) at the Ray workers' niceness (Ray starts its workers
               at 15), so both sides share a loaded machine alike. Nothing else: no WARC reading, language
               ID, rule metrics, output, Ray.
    (c) stage: the extract stage alone (`curate extract` runs the rules stage after it, timed apart) on a
               local Ray with --workers CPUs, workers warmed first as on a running cluster.
    ratio per core = stage pages/s / bare pages/s (both on --workers cores), and by CPU per page.
  default extractor only: (b) peer, datatrove's LocalPipelineExecutor (WarcReader -> Trafilatura -> Gopher
  repetition, Gopher quality, C4 quality, FineWeb quality -> ParquetWriter) against extract + rules; and
  the peak RSS of the largest Ray worker and of the driver at 1x and 4x the input.

Input: the WARC files under ../shared/data/warc when present, else the bundled data/sample/warc, each
gzip member of every file concatenated into one "copy" file, repeated until there are >= --pages HTML
pages (HTTP 200 text/html responses). pages/s counts those HTML pages for every contender.

The machine may be shared, so besides wall-clock pages/s the script prints CPU milliseconds per page
(user+sys of every process that did the work, sampled), which other processes' load inflates less.

    .venv/bin/python benchmarks/extract.py [--pages 2000] [--workers 2] [--rounds 2]
        [--settings trafilatura,trafilatura-fast,trafilatura-fast/favor_precision=false,resiliparse]
        [--no-reader] [--no-peer] [--no-4x]

A setting is an `extract.extractor` value, optionally followed by `/field=value` for other `extract` fields.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import multiprocessing
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
SETTINGS = ("trafilatura", "trafilatura-fast", "trafilatura-fast/favor_precision=false", "resiliparse")


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


def overrides(setting: str) -> list[str]:
    """`--set` overrides of a setting: "trafilatura-fast/favor_precision=false" -> extract.extractor=..., ..."""
    extractor, *fields = setting.split("/")
    return [f"extract.extractor={extractor}", *(f"extract.{field}" for field in fields)]


def extract_config(setting: str):
    from pipeline.config import load_config

    return load_config(None, overrides(setting)).extract


class ProcessSampler:
    """Samples this process and all its descendants every few ms: each one's peak RSS and CPU seconds.

    Executors hand work to processes that are not our direct children (datatrove's pool forks from a
    forkserver; Ray workers descend from the raylet), so their CPU is sampled, not taken from rusage.
    A process's last interval before it exits can be missed, which favours short-lived processes. Sampling
    costs CPU on the machine it measures (every 20 ms: ~12% of a core), so runs that only need CPU seconds
    of long-lived processes (Ray workers) sample every 0.5 s; peak RSS is sampled every 20 ms."""

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

    def ray_worker_cpu(self) -> float:
        return sum(cpu - self.baseline.get(pid, 0.0) for pid, cpu in self.cpu.items()
                   if _is_ray_worker(self.peaks.get(pid, (0, ""))[1]))

    def largest_worker(self) -> int:
        return max((rss for rss, name in self.peaks.values() if _is_ray_worker(name)), default=0)


def _is_ray_worker(cmdline: str) -> bool:
    # Ray renames its worker processes "ray::IDLE", "ray::extract_warc", ...
    return "ray::" in cmdline or "default_worker.py" in cmdline


# ------------------------------------------------------------------------------------------------- reader
def per_record_gzip(copy: bytes) -> bytes:
    """The same records with one gzip member per record, as Common Crawl writes them (some input files are
    one gzip stream, which warcio refuses to read)."""
    import io

    from fastwarc.warc import ArchiveIterator, WarcRecordType

    raw = gzip.decompress(copy)
    offsets = [r.stream_pos for r in ArchiveIterator(io.BytesIO(raw), parse_http=False,
                                                     record_types=WarcRecordType.any_type)] + [len(raw)]
    return b"".join(gzip.compress(raw[a:b], 6) for a, b in itertools.pairwise(offsets))


def run_reader(copy: Path, pages_per_copy: int) -> dict[str, float]:
    """CPU seconds per HTML page of reading every record of one copy whole, three ways, and of the HTTP
    parsing + decoding of its HTML pages. Best of 3 each."""
    from fastwarc.warc import ArchiveIterator as FastIterator
    from fastwarc.warc import WarcRecordType
    from warcio.archiveiterator import ArchiveIterator as WarcioIterator

    from pipeline.extract import HTML_TYPES
    from pipeline.warc import RawRecord, decode_html, iter_warc, parse_http_response

    def fastwarc_alone() -> int:
        n = 0
        with open(copy, "rb") as handle:
            for record in FastIterator(handle, parse_http=False, record_types=WarcRecordType.any_type):
                dict(record.headers.items())  # dict(record.headers) looks every name up again, ~10x slower
                n += len(record.reader.read())
        return n

    def ours() -> int:
        return sum(len(r.block) for r in iter_warc(copy) if isinstance(r, RawRecord))

    def warcio() -> int:
        n = 0
        with open(copy, "rb") as handle:
            for record in WarcioIterator(handle, no_record_parse=True):
                dict(record.rec_headers.headers)
                n += len(record.raw_stream.read())
        return n

    blocks = [r.block for r in iter_warc(copy) if isinstance(r, RawRecord) and r.record_type == "response"]

    def parse_decode() -> int:
        n = 0
        for block in blocks:
            response = parse_http_response(block)
            if response.status == 200 and (not response.content_type or response.content_type in HTML_TYPES):
                n += len(decode_html(response.body, response.charset)[0])
        return n

    out = {}
    for name, fn in [("fastwarc", fastwarc_alone), ("iter_warc", ours), ("warcio", warcio),
                     ("parse_decode", parse_decode)]:
        best = float("inf")
        for _ in range(3):
            cpu0 = time.process_time()
            fn()
            best = min(best, time.process_time() - cpu0)
        out[name] = best / pages_per_copy  # one copy read: per HTML page of that copy
    return out


# --------------------------------------------------------------------------------------------- bare loop
def _bare_worker(copy: str, copies: int, setting: str, niceness: int, barrier, results) -> None:
    from pipeline.extract import text_extractor

    os.nice(niceness)

    pages = html_pages(Path(copy)) * copies
    extract = text_extractor(extract_config(setting))
    extract(*pages[0])  # warm-up: trafilatura's first call loads its settings
    barrier.wait()
    cpu0, wall0 = time.process_time(), time.monotonic()
    for html, url in pages:
        extract(html, url=url)
    results.put((time.process_time() - cpu0, wall0, time.monotonic(), len(pages)))


def ray_worker_niceness() -> int:
    """The niceness of this driver's Ray task workers (Ray starts them at RAY_worker_niceness, 15 by default, so
    they yield to everything else on the machine), 0 when none is found."""
    for proc in psutil.Process().children(recursive=True):
        try:
            name = " ".join(proc.cmdline()[:1])
            if name.startswith("ray::") and not name.startswith(("ray::DashboardAgent", "ray::RuntimeEnvAgent")):
                return proc.nice()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return 0


def run_bare(copy: Path, copies: int, workers: int, setting: str, niceness: int) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, pages) of `workers` processes running the bare loop at once, the copies
    split between them as the stage's shards are, at the Ray workers' niceness (on a loaded machine a
    process at niceness 15 gets less of it than one at 0: the wall-clock comparison would not be fair)."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(workers), context.Queue()
    shares = [len(range(i, copies, workers)) for i in range(workers)]
    procs = [context.Process(target=_bare_worker, args=(str(copy), share, setting, niceness, barrier, results))
             for share in shares if share]
    for proc in procs:
        proc.start()
    got = [results.get() for _ in procs]
    for proc in procs:
        proc.join()
    return (max(g[2] for g in got) - min(g[1] for g in got), sum(g[0] for g in got), sum(g[3] for g in got))


# ------------------------------------------------------------------------------------------------- stage
def run_stage(input_files: list[Path], out_dir: Path, workers: int, setting: str, *stages: str,
              interval_s: float = 0.5):
    """Wall seconds, CPU seconds of the Ray workers, and the sampler (peak RSS per process)."""
    from pipeline.config import load_config
    from pipeline.run import run_stages

    cfg = load_config(None, [f"out={out_dir}", f"ray.num_cpus={workers}", f"ray.max_in_flight={workers * 2}",
                             *overrides(setting)])
    cfg.input.warcs = [str(p) for p in input_files]
    with ProcessSampler(interval_s) as sampler:
        wall0 = time.perf_counter()
        run_stages(cfg, *stages, quiet=True)
        wall = time.perf_counter() - wall0
    return wall, sampler.ray_worker_cpu(), sampler


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


def _rate(pages: int, wall: float, cpu: float) -> dict[str, float]:
    return {"pages_s": pages / wall, "cpu_ms": 1000 * cpu / pages, "wall": wall}


def _line(label: str, result: dict[str, float]) -> str:
    return (f"{label:52s} {result['pages_s']:8.1f} pages/s  {result['cpu_ms']:7.2f} ms CPU/page  "
            f"({result['wall']:.1f}s wall)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=2000, help="HTML pages at 1x (default 2000)")
    parser.add_argument("--workers", type=int, default=2, help="processes for the bare loop, Ray CPUs, peer workers")
    parser.add_argument("--rounds", type=int, default=2, help="bare loop and stage alternated, best of (default 2)")
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help="comma-separated settings: extractor[/field=value...] (default: %(default)s)")
    parser.add_argument("--no-reader", action="store_true", help="skip the WARC reader comparison")
    parser.add_argument("--no-peer", action="store_true", help="skip datatrove")
    parser.add_argument("--no-4x", action="store_true", help="skip the 4x-input memory run")
    args = parser.parse_args()
    settings = [e.strip() for e in args.settings.split(",") if e.strip()]
    try:
        for setting in settings:
            extract_config(setting)
    except Exception as exc:  # noqa: BLE001 - a bad setting is a usage error
        parser.error(f"--settings: {exc}")

    from pipeline.config import RayConfig
    from pipeline.runtime.executor import ensure_ray

    files, origin = source_files()
    work = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    try:
        copy = build_copy(files)
        probe = work / "probe.warc.gz"
        probe.write_bytes(copy)
        per_copy = len(html_pages(probe))
        copies = -(-args.pages // per_copy)
        input_1x = work / "in1x"
        input_1x.mkdir()
        for i in range(copies):
            (input_1x / f"copy-{i:04d}.warc.gz").write_bytes(copy)
        inputs = sorted(input_1x.glob("*.warc.gz"))
        n_pages = copies * per_copy
        print(f"input: {len(files)} WARC files from {origin}, {per_copy} HTML pages per copy "
              f"({len(copy) / 1e6:.1f} MB gzip), {copies} copies = {n_pages} pages; {args.workers} workers, "
              f"{os.cpu_count()} cores on the machine, load average {os.getloadavg()[0]:.1f}")

        reader = None
        if not args.no_reader:
            records = work / "per-record.warc.gz"
            records.write_bytes(per_record_gzip(copy))
            reader = run_reader(records, per_copy)
            print("\nreading one copy (one gzip member per record), every record whole, 1 process "
                  "(CPU ms per HTML page; best of 3):")
            print(f"  FastWARC ArchiveIterator alone            {1000 * reader['fastwarc']:6.3f}")
            print(f"  pipeline.warc.iter_warc (FastWARC, today)  {1000 * reader['iter_warc']:6.3f}")
            print(f"  warcio ArchiveIterator                     {1000 * reader['warcio']:6.3f}   "
                  f"(warcio / iter_warc: {reader['warcio'] / reader['iter_warc']:.1f}x)")
            print(f"  HTTP parsing + charset decoding            {1000 * reader['parse_decode']:6.3f}")

        ensure_ray(RayConfig(num_cpus=args.workers))
        if not args.no_4x:
            # first, in fresh workers: the runtime keeps one Extractor per run configuration in each worker
            # (pipeline.runtime.executor._WORKERS), so after the runs below a worker would hold a dozen
            run_stage(inputs[: args.workers], work / "warm-rss", args.workers, "trafilatura", "extract")
            mib = 1024 * 1024
            input_4x = work / "in4x"
            input_4x.mkdir()
            for i in range(copies * 4):
                os.link(inputs[0], input_4x / f"copy-{i:04d}.warc.gz")
            peaks = {}
            for label, folder in (("1x", input_1x), ("4x", input_4x)):
                pages = n_pages * (4 if label == "4x" else 1)
                wall, _, sampler = run_stage(sorted(folder.glob("*.warc.gz")), work / f"rss{label}", args.workers,
                                             "trafilatura", "extract", "rules", interval_s=0.02)
                peaks[label] = (sampler.largest_worker(), sampler.peaks.get(os.getpid(), (0, ""))[0])
                print(f"peak RSS at {label} ({pages} pages, extract + rules): largest Ray worker "
                      f"{peaks[label][0] / mib:.0f} MiB, driver {peaks[label][1] / mib:.0f} MiB "
                      f"({pages / wall:.1f} pages/s)")
            print(f"RSS ratio 4x/1x: worker {peaks['4x'][0] / max(peaks['1x'][0], 1):.2f}, "
                  f"driver {peaks['4x'][1] / max(peaks['1x'][1], 1):.2f} (target: flat, ~1.0)")
        results: dict[str, dict[str, dict[str, float]]] = {}
        for n, setting in enumerate(settings):
            # warm the worker processes (imports, language model, rules, the extractor), as on a running cluster
            run_stage(inputs[: args.workers], work / f"warm-{n}", args.workers, setting, "extract")
            niceness = ray_worker_niceness()
            best: dict[str, dict[str, float]] = {}
            for round_ in range(args.rounds):
                wall, cpu, pages = run_bare(probe, copies, args.workers, setting, niceness)
                bare = _rate(pages, wall, cpu)
                out = work / f"stage-{n}-{round_}"
                wall, cpu, _ = run_stage(inputs, out, args.workers, setting, "extract")
                stage = _rate(n_pages, wall, cpu)
                wall, cpu, _ = run_stage(inputs, out, args.workers, setting, "rules")
                rules = _rate(n_pages, wall, cpu)
                shutil.rmtree(out, ignore_errors=True)
                for key, value in (("bare", bare), ("stage", stage), ("rules", rules)):
                    if key not in best or value["cpu_ms"] < best[key]["cpu_ms"]:
                        best[key] = value
            results[setting] = best
            print(f"\n{setting} (best of {args.rounds} rounds)")
            print(_line(f"  (a) bare loop, {args.workers} processes at niceness {niceness}", best["bare"]))
            print(_line(f"  (c) extract stage on Ray, {args.workers} CPUs", best["stage"]))
            print(_line("      then the rules stage", best["rules"]))
            print(f"  stage / bare per core: {best['stage']['pages_s'] / best['bare']['pages_s']:.2f}x by wall, "
                  f"{best['bare']['cpu_ms'] / best['stage']['cpu_ms']:.2f}x by CPU per page (target >= 0.95)")

        if reader and "trafilatura" in results:
            stage_cpu = results["trafilatura"]["stage"]["cpu_ms"] / 1000
            print(f"\nreader's share of the default stage's CPU: {100 * reader['iter_warc'] / stage_cpu:.1f}% reading, "
                  f"{100 * reader['parse_decode'] / stage_cpu:.1f}% HTTP parsing + decoding")
        print("\n| setting | bare pages/s | bare CPU ms/page | stage pages/s | stage CPU ms/page | stage/bare (wall) "
              "| stage/bare (CPU) | rules stage CPU ms/page |")
        print("|---|---|---|---|---|---|---|---|")
        for setting, best in results.items():
            print(f"| {setting} | {best['bare']['pages_s']:.1f} | {best['bare']['cpu_ms']:.2f} | "
                  f"{best['stage']['pages_s']:.1f} | {best['stage']['cpu_ms']:.2f} | "
                  f"{best['stage']['pages_s'] / best['bare']['pages_s']:.2f}x | "
                  f"{best['bare']['cpu_ms'] / best['stage']['cpu_ms']:.2f}x | {best['rules']['cpu_ms']:.2f} |")

        if not args.no_peer:
            wall, cpu, _ = run_peer(input_1x, work / "peer", args.workers, extract_config("trafilatura"))
            peer = _rate(n_pages, wall, cpu)
            wall, cpu, _ = run_stage(inputs, work / "ours-peer", args.workers, "trafilatura", "extract", "rules")
            ours = _rate(n_pages, wall, cpu)
            print()
            print(_line(f"(b) peer: datatrove, {args.workers} workers", peer))
            print(_line("    ours: extract + rules stages, default extractor", ours))
            print(f"    ours / peer: {ours['pages_s'] / peer['pages_s']:.2f}x by wall, "
                  f"{peer['cpu_ms'] / ours['cpu_ms']:.2f}x by CPU per page")

    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
