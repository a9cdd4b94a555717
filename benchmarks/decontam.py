"""Decontamination benchmark: our n-gram index (`pipeline.safety.decontam.EvalIndex`) against datatrove's
n-gram decontamination (`NGramsDecontIndexer` + `NGramsDecontFilter`), same documents, same eval items,
same n, in one invocation.

    .venv/bin/python benchmarks/decontam.py [--items 14000] [--docs 3000] [--ngram 13] [--seed 0]

Documents: the texts the extract stage takes out of the bundled WARC files (`data/sample/warc`, run here
with a local executor), replicated to --docs. Eval set: --items seeded multiple-choice items (MMLU has
14,042 test items) written as JSONL (`id`, `question`, `choices`), their words drawn from the documents'
vocabulary by frequency so that n-gram statistics look like text; plus 200 short items (5-10 words).
Planted: 5% of the documents get one long item's question inserted between two paragraphs (punctuation
and case changed), 1% one short item.

datatrove's indexer takes its items from lighteval tasks (it imports lighteval, not installed here, even
when documents are given to it), so its own `compute_hashes` is driven directly with each item's text as
the label (no query), and the hashes are written to `<folder>/<task>.index.hashes` as its `run` does; its
filter then loads that folder and runs unchanged, except for one shim: its default xxhash n-gram hash
is given the n-gram's UTF-8 bytes (as shipped it passes a str, which the pinned xxhash 4.1 refuses: the
filter raises on the first n-gram). Items shorter than n words give datatrove no n-gram at
all, so the same-documents check is over the long plants; ours also finds the short ones (reported).

Printed: build seconds, index bytes and RSS, load seconds, docs/s of `find` vs `filter`, the ratios, the
contaminated documents found by each (and whether they are the same), and our sorted array against a
Python dict of the same keys (memory, lookup time) - the measurement behind the index's structure.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
WARCS = ROOT / "data" / "sample" / "warc"


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def extracted_texts(tmp: Path) -> list[str]:
    import pyarrow.parquet as pq

    from pipeline.config import load_config
    from pipeline.run import run_stages

    warcs = sorted(str(p) for p in WARCS.iterdir() if p.name.endswith((".warc", ".warc.gz")))
    cfg = load_config(None, [f"out={tmp / 'run'}", "ray.executor=local", f"input.warcs=[{', '.join(warcs)}]"])
    run_stages(cfg, "extract", quiet=True)
    texts = []
    for file in sorted((tmp / "run" / "extracted").rglob("*.parquet")):
        texts.extend(t for t in pq.read_table(file, columns=["text"]).column("text").to_pylist() if t)
    return texts


def make_eval_set(path: Path, texts: list[str], n_items: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(long items, short items) written to `path` as JSONL."""
    from pipeline.safety.decontam import _words

    rng = random.Random(seed)
    counts = Counter(w for t in texts for w in _words(t) if w.isalpha())
    vocabulary, weights = zip(*counts.most_common(20_000))
    def words(k: int) -> str:
        return " ".join(rng.choices(vocabulary, weights, k=k))
    long_items = [{"id": f"q{i:05d}", "question": words(rng.randint(15, 45)).capitalize() + "?",
                   "choices": [words(rng.randint(1, 6)) for _ in range(4)]} for i in range(n_items)]
    short_items = [{"id": f"s{i:03d}", "question": words(rng.randint(5, 10)).capitalize() + "?", "choices": []}
                   for i in range(200)]
    with open(path, "w") as fh:
        for item in long_items + short_items:
            fh.write(json.dumps(item) + "\n")
    return long_items, short_items


def disguise(text: str, rng: random.Random) -> str:
    """The same words with other case, punctuation and spacing (normalisation must see through it)."""
    out = []
    for word in text.split():
        word = word.upper() if rng.random() < 0.1 else word
        out.append(word + rng.choice(["", "", "", ",", " -", ";"]))
    return ("  " if rng.random() < 0.5 else "\n").join(out)


