"""URL blocklist benchmark: a 1,000,000-domain list's load time and memory, the cost of one `match`, and the
extract stage with and without the list, in one invocation.

    .venv/bin/python benchmarks/blocklist.py [--domains 1000000] [--seed 0] [--no-extract]

1. A seeded list of realistic-looking domains (syllable names, a TLD mix close to a real adult-site
   list, 15% with a subdomain, some hosts-file and comment lines) is written to a temp folder, together
   with the hosts of about a tenth of the bundled WARC files' pages (so that the list blocks something).
2. Load: `UrlBlocklist.load` (wall seconds, RSS delta after a gc), against the floor of reading the file
   into a plain `set` of its lines.
3. Match: `match(url)` over every WARC-Target-URI of the bundled WARC files (`data/sample/warc`, read with
   fastwarc), repeated to >= 200,000 calls, against `split_url` alone (the normalisation) and a plain
   `set` lookup of the raw URL (the floor).
4. Extract: `run_stages(cfg, "extract")` on a local executor over the bundled WARC files, without and with
   `filters.url_blocklist=[the list]`; the ratio with/without, pages dropped as `blocked_url`. When the
   config does not know `filters.url_blocklist` yet, that is printed and steps 1-3 still are.
"""

from __future__ import annotations

import argparse
import gc
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WARCS = ROOT / "data" / "sample" / "warc"

SYLLABLES = ("ka", "lo", "mi", "na", "ro", "te", "vi", "xo", "sa", "pu", "ri", "de", "zo", "ba", "fe", "go", "hu",
             "ja", "ne", "qu", "wi", "yo", "tra", "ster", "ex", "in", "on", "al", "er", "is")
WORDS = ("hot", "cam", "live", "sex", "tube", "free", "girls", "video", "porn", "date", "chat", "xxx", "club",
         "bet", "casino", "loan", "pills", "shop", "best", "top", "my", "the", "web", "net", "online")
TLDS = (("com", 52), ("net", 9), ("org", 4), ("de", 4), ("ru", 6), ("info", 4), ("xyz", 3), ("co.uk", 2),
        ("fr", 2), ("nl", 2), ("biz", 2), ("pl", 2), ("it", 1), ("es", 1), ("com.br", 2), ("cz", 1), ("jp", 1),
        ("tv", 1), ("xxx", 1))
SUBDOMAINS = ("m", "en", "de", "cdn", "img", "static", "blog", "shop", "live", "secure", "mail", "fr")


def fake_domains(n: int, seed: int) -> list[str]:
    """n distinct domain names (seeded), shaped like a real blocklist's."""
    rng = random.Random(seed)
    tlds = [t for t, _ in TLDS]
    weights = [w for _, w in TLDS]
    out: set[str] = set()
    while len(out) < n:
        shape = rng.random()
        if shape < 0.45:
            name = rng.choice(WORDS) + rng.choice(WORDS) + ("" if rng.random() < 0.6 else str(rng.randrange(100)))
        elif shape < 0.8:
            name = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 5)))
        else:
            name = rng.choice(WORDS) + "-" + "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        domain = f"{name}.{rng.choices(tlds, weights)[0]}"
        if rng.random() < 0.15:
            domain = f"{rng.choice(SUBDOMAINS)}.{domain}"
        out.add(domain)
    domains = sorted(out)
    rng.shuffle(domains)
    return domains


def warc_urls() -> list[str]:
    """WARC-Target-URI of every record of the bundled WARC files (requests, responses, metadata...)."""
    from fastwarc.warc import ArchiveIterator

    urls = []
    for path in sorted(WARCS.iterdir()):
        if not path.name.endswith((".warc", ".warc.gz")):
            continue
        with open(path, "rb") as fh:
            for record in ArchiveIterator(fh, parse_http=False):
                uri = record.headers.get("WARC-Target-URI")
                if uri:
                    urls.append(uri.strip("<>"))
    return urls


