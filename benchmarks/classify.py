"""Classify throughput and memory against the limit, in one invocation.

(a) the limit: raw `model.predict(list_of_texts, k=2)` of the quality model on texts already in memory and
    already one-line (nothing read, nothing written);
(b) the classify stages (`curate classify`): read docs Parquet, score on a Ray actor pool (model loaded once per actor),
    write scores/, decide, write decisions/ and the sharded corpus/ with manifest and card.
Same texts, same model. Each measurement runs in its own process so peak RSS is its own; (b) reports the
driver's and the largest actor's peak. Run at 1x and 4x the input: streaming keeps (b)'s memory flat.

Texts: the extraction benchmark's pages (article text and boilerplate of each page, ~4 KB on average),
from /work/shared/data when present, else the bundled subset; repeated with distinct doc_ids up to the size.

    .venv/bin/python benchmarks/classify.py [--docs 40000] [--actors 1] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "extraction-benchmark"
BUNDLED = ROOT / "data" / "extraction-benchmark"
FILE_ROWS = 5000  # docs per input file, like one extract shard


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def base_texts() -> list[str]:
    from classifiers.extraction_benchmark import boilerplate_lines, load_pages, page_html

    folder = SHARED if SHARED.is_dir() else BUNDLED
    pages = load_pages(folder)
    texts = []
    for page_id, page in pages.items():
        texts.append(page["articleBody"])
        texts.append("\n".join(boilerplate_lines(page_html(folder, page_id), page["articleBody"])))
    return [t for t in texts if t.strip()]


def prepare(work: Path, n_docs: int, texts: list[str]) -> Path:
    """docs/ Parquet files of n_docs documents (the base texts repeated, distinct doc_ids)."""
    from pipeline import schemas
    from pipeline.io import write_parquet

    docs_dir = work / f"docs-{n_docs}"
    for start in range(0, n_docs, FILE_ROWS):
        rows = [{"doc_id": f"doc-{i:09d}", "url": f"https://bench.invalid/{i}", "text": texts[i % len(texts)],
                 "language": "en", "n_chars": len(texts[i % len(texts)])}
                for i in range(start, min(start + FILE_ROWS, n_docs))]
        write_parquet(schemas.from_rows(rows, schemas.DOCS), docs_dir / f"part-{start // FILE_ROWS:05d}.parquet",
                      schemas.DOCS)
    return docs_dir


def train_classifier(work: Path) -> Path:
    """A quality classifier (default hyper-parameters) distilled from the bundled benchmark labels."""
    from classifiers.distil import distil
    from classifiers.extraction_benchmark import labelled_texts
    from classifiers.labels import load_jsonl_labels
    from pipeline.config import DistilConfig

    labels = work / "labels.jsonl"
    labels.write_text("".join(json.dumps({"id": t.doc_id, "text": t.text, "label": t.label}) + "\n"
                              for t in labelled_texts(BUNDLED)))
    out = work / "classifier"
    distil(load_jsonl_labels(labels, 3), DistilConfig(), out, quiet=True)
    return out


def worker_raw(docs_dir: Path, classifier: Path) -> dict:
    import pyarrow.parquet as pq

    from classifiers.artifact import load_fasttext
    from classifiers.normalize import normalize_text

    texts = []
    for path in sorted(docs_dir.glob("*.parquet")):
        texts.extend(normalize_text(t) for t in pq.read_table(path, columns=["text"]).column("text").to_pylist())
    model = load_fasttext(classifier / "quality.bin")
    started = time.perf_counter()
    model.predict(texts, k=2)
    seconds = time.perf_counter() - started
    return {"docs": len(texts), "seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def worker_classify(docs_dir: Path, classifier: Path, out: Path, actors: int) -> dict:
    from pipeline.config import load_config
    from pipeline.run import run_stages
    from pipeline.runtime.executor import ensure_ray

    cfg = load_config(None, [f"out={out}", f"classify.classifier={classifier}", f"classify.num_actors={actors}",
                             f"ray.num_cpus={max(actors, 1)}"])
    ensure_ray(cfg.ray)  # a running cluster is the normal case: its start-up is not the stage's cost
    started = time.perf_counter()
    summaries = run_stages(cfg.updated(**{"classify.docs": str(docs_dir)}), "classify-score", "classify", quiet=True)
    seconds = time.perf_counter() - started
    result = summaries["classify"]
    return {"docs": result["input"], "kept": result["kept"], "seconds": seconds, "peak_rss_mb": peak_rss_mb(),
            "actor_peak_rss_mb": summaries["classify-score"].get("actor_peak_rss_mb"),
            "corpus_files": len(result["files"])}


def run_worker(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"worker {args[0]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=40_000, help="documents at 1x (4x is also run)")
    parser.add_argument("--actors", type=int, default=1, help="scoring actors for (b); (a) is one thread")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs of each measurement")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "raw":
            result = worker_raw(Path(rest[0]), Path(rest[1]))
        else:
            result = worker_classify(Path(rest[0]), Path(rest[1]), Path(rest[2]), int(rest[3]))
        print(json.dumps(result))
        return

    with tempfile.TemporaryDirectory(prefix="bench-classify-") as tmp:
        work = Path(tmp)
        texts = base_texts()
        classifier = train_classifier(work)
        size_mb = (classifier / "quality.bin").stat().st_size / 1e6
        print(f"texts: {len(texts)} distinct ({sum(map(len, texts)) / len(texts):.0f} chars on average) from "
              f"{SHARED if SHARED.is_dir() else BUNDLED}; model {size_mb:.0f} MB; (b) with {args.actors} actor(s)")
        print(f"{'scale':>5} {'docs':>8} {'(a) raw docs/s':>15} {'(b) classify docs/s':>20} {'ratio b/a':>9} "
              f"{'(a) RSS MB':>10} {'(b) driver MB':>13} {'(b) actor MB':>12}")
        for scale in (1, 4):
            n_docs = args.docs * scale
            docs_dir = prepare(work, n_docs, texts)
            # alternate (a) and (b) and keep the best of each: on a shared machine, load comes and goes
            raws, ours_runs = [], []
            for i in range(args.repeats):
                raws.append(run_worker("raw", str(docs_dir), str(classifier)))
                ours_runs.append(run_worker("classify", str(docs_dir), str(classifier), str(work / f"out-{scale}-{i}"),
                                            str(args.actors)))
            raw = min(raws, key=lambda r: r["seconds"])
            ours = min(ours_runs, key=lambda r: r["seconds"])
            raw_rate = raw["docs"] / raw["seconds"]
            our_rate = ours["docs"] / ours["seconds"]
            print(f"{scale:>4}x {n_docs:>8} {raw_rate:>15.0f} {our_rate:>20.0f} {our_rate / raw_rate:>9.2f} "
                  f"{raw['peak_rss_mb']:>10.0f} {ours['peak_rss_mb']:>13.0f} {ours['actor_peak_rss_mb'] or 0:>12.0f}")
        print(f"target: ratio >= 0.8 ({args.actors} scoring actor(s) against one predict thread); (b) memory "
              "flat from 1x to 4x")


if __name__ == "__main__":
    main()