def make_documents(texts: list[str], n_docs: int, long_items: list[dict], short_items: list[dict],
                   seed: int) -> tuple[list[str], set[int], set[int]]:
    """(documents, indices with a long plant, indices with a short plant)."""
    rng = random.Random(seed + 1)
    docs, long_planted, short_planted = [], set(), set()
    for i in range(n_docs):
        text = texts[i % len(texts)]
        roll = rng.random()
        if roll < 0.06:
            item = rng.choice(long_items if roll < 0.05 else short_items)
            paragraphs = text.split("\n")
            cut = rng.randrange(len(paragraphs) + 1)
            paragraphs.insert(cut, disguise(item["question"], rng))
            text = "\n".join(paragraphs)
            (long_planted if roll < 0.05 else short_planted).add(i)
        docs.append(text)
    return docs, long_planted, short_planted


def _encoding(hash_func):
    """datatrove's default n-gram hash (`xxhash.xxh64_intdigest(str)`) raises "Strings must be encoded before
    hashing" with the pinned xxhash 4.1: its decontamination crashes on the first n-gram as shipped. The same
    hash of the UTF-8 bytes keeps its design and speed."""
    return lambda text: hash_func(text.encode())


def datatrove_side(items: list[dict], docs: list[str], ngram: int, folder: Path) -> dict:
    from datatrove.data import Document
    from datatrove.pipeline.decont.n_grams import NGramsDecontConfig, NGramsDecontFilter, NGramsDecontIndexer
    from datatrove.utils.hashing import create_hash_func
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    config = NGramsDecontConfig(n_grams=ngram)
    # NGramsDecontIndexer.__new__ refuses to build without lighteval: its compute_hashes, on an instance
    # holding what its __init__ would set
    indexer = object.__new__(NGramsDecontIndexer)
    indexer.config, indexer.tokenizer = config, load_word_tokenizer("eng")
    indexer.hash_func = _encoding(create_hash_func(config.hash_config))
    started = time.perf_counter()
    hashes = set()
    for item in items:
        hashes.update(indexer.compute_hashes(" ".join([item["question"], *item["choices"]])))
    array = np.array(sorted(hashes), dtype=config.hash_config.np_descr)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "bench.index.hashes", "wb") as fh:
        array.tofile(fh)
    build_s = time.perf_counter() - started

    before = rss_mb()
    started = time.perf_counter()
    decont = NGramsDecontFilter(index_folder=str(folder), config=config)
    decont.hash_func = _encoding(decont.hash_func)
    decont.load_index_hashes()
    load_s = time.perf_counter() - started
    load_mb = rss_mb() - before
    documents = [Document(text=t, id=str(i)) for i, t in enumerate(docs)]
    started = time.perf_counter()
    found = {i for i, doc in enumerate(documents) if decont.filter(doc) is not True}
    seconds = time.perf_counter() - started
    return {"build_s": build_s, "hashes": len(array), "file_bytes": array.nbytes, "load_s": load_s,
            "rss_mb": load_mb, "seconds": seconds, "found": found}