def response_hosts() -> list[str]:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    from pipeline.safety.urls import split_url

    hosts = []
    for path in sorted(WARCS.iterdir()):
        if path.name.endswith((".warc", ".warc.gz")):
            with open(path, "rb") as fh:
                for record in ArchiveIterator(fh, record_types=WarcRecordType.response, parse_http=False):
                    if uri := record.headers.get("WARC-Target-URI"):
                        hosts.append(split_url(uri.strip("<>"))[0])
    return hosts


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def write_list(folder: Path, n: int, seed: int) -> tuple[Path, list[str]]:
    """The big list (plain text): n generated domains + the hosts of ~10% of the WARC pages."""
    hosts = response_hosts()
    distinct = sorted(set(hosts))
    rng = random.Random(seed + 1)
    rng.shuffle(distinct)
    blocked, covered = [], 0
    for host in distinct:
        if covered >= len(hosts) // 10:
            break
        blocked.append(host)
        covered += hosts.count(host)
    domains = fake_domains(n, seed)
    lines = ["# generated by benchmarks/blocklist.py", *domains[: n // 2], "0.0.0.0 hosts-file-line.example",
             "", "# bundled WARC hosts", *blocked, *domains[n // 2:]]
    path = folder / "domains"
    path.write_text("\n".join(lines) + "\n")
    return path, blocked


def bench_load(path: Path) -> dict:
    from pipeline.safety.urls import UrlBlocklist

    before = rss_mb()
    started = time.perf_counter()
    floor = set(path.read_text().splitlines())
    floor_s = time.perf_counter() - started
    floor_mb = rss_mb() - before
    del floor
    before = rss_mb()
    started = time.perf_counter()
    blocklist = UrlBlocklist.load([str(path)])
    load_s = time.perf_counter() - started
    load_mb = rss_mb() - before
    return {"blocklist": blocklist, "load_s": load_s, "rss_mb": load_mb, "floor_s": floor_s, "floor_mb": floor_mb}


def per_call_us(fn, items: list[str], min_calls: int = 200_000) -> float:
    repeats = max(1, -(-min_calls // max(1, len(items))))
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeats):
            for item in items:
                fn(item)
        best = min(best, time.perf_counter() - started)
    return best / (repeats * len(items)) * 1e6


def run_extract(out: Path, warcs: list[str], blocklist: str | None) -> dict:
    from pipeline.config import load_config
    from pipeline.run import run_stages

    overrides = [f"out={out}", "ray.executor=local", f"input.warcs=[{', '.join(warcs)}]"]
    if blocklist:
        overrides.append(f"filters.url_blocklist=[{blocklist}]")
    cfg = load_config(None, overrides)
    started = time.perf_counter()
    summary = run_stages(cfg, "extract", quiet=True)["extract"]
    return {"seconds": time.perf_counter() - started, "summary": summary, "out": out}


def blocked_pages(out: Path) -> int:
    import pyarrow.parquet as pq

    files = sorted((out / "decisions" / "extract").rglob("*.parquet"))
    count = 0
    for file in files:
        table = pq.read_table(file, columns=["reason"])
        count += sum(1 for r in table.column("reason").to_pylist() if r == "blocked_url")
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--domains", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-extract", action="store_true")
    args = parser.parse_args()

    from pipeline.safety.urls import UrlBlocklist, split_url

    tmp = Path(tempfile.mkdtemp(prefix="bench-blocklist-"))
    try:
        started = time.perf_counter()
        path, planted = write_list(tmp, args.domains, args.seed)
        print(f"list: {args.domains:,} generated domains + {len(planted)} bundled-WARC hosts, "
              f"{path.stat().st_size / 2**20:.1f} MiB, written in {time.perf_counter() - started:.1f}s")

        load = bench_load(path)
        blocklist = load["blocklist"]
        print(f"load: {load['load_s']:.2f}s, RSS +{load['rss_mb']:.0f} MiB for {len(blocklist):,} entries "
              f"({load['rss_mb'] * 2**20 / len(blocklist):.0f} B/entry); floor (set of raw lines): "
              f"{load['floor_s']:.2f}s, +{load['floor_mb']:.0f} MiB -> ours/floor "
              f"{load['load_s'] / load['floor_s']:.2f}x time, "
              f"{load['rss_mb'] / max(load['floor_mb'], 1e-9):.2f}x memory")

        urls = warc_urls()
        hits = sum(blocklist.match(u) is not None for u in urls)
        raw = set(urls[: len(urls) // 2])
        match_us = per_call_us(blocklist.match, urls)
        split_us = per_call_us(split_url, urls)
        floor_us = per_call_us(raw.__contains__, urls)
        ut1 = UrlBlocklist.load([str(ROOT / "tests" / "fixtures" / "safety" / "ut1")],
                                ["porn", "*casino*", "free porn", "xxx*"])
        words_us = per_call_us(ut1.match, urls)
        print(f"match: {len(urls)} WARC-Target-URIs ({hits} blocked by the 1M list): {match_us:.2f} µs/URL "
              f"(normalisation alone {split_us:.2f} µs, raw set lookup {floor_us:.3f} µs); "
              f"UT1 fixture + 4 banned words: {words_us:.2f} µs/URL")

        if args.no_extract:
            return
        warcs = sorted(str(p) for p in WARCS.iterdir() if p.name.endswith((".warc", ".warc.gz")))
        without = run_extract(tmp / "run-without", warcs, None)
        try:
            with_list = run_extract(tmp / "run-with", warcs, str(path))
        except Exception as exc:  # the lead's config key may not exist yet: say so, keep the figures
            if "url_blocklist" in str(exc) or "filters" in str(exc):
                print(f"extract: without the list {without['seconds']:.1f}s; the with-list run needs the lead's "
                      f"integration (filters.url_blocklist): {str(exc).splitlines()[0]}")
                return
            raise
        dropped = blocked_pages(with_list["out"])
        print(f"extract over {len(warcs)} bundled WARC files (local executor): without {without['seconds']:.1f}s, "
              f"with the {len(blocklist):,}-entry list {with_list['seconds']:.1f}s -> with/without "
              f"{with_list['seconds'] / without['seconds']:.2f}x; {dropped} pages dropped as blocked_url")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
