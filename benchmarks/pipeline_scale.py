"""The whole CPU path at scale, against the peers: extract -> rules -> dedup -> classify on the same generated
WARC corpus, for ours, datatrove and (when --nemo-python is given) NeMo Curator, at 1x / 4x / 16x.

    .venv/bin/python benchmarks/pipeline_scale.py [--scales 1,4,16] [--systems ours,datatrove,nemo]
        [--work /tmp/bench-pipeline] [--nemo-python /work/bench-venvs/nemo/bin/python] [--seed 0]

Corpus (benchmarks/pipeline_peers/corpus.py): 1x = 1,250 pages (16x = 20,000) in WARC files of 125 gzipped
`response` records, every page a real page's markup (../shared/data/warc, data/sample/warc and the
extraction benchmark's pages) with its paragraphs replaced by real paragraphs of same-language pages;
10% exact copies and 10% near-duplicates (~4% of words edited) of earlier pages, unique URLs; seeded, the 1x
corpus is a prefix of the 16x one. Cached under --work/corpus.

Classifier: one fastText quality model trained once with the project's own `curate distil --labels-jsonl`
(high: the article paragraphs of the English template pages; low: their link and navigation texts), cached
under --work/classifier, used by our classify stages and by datatrove's FastTextClassifierFilter.

Systems, each at each scale in a fresh process (so its peak RSS belongs to that run), one after another:
  ours       `pipeline.run.run_stages(cfg, stage)` (the entry `curate run` uses) on a local Ray with 2 CPUs:
             extract, rules, dedup, classify-score, classify; extract.languages [en] as in the job configs.
  datatrove  LocalPipelineExecutor(tasks=2, workers=2): WarcReader -> Trafilatura -> LanguageFilter(en) ->
             Gopher repetition, Gopher quality, C4, FineWeb -> Parquet; the four MinHash stages; then
             FastTextClassifierFilter (same model) -> Parquet. Every executor run timed apart.
  nemo       NeMo Curator 1.4 in its own venv (benchmarks/pipeline_peers/nemo_run.py), what runs on CPU.
Per stage: wall seconds, pages in (WARC records for extraction, documents in later), pages/s per core
(pages in / seconds / 2 cores), peak RSS of the driver and of the largest worker process: a thread of each
run's driver samples the driver and every descendant with psutil every 0.2 s (pipeline_peers/sampler.py;
workers: Ray's `ray::` processes, datatrove's pool processes; Ray's own daemons reported apart in the JSON).

Printed at the end: ours/datatrove end-to-end pages/s per core per scale (target >= 1.5), ours 16x/4x pages/s
(target >= 0.9), RSS growth 4x -> 16x of ours' driver and largest worker (target <= 1.2). Results as JSON in
<work>.json (next to the work folder).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS = HERE / "pipeline_peers"

PAGES_1X = 1250
CPUS = 2


def train_classifier(work: Path) -> Path:
    """A fixed fastText quality model, trained once with `curate distil --labels-jsonl` and reused."""
    out = work / "classifier"
    if (out / "quality.bin").exists() or (out / "quality.ftz").exists():
        return out
    import random

    from pipeline_peers import corpus

    temps, _ = corpus.templates()
    rng = random.Random(0)
    lines = []
    for t in temps:
        if t.language != "en":
            continue
        lines.append({"text": "\n".join(t.paragraphs[:20]), "label": 1})
        tree = corpus._parse(t.html)
        links = [" ".join(a.text_content().split()) for a in tree.iter("a")]
        links = [x for x in links if x]
        if len(links) >= 5:
            rng.shuffle(links)
            lines.append({"text": "\n".join(links[:60]), "label": 0})
    labels = work / "classifier-labels.jsonl"
    labels.write_text("".join(json.dumps(x) + "\n" for x in lines))
    cmd = [sys.executable, "-m", "pipeline.cli", "distil", "--labels-jsonl", str(labels), "--out", str(out),
           "--set", "distil.tune=false", "--set", "distil.variance_seeds=0", "--set", "distil.text_view=page"]
    curate = Path(sys.executable).parent / "curate"
    if curate.exists():
        cmd = [str(curate), *cmd[3:]]
    print(f"training the fixed classifier: {' '.join(cmd)} ({len(lines)} labels)", flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return out


def classifier_model(classifier: Path) -> tuple[Path, float]:
    import yaml

    cfg = yaml.safe_load((classifier / "config.yaml").read_text())
    model = classifier / "quality.bin"
    if not model.exists():
        model = classifier / "quality.ftz"
    quality = cfg.get("quality", cfg)
    return model, float(quality.get("decision_threshold", quality.get("threshold", 0.5)))


def run_child(cmd: list[str], log: Path, env: dict | None = None) -> int:
    with open(log, "w") as handle:
        proc = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, cwd=log.parent,
                              env={**os.environ, **(env or {})})
    return proc.returncode


def corpus_for(work: Path, scale: int, manifest: dict) -> tuple[list[str], int]:
    files = -(-PAGES_1X * scale // manifest["params"]["pages_per_file"])
    paths = [str(work / "corpus" / name) for name in manifest["files"][:files]]
    return paths, min(PAGES_1X * scale, manifest["pages"])


def snapshot_source(work: Path) -> Path:
    """A copy of the project's packages as they are now: the working tree is edited by others while the runs
    go on, and every run of ours must measure the same code (an edit half-saved mid-run broke a run once)."""
    import shutil

    dest = work / "src-snapshot"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ("pipeline", "classifiers", "prompts"):
        if (ROOT / name).exists():
            shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--short", "pipeline", "classifiers"], cwd=ROOT, capture_output=True,
                           text=True).stdout.split("\n")
    (dest / "SNAPSHOT.txt").write_text(f"HEAD {head.strip()} at {time.strftime('%Y-%m-%d %H:%M:%S')}, "
                                       f"{len([d for d in dirty if d.strip()])} modified/new files under "
                                       "pipeline/ and classifiers/\n")
    return dest


def run_system(system: str, scale: int, work: Path, manifest: dict, classifier: Path, args) -> dict:
    warcs, records = corpus_for(work, scale, manifest)
    run_dir = work / "runs" / f"{system}-{scale}x"
    if args.reuse and (run_dir / "result.json").exists():
        result = json.loads((run_dir / "result.json").read_text())
        if result.get("records") == records and result.get("stages"):
            result.update({"scale": scale, "warc_files": len(warcs), "reused": True})
            result.setdefault("finished_at", time.strftime("%H:%M:%S", time.localtime(
                (run_dir / "result.json").stat().st_mtime)))
            print(f"{system} {scale}x: reusing the result of the run that finished at {result['finished_at']} "
                  f"({run_dir / 'result.json'})", flush=True)
            return result
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    result_path = run_dir / "result.json"
    log = run_dir / "log.txt"
    model, threshold = classifier_model(classifier)
    if system == "ours":
        cmd = [sys.executable, str(PEERS / "ours_run.py"), "--warcs", *warcs, "--records", str(records),
               "--out", str(run_dir / "out"), "--classifier", str(classifier), "--result", str(result_path),
               "--num-cpus", str(CPUS),
               # datatrove's pipeline has no line-level dedup (lines repeated across documents): like for like
               "--set", "dedup.line=false"]
        python = sys.executable
    elif system == "datatrove":
        cmd = [sys.executable, str(PEERS / "datatrove_run.py"), "--warcs", *warcs, "--records", str(records),
               "--out", str(run_dir / "out"), "--model", str(model), "--threshold", str(threshold),
               "--result", str(result_path), "--workers", str(CPUS)]
        python = sys.executable
    elif system == "nemo":
        if not args.nemo_python:
            return {"system": system, "scale": scale, "error": "no --nemo-python given"}
        python = args.nemo_python
        cmd = [python, str(PEERS / "nemo_run.py"), "--warcs", *warcs, "--records", str(records),
               "--out", str(run_dir / "out"), "--model", str(model), "--threshold", str(threshold),
               "--result", str(result_path), "--workers", str(CPUS)]
    else:
        raise SystemExit(f"unknown system {system}")
    print(f"[{time.strftime('%H:%M:%S')}] {system} {scale}x: {records} pages in {len(warcs)} WARC files "
          f"(log {log}), load average {os.getloadavg()[0]:.1f}", flush=True)
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    paths = [str(PEERS)] if system == "nemo" else [str(PEERS), str(args.source)]
    code = run_child(cmd, log, env={"PYTHONPATH": os.pathsep.join(paths)})
    wall = time.perf_counter() - started
    if result_path.exists():
        result = json.loads(result_path.read_text())
    else:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        result = {"system": system, "error": f"exit code {code}", "log_tail": tail}
    result.update({"scale": scale, "records": records, "warc_files": len(warcs), "process_wall_s": round(wall, 2),
                   "exit_code": code, "load_average_start": load_start, "load_average_end": os.getloadavg()[0],
                   "finished_at": time.strftime("%H:%M:%S")})
    if result.get("stages"):
        result_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def print_table(result: dict) -> None:
    system, scale = result["system"], result["scale"]
    reused = f", reused: finished at {result['finished_at']}" if result.get("reused") else ""
    load = (f", load average {result['load_average_start']:.1f} at the start, {result['load_average_end']:.1f} at "
            "the end" if "load_average_end" in result else "")
    print(f"\n{system} {scale}x ({result['records']} pages, {result.get('warc_files')} WARC files{load}{reused})")
    if result.get("error") and not result.get("stages"):
        print(f"  FAILED: {result['error']}")
        for line in result.get("log_tail", []):
            print(f"    {line}")
        return
    print(f"  {'stage':34s} {'pages in':>9s} {'seconds':>9s} {'pages/s/core':>13s} {'driver MiB':>11s} "
          f"{'worker MiB':>11s} {'CPU s':>8s}")
    for row in result["stages"]:
        pages = row.get("pages_in")
        rate = f"{pages / row['seconds'] / CPUS:13.1f}" if pages and row["seconds"] > 0 else f"{'':>13s}"
        if row.get("error"):
            print(f"  {row['stage']:34s} {pages if pages is not None else '':>9} {'FAILED':>9s}  {row['error'][:150]}")
            continue
        print(f"  {row['stage']:34s} {pages if pages is not None else '':>9} {row['seconds']:9.2f} {rate} "
              f"{row['driver_rss_mib']:11.0f} {row['worker_rss_mib']:11.0f} {row.get('cpu_s', 0):8.1f}"
              + (f"  ({row['note']})" if row.get("note") else ""))
    e2e = end_to_end(result)
    if e2e:
        print(f"  {'end to end (the stages above)':34s} {result['records']:>9} {e2e['seconds']:9.2f} "
              f"{e2e['pages_s_core']:13.1f} {e2e['driver_rss_mib']:11.0f} {e2e['worker_rss_mib']:11.0f} "
              f"{e2e['cpu_s']:8.1f}   ({1000 * e2e['cpu_s'] / result['records']:.1f} CPU ms per page)")
    for note in result.get("notes", []):
        print(f"  note: {note}")
    if result.get("error"):
        print(f"  error: {result['error']}")


def end_to_end(result: dict) -> dict | None:
    rows = [r for r in result.get("stages", []) if not r.get("setup") and not r.get("error")]
    if not rows:
        return None
    seconds = sum(r["seconds"] for r in rows)
    return {"seconds": seconds, "pages_s_core": result["records"] / seconds / CPUS,
            "driver_rss_mib": max(r["driver_rss_mib"] for r in rows),
            "worker_rss_mib": max(r["worker_rss_mib"] for r in rows), "cpu_s": sum(r.get("cpu_s", 0) for r in rows)}


def print_ratios(results: list[dict], scales: list[int]) -> dict[str, float]:
    """The ratios the benchmark is for. By wall clock (pages/s per core, the targets), and by CPU per page (user +
    system seconds of the run's processes, sampled): on a machine shared with other work the wall clock moves
    with their load; CPU time moves much less."""
    print("\n== ratios ==")
    by = {(r["system"], r["scale"]): r for r in results}
    ratios: dict[str, float] = {}

    def cpu_ms(e2e: dict, result: dict) -> float:
        return 1000 * e2e["cpu_s"] / result["records"]

    for scale in scales:
        ours = by.get(("ours", scale))
        for peer_name in ("datatrove", "nemo"):
            peer = by.get((peer_name, scale))
            if not (ours and peer and end_to_end(ours) and end_to_end(peer)):
                continue
            eo, ep = end_to_end(ours), end_to_end(peer)
            value = eo["pages_s_core"] / ep["pages_s_core"]
            by_cpu = cpu_ms(ep, peer) / cpu_ms(eo, ours)
            ratios[f"ours_vs_{peer_name}_{scale}x"] = value
            ratios[f"ours_vs_{peer_name}_{scale}x_by_cpu"] = by_cpu
            partial = " (the peer ran only part of the path: see its notes)" if peer.get("partial") else ""
            target = " (target >= 1.5)" if peer_name == "datatrove" else ""
            print(f"ours / {peer_name} end-to-end pages/s per core at {scale}x: {value:.2f}x{target}; by CPU per "
                  f"page {by_cpu:.2f}x ({cpu_ms(eo, ours):.1f} vs {cpu_ms(ep, peer):.1f} ms){partial}")
    for name in ("ours", "datatrove"):
        r4, r16 = by.get((name, 4)), by.get((name, 16))
        if not (r4 and r16 and end_to_end(r4) and end_to_end(r16)):
            continue
        e4, e16 = end_to_end(r4), end_to_end(r16)
        ratios[f"{name}_16x_vs_4x_pages_s"] = e16["pages_s_core"] / e4["pages_s_core"]
        ratios[f"{name}_16x_vs_4x_by_cpu"] = cpu_ms(e4, r4) / cpu_ms(e16, r16)
        ratios[f"{name}_rss_growth_driver_4x_16x"] = e16["driver_rss_mib"] / e4["driver_rss_mib"]
        ratios[f"{name}_rss_growth_worker_4x_16x"] = e16["worker_rss_mib"] / e4["worker_rss_mib"]
        targets = ("(target >= 0.9)", "(target <= 1.2)") if name == "ours" else ("", "")
        print(f"{name} 16x / 4x pages/s: {ratios[f'{name}_16x_vs_4x_pages_s']:.2f} {targets[0]}; by CPU per page "
              f"{ratios[f'{name}_16x_vs_4x_by_cpu']:.2f}")
        print(f"{name} RSS growth 4x -> 16x: driver {ratios[f'{name}_rss_growth_driver_4x_16x']:.2f}x, largest "
              f"worker {ratios[f'{name}_rss_growth_worker_4x_16x']:.2f}x {targets[1]}")
        for row4, row16 in zip(r4["stages"], r16["stages"], strict=False):
            if row4["stage"] == row16["stage"] and row4.get("pages_in") and row16.get("pages_in"):
                rate = (row16["pages_in"] / row16["seconds"]) / (row4["pages_in"] / row4["seconds"])
                cpu = ((row4.get("cpu_s", 0) / row4["pages_in"]) / max(row16.get("cpu_s", 0) / row16["pages_in"], 1e-9))
                print(f"  {row4['stage'][:34]:34s} pages/s 16x/4x {rate:5.2f} (by CPU {cpu:5.2f})  "
                      f"driver RSS {row16['driver_rss_mib'] / max(row4['driver_rss_mib'], 1):.2f}x  "
                      f"worker RSS {row16['worker_rss_mib'] / max(row4['worker_rss_mib'], 1):.2f}x")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", default="1,4,16")
    parser.add_argument("--systems", default="ours,datatrove")
    parser.add_argument("--work", default="/tmp/bench-pipeline")
    parser.add_argument("--nemo-python", default=None)
    parser.add_argument("--nemo-scales", default="1,4", help="scales NeMo Curator runs at (default 1,4: its 1x "
                        "takes ~5 minutes here)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--paragraph-edit", type=float, default=0.0,
                        help="share of the words of every drawn paragraph replaced, so that paragraphs do not recur "
                        "verbatim across pages (default 0, the corpus measured so far; see pipeline_peers/corpus.py)")
    parser.add_argument("--no-snapshot", action="store_true", help="run the working tree's code itself instead "
                        "of a copy taken at the start")
    parser.add_argument("--reuse", action="store_true", help="reuse a system's result at a scale when its run "
                        "folder under --work holds one for the same corpus (runs interrupted and resumed)")
    parser.add_argument("--from-json", help="print the tables and ratios of an earlier run's JSON, run nothing")
    args = parser.parse_args()
    scales = [int(s) for s in args.scales.split(",") if s.strip()]
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        for result in saved["results"]:
            print_table(result)
        print_ratios(saved["results"], sorted({r["scale"] for r in saved["results"]}))
        return
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if args.nemo_python and "nemo" not in systems:
        systems.append("nemo")
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)

    from pipeline_peers import corpus

    started = time.perf_counter()
    manifest = corpus.generate(work / "corpus", PAGES_1X * max(scales), seed=args.seed,
                               paragraph_edit=args.paragraph_edit)
    print(f"corpus: {manifest['pages']} pages in {len(manifest['files'])} WARC files ({manifest['bytes'] / 1e6:.0f} "
          f"MB gzip) under {work / 'corpus'}; {manifest['kinds']}; {manifest['templates']} real templates "
          f"{manifest['template_languages']}; ready in {time.perf_counter() - started:.0f}s", flush=True)
    args.source = ROOT if args.no_snapshot else snapshot_source(work)
    if not args.no_snapshot:
        print(f"code: a copy of pipeline/, classifiers/, prompts/ in {args.source} "
              f"({(args.source / 'SNAPSHOT.txt').read_text().strip()})", flush=True)
    classifier = train_classifier(work)
    model, threshold = classifier_model(classifier)
    print(f"classifier: {model} (threshold {threshold:.3f})", flush=True)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)

    results = []
    json_path = Path(str(work) + ".json")
    nemo_scales = [int(x) for x in args.nemo_scales.split(",") if x.strip()]
    # NeMo Curator's larger scales last: they are the slowest runs and the least needed for the ratios
    plan = [(scale, system) for scale in scales for system in systems
            if system != "nemo" or scale == min(nemo_scales, default=0)]
    plan += [(scale, "nemo") for scale in scales if "nemo" in systems and scale in nemo_scales[1:]]
    for scale, system in plan:
        result = run_system(system, scale, work, manifest, classifier, args)
        results.append(result)
        print_table(result)
        json_path.write_text(json.dumps({"corpus": manifest, "results": results}, indent=2, default=str) + "\n")

    ratios = print_ratios(results, scales)
    json_path.write_text(json.dumps({"corpus": manifest, "results": results, "ratios": ratios}, indent=2,
                                    default=str) + "\n")
    print(f"\nresults: {json_path}")


if __name__ == "__main__":
    main()