def dict_alternative(index, docs: list[str]) -> dict:
    """The same keys in a Python dict (key -> item number): memory and lookup time for the documents."""
    from pipeline.safety.decontam import _rolling, _word_hashes, _words

    before = rss_mb()
    table = dict(zip(index.keys.tolist(), index.items.tolist()))
    dict_mb = rss_mb() - before
    queries = [list(_rolling(_word_hashes(_words(d)), index._lengths)) for d in docs[:500]]
    started = time.perf_counter()
    for per_doc in queries:
        for _, keys in per_doc:
            any(table.get(k) is not None for k in keys.tolist())
    dict_s = time.perf_counter() - started
    started = time.perf_counter()
    for per_doc in queries:
        for _, keys in per_doc:
            pos = np.searchsorted(index.keys, keys)
            inside = pos < len(index.keys)
            np.any(index.keys[pos[inside]] == keys[inside])
    array_s = time.perf_counter() - started
    started = time.perf_counter()
    for per_doc in queries:
        for _, keys in per_doc:
            index._lookup(keys)
    bitmap_s = time.perf_counter() - started
    del table
    return {"dict_mb": dict_mb, "dict_us": dict_s / len(queries) * 1e6, "array_us": array_s / len(queries) * 1e6,
            "bitmap_us": bitmap_s / len(queries) * 1e6, "bitmap_mb": index.bitmap.nbytes / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=14_000)
    parser.add_argument("--docs", type=int, default=3000)
    parser.add_argument("--ngram", type=int, default=13)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from pipeline.safety.decontam import EvalIndex, _words

    tmp = Path(tempfile.mkdtemp(prefix="bench-decontam-"))
    try:
        texts = extracted_texts(tmp)
        eval_path = tmp / "evalset.jsonl"
        long_items, short_items = make_eval_set(eval_path, texts, args.items, args.seed)
        docs, long_planted, short_planted = make_documents(texts, args.docs, long_items, short_items, args.seed)
        words = sum(len(_words(d)) for d in docs)
        print(f"documents: {len(docs):,} ({len(texts)} extracted texts of the bundled WARC files, replicated; "
              f"{words / len(docs):.0f} words each on average), {len(long_planted)} with a long item planted, "
              f"{len(short_planted)} with a short one")

        before = rss_mb()
        index = EvalIndex.build([str(eval_path)], ["question", "choices"], args.ngram)
        build_mb = rss_mb() - before
        stats = index.stats
        saved = tmp / "index.bin"
        index.save(saved)
        started = time.perf_counter()
        loaded = EvalIndex.load(saved)
        load_s = time.perf_counter() - started
        assert loaded == index
        print(f"ours: {stats['items']:,} items ({stats['short_items']} short, {stats['skipped_items']} skipped), "
              f"{stats['ngrams']:,} n-grams, index {stats['bytes'] / 2**20:.1f} MiB (file "
              f"{saved.stat().st_size / 2**20:.1f} MiB, RSS +{build_mb:.0f} MiB after build), built in "
              f"{stats['build_seconds']:.2f}s, loaded in {load_s * 1e3:.0f} ms")

        for doc in docs[:50]:  # warm up
            loaded.find(doc)
        started = time.perf_counter()
        results = [loaded.find(doc) for doc in docs]
        ours_s = time.perf_counter() - started
        ours_found = {i for i, hits in enumerate(results) if hits}
        ours_long = {i for i, hits in enumerate(results) if any(h.item.startswith("q") for h in hits)}
        print(f"ours: find {len(docs) / ours_s:,.0f} docs/s ({ours_s / len(docs) * 1e3:.2f} ms/doc); contaminated "
              f"{len(ours_found)} documents: long plants {len(ours_long & long_planted)}/{len(long_planted)}, "
              f"short plants {len(ours_found & short_planted)}/{len(short_planted)}, "
              f"others {len(ours_found - long_planted - short_planted)}")

        peer = datatrove_side(long_items + short_items, docs, args.ngram, tmp / "datatrove-index")
        print(f"datatrove: {peer['hashes']:,} hashes ({peer['file_bytes'] / 2**20:.1f} MiB file, RSS "
              f"+{peer['rss_mb']:.0f} MiB loaded as its dict), hashed in {peer['build_s']:.2f}s, loaded in "
              f"{peer['load_s']:.2f}s; filter {len(docs) / peer['seconds']:,.0f} docs/s "
              f"({peer['seconds'] / len(docs) * 1e3:.2f} ms/doc); contaminated {len(peer['found'])} documents")

        same = peer["found"] == ours_long
        print(f"ratios ours/datatrove: docs/s {peer['seconds'] / ours_s:.1f}x, build "
              f"{peer['build_s'] / stats['build_seconds']:.1f}x faster, memory {stats['bytes'] / 2**20:.1f} MiB vs "
              f"+{peer['rss_mb']:.0f} MiB RSS; same documents for the long plants: {same}"
              + ("" if same else f" (only datatrove: {sorted(peer['found'] - ours_long)[:10]}, only ours: "
                                 f"{sorted(ours_long - peer['found'])[:10]})"))

        alt = dict_alternative(loaded, docs)
        print(f"index structure (lookups of a document's keys, all lengths, first 500 documents): sorted uint64 "
              f"array + uint32 items, binary search only {alt['array_us']:.0f} µs/doc; with the "
              f"{alt['bitmap_mb']:.1f} MiB bitmap in front (ours; {stats['bytes'] / 2**20:.1f} MiB in all) "
              f"{alt['bitmap_us']:.0f} µs/doc; a Python dict of the same keys +{alt['dict_mb']:.0f} MiB RSS, "
              f"{alt['dict_us']:.0f} µs/doc")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
