"""Tokenize benchmark: tokens per second per core of the tokenize stage against datatrove's own
`DocumentTokenizer`, on the same documents, in one invocation.

    .venv/bin/python benchmarks/tokenize.py [--docs 6000] [--repeats 3] [--tokenizer PATH] [--workdir DIR]

Documents: the extraction benchmark's 181 human-written articles (../shared/data when present, else the bundled
subset), cycled to `--docs` documents, each made unique by a numbered first line. They go through the real mix
stage (a budget above the corpus, one epoch: every document once, in the mix's seeded order), then:

- ours: `curate tokenize` as the registry runs it (`run_stages(cfg, "tokenize")`, the local executor): each
  mix/ file read, encoded, written as datatrove .ds/.ds.index/.ds.metadata, its document index and marker;
- datatrove: `DocumentTokenizer(tokenizer_name_or_path=tokenizer.json, eos_token=..., shuffle_documents=False)`
  over the same documents in the same order, already in memory as datatrove `Document`s (no file read), and
  once more with its default `shuffle_documents=True`.

Both use the same tokenizer file (the tiny demo model's byte-level BPE unless `--tokenizer`) and the same
end-of-document token; the two unshuffled token files are checked to be byte-identical. Rates are per CPU
second of this process (user + system, every thread: the Rust tokenizer runs its own threads), so "per core"
does not depend on how many cores the machine lends; wall-clock rates are printed beside them. Each side runs
`--repeats` times, alternating; the best of each is kept.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_TEXTS = ROOT.parent / "shared" / "data" / "extraction-benchmark" / "ground-truth.json"
BUNDLED_TEXTS = ROOT / "data" / "extraction-benchmark" / "ground-truth.json"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_texts(docs: int) -> list[str]:
    source = SHARED_TEXTS if SHARED_TEXTS.exists() else BUNDLED_TEXTS
    articles = [page["articleBody"] for page in json.loads(source.read_text()).values() if page.get("articleBody")]
    return [f"Document {i}.\n{articles[i % len(articles)]}" for i in range(docs)]


def prepare(workdir: Path, texts: list[str], tokenizer: Path) -> tuple[Path, object]:
    """A run folder holding the texts as a corpus, mixed whole (every document once)."""
    from pipeline import schemas
    from pipeline.config import RunConfig
    from pipeline.io import write_parquet
    from pipeline.run import run_stages

    run = workdir / "run"
    rows = [{"doc_id": f"{i:020x}", "url": f"https://bench.test/{i}", "text": text, "quality_prob": 0.5,
             "topics": ["news"], "format": ["news_article"]} for i, text in enumerate(texts)]
    half = len(rows) // 2
    for i, part in enumerate((rows[:half], rows[half:])):
        write_parquet(schemas.from_rows(part, schemas.SCORED), run / "corpus" / f"part-{i:05d}.parquet", schemas.SCORED)
    cfg = RunConfig(out=str(run)).updated(**{
        "ray.executor": "local", "mix.tokenizer": str(tokenizer), "mix.target_tokens": 10**12, "mix.max_epochs": 1,
        "mix.tokens_per_file": 2_000_000})
    run_stages(cfg, "mix", quiet=True)
    return run, cfg


def run_ours(run: Path, cfg) -> tuple[float, float, int]:
    from pipeline.run import run_stages

    shutil.rmtree(run / "tokens", ignore_errors=True)
    shutil.rmtree(run / "_state" / "tokenize", ignore_errors=True)
    wall, cpu = time.perf_counter(), cpu_seconds()
    summary = run_stages(cfg, "tokenize", quiet=True)["tokenize"]
    return time.perf_counter() - wall, cpu_seconds() - cpu, summary["tokens"]


def run_datatrove(documents: list, tokenizer: Path, eos: str, out: Path, shuffle: bool) -> tuple[float, float, int]:
    from datatrove.pipeline.tokens.tokenizer import DocumentTokenizer

    shutil.rmtree(out, ignore_errors=True)
    step = DocumentTokenizer(output_folder=str(out), tokenizer_name_or_path=str(tokenizer / "tokenizer.json"),
                             eos_token=eos, shuffle_documents=shuffle, seed=0, save_final_metadata=True)
    step.tokenizer  # noqa: B018 (loaded before the clock starts, as our stage loads it in setup)
    wall, cpu = time.perf_counter(), cpu_seconds()
    step.run(iter(documents), rank=0, world_size=1)
    elapsed = time.perf_counter() - wall, cpu_seconds() - cpu
    tokens = sum(path.stat().st_size for path in out.glob("*.ds")) // step.token_size
    return elapsed[0], elapsed[1], tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=6000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokenizer", help="a tokenizer folder (default: the tiny demo model's, built here)")
    parser.add_argument("--workdir", help="scratch folder (default: a temporary one, removed at the end)")
    args = parser.parse_args()

    import pyarrow.parquet as pq
    from datatrove.data import Document

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="tokenize-bench-"))
    try:
        if args.tokenizer:
            tokenizer = Path(args.tokenizer)
        else:
            from pipeline.llm.tiny_model import build_tokenizer

            tokenizer = workdir / "tokenizer"
            build_tokenizer().save_pretrained(tokenizer)
        texts = load_texts(args.docs)
        run, cfg = prepare(workdir, texts, tokenizer)
        mix = sorted((run / "mix").glob("part-*.parquet"))
        table = pq.read_table(mix, columns=["doc_id", "text"])
        documents = [Document(text=text, id=doc_id) for doc_id, text in
                     zip(table.column("doc_id").to_pylist(), table.column("text").to_pylist())]
        ours, theirs, theirs_shuffled = [], [], []
        for _ in range(args.repeats):
            ours.append(run_ours(run, cfg))
            eos = json.loads((run / "tokens" / "_manifest.json").read_text())["eos"]["token"]
            theirs.append(run_datatrove(documents, tokenizer, eos, workdir / "datatrove", shuffle=False))
            theirs_shuffled.append(run_datatrove(documents, tokenizer, eos, workdir / "datatrove-shuffled",
                                                 shuffle=True))
        manifest = json.loads((run / "tokens" / "_manifest.json").read_text())
        ours_bytes = b"".join((run / "tokens" / f["file"]).read_bytes() for f in manifest["files"])
        theirs_bytes = b"".join(p.read_bytes() for p in sorted((workdir / "datatrove").glob("*.ds")))
        identical = ours_bytes == theirs_bytes
        tokens = manifest["tokens"]
        print(f"{len(texts):,} documents, {tokens:,} tokens ({sum(len(t) for t in texts) / 1e6:.1f} MB of text), "
              f"tokenizer {tokenizer}; token files byte-identical to datatrove's: {identical}")
        print(f"{'':28} {'wall s':>8} {'CPU s':>8} {'tokens/s wall':>14} {'tokens/CPU-s':>14}")
        best = {}
        for name, runs in (("ours (curate tokenize)", ours), ("datatrove, no shuffle", theirs),
                           ("datatrove, shuffle (default)", theirs_shuffled)):
            wall = min(r[0] for r in runs)
            cpu = min(r[1] for r in runs)
            assert all(r[2] == tokens for r in runs), (name, [r[2] for r in runs], tokens)
            best[name] = (tokens / wall, tokens / cpu)
            print(f"{name:28} {wall:8.3f} {cpu:8.3f} {tokens / wall:14,.0f} {tokens / cpu:14,.0f}")
        ours_rate = best["ours (curate tokenize)"]
        for name in ("datatrove, no shuffle", "datatrove, shuffle (default)"):
            print(f"ours / {name}: {ours_rate[1] / best[name][1]:.2f}x per CPU second, "
                  f"{ours_rate[0] / best[name][0]:.2f}x wall clock")
        if not identical:
            raise SystemExit("the token files differ from datatrove's: not the same tokenization")
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
