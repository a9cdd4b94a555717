"""`curate explain` lookups on a large generated run folder, against the naive lookup, in one invocation.

A run folder shaped like a real one is generated (vectorised numpy/pyarrow; no stage is run): `--rows` extracted
pages in `--files` shards (one Parquet file per shard and dataset, row groups of `--row-group` rows, zstd, the
pipeline.schemas schemas), with 20-hex random doc_ids, URLs over ~5,000 hosts, ~300-character texts and:

    extracted/            every page (EXTRACTED: the rule metrics; a failing metric on the pages the rules drop)
    decisions/extract/    another 30% of records, dropped or errored at extract (http_not_200, not_html,
                          language_not_selected, ..., and warc_request/warc_metadata records that share the URL
                          of a response page, as in a Common Crawl WARC file)
    decisions/rules/      ~25% of extracted, with the failing check as reason and detail
    docs/                 the rest (DOCS, as pipeline.rules_stage.as_docs makes it)
    decisions/dedup/      ~10% of docs: exact/near duplicates (duplicate_of a survivor), too_short_after_line_dedup
    unique/               the survivors (UNIQUE, dup_cluster_size from the duplicates pointing at them)
    scores/               unique + quality_prob, topics, format (SCORED)
    decisions/classify/   quality_prob < 0.5 (below_quality)
    corpus/part-*.parquet the kept rows, resharded, with _manifest.json and README.md
    labels/               ~0.5% of unique (LABELS)
    _state/<stage>/_STAGE_COMPLETE.json (classify's with threshold 0.5 and its reason)

Then, each in its own process (so each peak RSS is its own):
(a) ours: `explain(run_dir, query, reader=reader)` with one shared `RunReader`, as `explain_many` does, for
    `--lookups` queries: kept pages and pages dropped at extract/rules/dedup/classify, by URL and by doc_id,
    and queries that match nothing (a URL of a known host, of an unknown host, an unknown doc_id), asked after
    the pages. The first lookup is reported apart: it opens the footers the others reuse. Peak RSS is read
    after the page lookups and again after the misses (which load every URL of the run for suggestions).
(b) naive: for `--naive-lookups` of the same queries that name a page (one per fate: kept, rules, dedup, ...),
    `pyarrow.dataset.dataset(files).to_table(filter=pc.field("doc_id") == x)` over every dataset folder with
    every column (after the same filter on `url` over extracted/ and decisions/extract/ for a URL query).
Every answer of (a) is checked against what the generator made of the page (its fate: kept in which corpus
file, or the stage and reason it was dropped at; the dedup survivor; the LLM sample; the nearest URLs of a
miss); a wrong answer fails the run.

    .venv/bin/python benchmarks/explain.py [--rows 2000000 | --quick] [--lookups 20] [--naive-lookups 3]
                                           [--files 64] [--workdir DIR] [--keep]

`--workdir DIR` generates into DIR/run (reused by a later invocation with the same generation settings);
without `--keep` the generated folder is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

THRESHOLD = 0.5
THRESHOLD_REASON = "benchmark: fixed threshold 0.5 (generated run)"
N_HOSTS = 5000
WORDS_PER_TEXT = 50
EXTRACT_SHARE = 0.30  # records dropped/errored at extract, relative to --rows
RULES_SHARE = 0.25
DEDUP_SHARE = 0.10  # of docs/
LABEL_SHARE = 0.005  # of unique/
WARC_TARGET_SHARE = 0.015  # pages whose URL also has a warc_request and a warc_metadata record
GENERATOR_VERSION = 1


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a worker
    started by the generating process would report the generator's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------------------------------------ generating


class Generator:
    """Every per-record decision as numpy arrays up front (fates, hosts, scores), then the run written shard by
    shard with pyarrow compute, so 2M rows take a minute or two."""

    # (reason, metric, comparison, threshold, low, high, integer): the failing value is drawn in [low, high)
    RULE_DROPS = [
        ("gopher_short_doc", "n_words", "<", 50, 3, 50, True, 0.35),
        ("c4_too_few_sentences", "n_sentences", "<", 5, 0, 5, True, 0.20),
        ("gopher_enough_stop_words", "stop_word_count", "<", 2, 0, 2, True, 0.10),
        ("gopher_top_2_gram", "top_2gram_char_frac", ">", 0.2, 0.21, 0.6, False, 0.10),
        ("fineweb_line_punct_ratio", "line_punct_ratio", "<", 0.12, 0.0, 0.11, False, 0.10),
        ("fineweb_char_dup_ratio", "char_dup_ratio", ">", 0.01, 0.02, 0.4, False, 0.10),
        ("c4_curly_bracket", "curly_bracket_line", "line", "drop_curly_bracket", 1, 7, True, 0.05),
    ]
    # (reason, outcome, details to draw from, share of the non-WARC-record decisions)
    EXTRACT_DROPS = [
        ("http_not_200", "dropped", ["status 404", "status 301", "status 302", "status 403", "status 500"], 0.36),
        ("not_html", "dropped", ["application/pdf", "image/jpeg", "text/plain", "application/json"], 0.16),
        ("language_not_selected", "dropped", ["de", "ru", "ja", "es", "zh", "fr", "pt"], 0.26),
        ("low_language_score", "dropped", None, 0.08),
        ("no_text", "dropped", [None], 0.11),
        ("extract_failed", "errored", ["ParserError: Document is empty", "ValueError: Unicode strings with "
                                       "encoding declaration are not supported"], 0.03),
    ]
    DEDUP_DROPS = [("exact_duplicate", 0.55), ("near_duplicate", 0.40), ("too_short_after_line_dedup", 0.05)]
    SECTIONS = ["news", "blog", "article", "story", "post", "wiki", "forum/thread", "products", "docs", "recipes",
                "sport", "travel", "health", "science", "opinion", "2019", "2021", "2023", "en", "page"]
    TOPICS = ["Adult", "Art_&_Design", "Software_Development", "Crime_&_Law", "Education_&_Jobs", "Hardware",
              "Entertainment", "Social_Life", "Fashion_&_Beauty", "Finance_&_Business", "Food_&_Dining",
              "Games", "Health", "History", "Home_&_Hobbies", "Industrial", "Literature", "Politics",
              "Religion", "Science_&_Tech.", "Software", "Sports_&_Fitness", "Transportation", "Travel"]
    FORMATS = ["Academic_Writing", "Content_Listing", "Creative_Writing", "Customer_Support", "Comment_Section",
               "FAQ", "Truncated", "Knowledge_Article", "Legal_Notices", "Listicle", "News_Article",
               "Nonfiction_Writing", "About_(Org.)", "News_(Org.)", "About_(Pers.)", "Personal_Blog",
               "Product_Page", "Q&A_Forum", "Spam_/_Ads", "Structured_Data", "Documentation", "Audio_Transcript",
               "Tutorial", "User_Review"]

    def __init__(self, rows: int, files: int, row_group: int, seed: int):
        import numpy as np
        import pyarrow as pa

        self.np, self.pa = np, pa
        self.rows, self.files, self.row_group = rows, files, row_group
        self.rng = rng = np.random.default_rng(seed)
        n = rows
        self.vocab = pa.array(self._words(20_000), pa.string())
        self.vocab_end = pa.array([w + "." for w in self.vocab.to_pylist()], pa.string())
        self.hosts = pa.array(self._hosts(N_HOSTS), pa.string())
        self.sections = pa.array(self.SECTIONS, pa.string())
        popularity = 1.0 / (np.arange(N_HOSTS) + 5.0)
        self.host_p = popularity / popularity.sum()

        # pages (extracted/), in shard order
        self.p_ids = self.hex_strings(n, 20)
        self.p_host = rng.choice(N_HOSTS, size=n, p=self.host_p).astype(np.int32)
        self.p_url = self.urls(self.p_host, np.arange(n))
        self.p_shard = (np.arange(n, dtype=np.int64) * files // n).astype(np.int32)
        lang_draw = rng.random(n)
        self.p_lang = np.where(lang_draw < 0.97, 0, np.where(lang_draw < 0.99, 1, 2)).astype(np.int8)  # en de fr
        applied = self.p_lang == 0
        drop = applied & (rng.random(n) < RULES_SHARE / 0.97)
        weights = np.array([r[-1] for r in self.RULE_DROPS])
        self.p_rule = np.where(drop, rng.choice(len(self.RULE_DROPS), size=n, p=weights / weights.sum()), -1)
        self.p_rule = self.p_rule.astype(np.int8)
        in_docs = self.p_rule < 0
        dedup = in_docs & (rng.random(n) < DEDUP_SHARE)
        weights = np.array([w for _, w in self.DEDUP_DROPS])
        self.p_dedup = np.where(dedup, rng.choice(len(self.DEDUP_DROPS), size=n, p=weights / weights.sum()), -1)
        self.p_dedup = self.p_dedup.astype(np.int8)
        self.p_unique = in_docs & ~dedup
        survivors = np.flatnonzero(self.p_unique)
        self.p_dup_of = np.full(n, -1, np.int64)
        duplicates = np.flatnonzero(dedup & (self.p_dedup != 2))
        self.p_dup_of[duplicates] = rng.choice(survivors, size=len(duplicates))
        self.p_cluster = (np.bincount(self.p_dup_of[duplicates], minlength=n) + 1).astype(np.int32)
        self.p_qp = rng.beta(2.5, 2.0, size=n).astype(np.float32)
        self.p_kept = self.p_unique & (self.p_qp >= np.float32(THRESHOLD))
        self.p_classify_drop = self.p_unique & ~self.p_kept
        self.p_labelled = self.p_unique & (rng.random(n) < LABEL_SHARE)
        self.p_corpus_file = np.full(n, -1, np.int32)

        # records dropped at extract (decisions/extract/): some share the URL of a page (its request and
        # metadata records), the others have URLs of their own
        targets = np.sort(rng.choice(n, size=int(n * WARC_TARGET_SHARE), replace=False))
        m_own = max(int(n * EXTRACT_SHARE) - 2 * len(targets), 1)
        weights = np.array([r[-1] for r in self.EXTRACT_DROPS])
        own_reason = rng.choice(len(self.EXTRACT_DROPS), size=m_own, p=weights / weights.sum())
        own_shard = rng.integers(0, files, size=m_own)
        # reason codes: 0..len(EXTRACT_DROPS)-1, then warc_request, warc_metadata
        n_reasons = len(self.EXTRACT_DROPS)
        x_reason = np.concatenate([own_reason, np.full(len(targets), n_reasons), np.full(len(targets), n_reasons + 1)])
        x_target = np.concatenate([np.full(m_own, -1), targets, targets])
        x_shard = np.concatenate([own_shard, self.p_shard[targets], self.p_shard[targets]])
        order = np.argsort(x_shard, kind="stable")
        self.x_reason, self.x_target, self.x_shard = x_reason[order].astype(np.int8), x_target[order], x_shard[order]
        m = len(order)
        self.x_ids = self.hex_strings(m, 20)
        own_urls = self.urls(rng.choice(N_HOSTS, size=m, p=self.host_p).astype(np.int32), n + np.arange(m))
        has_target = self.x_target >= 0
        self.x_url = pa.compute.if_else(pa.array(has_target), self.p_url.take(pa.array(np.maximum(self.x_target, 0))),
                                        own_urls)
        self.x_detail_pick = rng.integers(0, 1 << 30, size=m)
        self.serial_end = n + m
        self.written: dict[str, dict[str, int]] = {}

    # -------------------------------------------------------------------------------- vectorised pieces

    def _words(self, count: int) -> list[str]:
        letters = "etaoinshrdlucmfwypvbgkjqxz"
        freq = self.np.array([12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0,
                              2.0, 1.9, 1.5, 1.0, 0.8, 0.15, 0.15, 0.1, 0.07])
        lengths = self.rng.integers(2, 8, size=count * 2)
        chars = self.rng.choice(len(letters), size=(count * 2, 8), p=freq / freq.sum())
        words = dict.fromkeys("".join(letters[c] for c in row[:k]) for row, k in zip(chars, lengths))
        return list(words)[:count]

    def _hosts(self, count: int) -> list[str]:
        words = [w for w in self._words(4000) if len(w) >= 3]
        tlds = [".com", ".org", ".net", ".co.uk", ".de", ".info", ".io", ".fr", ".com.au", ".edu"]
        hosts: dict[str, None] = {}
        while len(hosts) < count:
            a, b = self.rng.integers(0, len(words), 2)
            prefix = ["www.", "", "blog.", "news.", "shop."][int(self.rng.integers(0, 5))]
            hosts[f"{prefix}{words[a]}{words[b]}{tlds[int(self.rng.integers(0, len(tlds)))]}"] = None
        return list(hosts)

    def hex_strings(self, n: int, width: int):
        """n random lowercase hex strings of `width` characters, as one Arrow string array (no Python loop)."""
        np, pa = self.np, self.pa
        table = np.frombuffer(b"0123456789abcdef", np.uint8)
        chars = table[self.rng.integers(0, 16, size=(n, width), dtype=np.uint8)]
        offsets = np.arange(0, n * width + 1, width, dtype=np.int32)
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))

    def urls(self, host, serial):
        """https://<host>/<section>/<word>-<word>-<serial>: unique through the serial."""
        pa, pc, n = self.pa, self.pa.compute, len(host)
        section = self.sections.take(pa.array(self.rng.integers(0, len(self.SECTIONS), n)))
        w1 = self.vocab.take(pa.array(self.rng.integers(0, len(self.vocab), n)))
        w2 = self.vocab.take(pa.array(self.rng.integers(0, len(self.vocab), n)))
        return pc.binary_join_element_wise("https://", self.hosts.take(pa.array(host)), "/", section, "/", w1, "-", w2,
                                           "-", pc.cast(pa.array(serial), pa.string()), "")

    def texts(self, n: int):
        pa, pc = self.pa, self.pa.compute
        picks = self.rng.integers(0, len(self.vocab), size=(WORDS_PER_TEXT, n))
        words = [(self.vocab_end if k % 10 == 9 else self.vocab).take(pa.array(picks[k]))
                 for k in range(WORDS_PER_TEXT)]
        return pc.binary_join_element_wise(*words, " ")

    def strings_of(self, choices: list, picks):
        return self.pa.array(choices, self.pa.string()).take(
            self.pa.array(self.np.asarray(picks).astype(self.np.int64) % len(choices)))

    def lists(self, names: list[str], n: int, k: int, *, probs: bool = False):
        """n lists of k entries of `names` (most probable first when `probs`)."""
        np, pa = self.np, self.pa
        offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
        if probs:
            values = np.sort(self.rng.random((n, k)).astype(np.float32), axis=1)[:, ::-1].ravel()
            return pa.ListArray.from_arrays(offsets, pa.array(values, pa.float32()))
        picks = self.rng.integers(0, len(names), size=n * k)
        return pa.ListArray.from_arrays(offsets, pa.array(names, pa.string()).take(pa.array(picks)))

    def table(self, schema, n: int, columns: dict[str, Any]):
        pa = self.pa
        arrays = [columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in schema]
        return pa.Table.from_arrays([pa.array(a) if not isinstance(a, pa.Array | pa.ChunkedArray) else a
                                     for a in arrays], schema=pa.schema([f.with_nullable(True) for f in schema]))

    def write(self, table, path: Path, schema) -> None:
        import pyarrow.parquet as pq

        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.select(schema.names).cast(schema), path, compression="zstd",
                       row_group_size=self.row_group)
        name = str(path.parent.relative_to(self.run))
        stats = self.written.setdefault(name, {"rows": 0, "files": 0})
        stats["rows"] += table.num_rows
        stats["files"] += 1

    # -------------------------------------------------------------------------------- the run

    def generate(self, run: Path) -> None:
        from pipeline import schemas
        from pipeline.io import shard_key, write_json
        from pipeline.rules_stage import as_docs

        np, pa, pc = self.np, self.pa, self.pa.compute
        self.run = run
        extracted_schema = getattr(schemas, "EXTRACTED", schemas.DOCS)
        bounds = np.searchsorted(self.p_shard, np.arange(self.files + 1))
        x_bounds = np.searchsorted(self.x_shard, np.arange(self.files + 1))
        corpus_rows = max(-(-self.rows // self.files), 1)
        corpus_buffer: list[tuple[Any, Any]] = []
        labels: list[Any] = []
        for shard in range(self.files):
            lo, hi = int(bounds[shard]), int(bounds[shard + 1])
            warc = (f"s3://commoncrawl/crawl-data/CC-MAIN-2024-10/segments/1707947474{shard % 1000:03d}.{shard}/warc/"
                    f"CC-MAIN-20240220211055-20240221001055-{shard:05d}.warc.gz")
            key = shard_key(warc)
            if hi > lo:
                extracted = self.extracted_table(lo, hi, warc, extracted_schema)
                self.write(extracted, run / "extracted" / f"{key}.parquet", extracted_schema)
                idx = np.arange(lo, hi)
                rules_drop = self.p_rule[lo:hi] >= 0
                self.write(self.rules_decisions(extracted.filter(pa.array(rules_drop)), idx[rules_drop], warc),
                           run / "decisions" / "rules" / f"{key}.parquet", schemas.DECISIONS)
                docs = as_docs(extracted.filter(pa.array(~rules_drop)))
                self.write(docs, run / "docs" / f"{key}.parquet", schemas.DOCS)
                docs_idx = idx[~rules_drop]
                dedup_drop = self.p_dedup[docs_idx] >= 0
                self.write(self.dedup_decisions(docs.filter(pa.array(dedup_drop)), docs_idx[dedup_drop], key),
                           run / "decisions" / "dedup" / f"{key}.parquet", schemas.DECISIONS)
                uniq_idx = docs_idx[~dedup_drop]
                unique = docs.filter(pa.array(~dedup_drop))
                n = len(uniq_idx)
                lines_removed = np.where(self.rng.random(n) < 0.1, self.rng.integers(1, 4, n), 0)
                unique = unique.append_column("dup_cluster_id", unique.column("doc_id")) \
                    .append_column("dup_cluster_size", pa.array(self.p_cluster[uniq_idx], pa.int32())) \
                    .append_column("lines_removed", pa.array(lines_removed, pa.int32()))
                self.write(unique, run / "unique" / f"{key}.parquet", schemas.UNIQUE)
                labelled = self.p_labelled[uniq_idx]
                if labelled.any():
                    labels.append(self.labels_table(unique.filter(pa.array(labelled))))
                n = unique.num_rows
                scored = unique.append_column("quality_prob", pa.array(self.p_qp[uniq_idx], pa.float32())) \
                    .append_column("topics", self.lists(self.TOPICS, n, 2)) \
                    .append_column("topic_probs", self.lists([], n, 2, probs=True)) \
                    .append_column("format", self.lists(self.FORMATS, n, 2)) \
                    .append_column("format_probs", self.lists([], n, 2, probs=True))
                self.write(scored, run / "scores" / f"part-{key}.parquet", schemas.SCORED)
                kept = self.p_kept[uniq_idx]
                below = scored.filter(pa.array(~kept))
                shown = pc.cast(pc.round(below.column("quality_prob"), 4), pa.string())
                self.write(self.table(schemas.DECISIONS, below.num_rows, {
                    "doc_id": below.column("doc_id"), "stage": self.strings_of(["classify"], np.zeros(below.num_rows)),
                    "outcome": self.strings_of(["dropped"], np.zeros(below.num_rows)),
                    "reason": self.strings_of(["below_quality"], np.zeros(below.num_rows)),
                    "detail": pc.binary_join_element_wise("quality_prob ", shown, f" < threshold {THRESHOLD:.4f}", ""),
                    "url": below.column("url"),
                    "source": self.strings_of([f"unique/{key}.parquet"], np.zeros(below.num_rows))}),
                    run / "decisions" / "classify" / f"part-{key}.parquet", schemas.DECISIONS)
                corpus_buffer.append((scored.filter(pa.array(kept)), uniq_idx[kept]))
                corpus_buffer = self.flush_corpus(corpus_buffer, corpus_rows, final=False)
            xlo, xhi = int(x_bounds[shard]), int(x_bounds[shard + 1])
            self.write(self.extract_decisions(xlo, xhi, warc), run / "decisions" / "extract" / f"{key}.parquet",
                       schemas.DECISIONS)
        self.flush_corpus(corpus_buffer, corpus_rows, final=True)
        if labels:
            table = pa.concat_tables(labels)
            parts = min(16, self.files)
            step = -(-table.num_rows // parts)
            for part in range(parts):
                piece = table.slice(part * step, step)
                if piece.num_rows:
                    self.write(piece, run / "labels" / f"part-{part:05d}.parquet", schemas.LABELS)
        corpus_files = sorted((run / "corpus").glob("part-*.parquet"))
        write_json({"files": [{"path": p.name, "bytes": p.stat().st_size} for p in corpus_files],
                    "rows": int(self.p_kept.sum())}, run / "corpus" / "_manifest.json")
        (run / "corpus" / "README.md").write_text("# generated corpus (benchmarks/explain.py)\n")
        for stage in ("extract", "rules", "dedup", "annotate", "classify"):
            summary: dict[str, Any] = {"stage": stage, "generated_by": "benchmarks/explain.py"}
            if stage == "classify":
                summary.update(threshold=THRESHOLD, threshold_reason=THRESHOLD_REASON)
            write_json(summary, run / "_state" / stage / "_STAGE_COMPLETE.json")

    def flush_corpus(self, buffer: list, size: int, *, final: bool) -> list:
        pa, np = self.pa, self.np
        from pipeline import schemas

        rows = sum(t.num_rows for t, _ in buffer)
        if rows < size and not (final and rows):
            return buffer
        table = pa.concat_tables([t for t, _ in buffer])
        idx = np.concatenate([i for _, i in buffer])
        start = 0
        while table.num_rows - start >= size or (final and start < table.num_rows):
            number = self.written.get("corpus", {}).get("files", 0)
            piece = table.slice(start, size)
            self.write(piece, self.run / "corpus" / f"part-{number:05d}.parquet", schemas.SCORED)
            self.p_corpus_file[idx[start:start + piece.num_rows]] = number
            start += piece.num_rows
        return [(table.slice(start), idx[start:])] if start < table.num_rows else []

    def extracted_table(self, lo: int, hi: int, warc: str, schema):
        np, pa, pc, rng = self.np, self.pa, self.pa.compute, self.rng
        n = hi - lo
        text = self.texts(n)
        n_chars = pc.utf8_length(text)
        applied = self.p_lang[lo:hi] == 0
        record_ids = pc.binary_join_element_wise("<urn:uuid:", self.hex_strings(n, 8), "-", self.hex_strings(n, 4), "-",
                                                 self.hex_strings(n, 4), "-", self.hex_strings(n, 4), "-",
                                                 self.hex_strings(n, 12), ">", "")
        dates = pa.array((1708400000 + rng.integers(0, 86400 * 10, n)).astype("datetime64[s]"))
        metrics: dict[str, Any] = {name: np.zeros(n) for name in
                                   ("hash_word_ratio", "ellipsis_word_ratio", "bullet_line_ratio",
                                    "end_ellipsis_line_ratio", "dup_para_frac", "dup_para_char_frac", "dup_line_frac",
                                    "dup_line_char_frac", "short_line_ratio", "char_dup_ratio", "list_ratio",
                                    *[f"dup_{k}gram_char_frac" for k in range(5, 11)])}
        metrics["n_words"] = np.full(n, WORDS_PER_TEXT, np.float64)
        metrics["mean_word_length"] = np.round((n_chars.to_numpy() - (WORDS_PER_TEXT - 1) - WORDS_PER_TEXT // 10)
                                               / WORDS_PER_TEXT, 4)
        metrics["alpha_word_ratio"] = np.ones(n)
        metrics["stop_word_count"] = rng.integers(2, 9, n).astype(np.float64)
        top2 = np.round(rng.uniform(0.02, 0.15, n), 3)
        metrics.update(top_2gram_char_frac=top2, top_3gram_char_frac=np.round(top2 * 0.8, 3),
                       top_4gram_char_frac=np.round(top2 * 0.6, 3))
        metrics["n_sentences"] = np.full(n, WORDS_PER_TEXT // 10, np.float64)
        metrics["line_punct_ratio"] = np.ones(n)
        metrics["lorem_ipsum_line"] = np.full(n, np.nan)
        metrics["curly_bracket_line"] = np.full(n, np.nan)
        rule = self.p_rule[lo:hi]
        for code, (_reason, metric, _cmp, _thr, low, high, integer, _w) in enumerate(self.RULE_DROPS):
            mask = rule == code
            if mask.any():
                count = int(mask.sum())
                values = rng.integers(low, high, count) if integer else np.round(rng.uniform(low, high, count), 3)
                metrics[metric][mask] = values
        columns: dict[str, Any] = {
            "doc_id": self.p_ids.slice(lo, n), "url": self.p_url.slice(lo, n),
            "warc_path": self.strings_of([warc], np.zeros(n)), "warc_record_id": record_ids,
            "crawl_date": pc.strftime(dates, format="%Y-%m-%dT%H:%M:%SZ"), "text": text,
            "language": self.strings_of(["en", "de", "fr"], self.p_lang[lo:hi]),
            "language_score": pa.array(rng.uniform(0.65, 1.0, n).astype(np.float32)),
            "n_chars": n_chars, "rules_applied": pa.array(applied)}
        types = {f.name: f.type for f in schema}
        for name, values in metrics.items():
            if name in types:
                columns[name] = pa.array(values, mask=~applied | np.isnan(values)).cast(types[name])
        return self.table(schema, n, columns)

    def rules_decisions(self, dropped, idx, warc: str):
        from pipeline import schemas

        pa, pc = self.pa, self.pa.compute
        n = dropped.num_rows
        codes = self.p_rule[idx]
        prefix = [f"{r}: {m} " for r, m, *_ in self.RULE_DROPS]
        suffix = [f" ({t})" if c == "line" else f" {c} {t}" for _r, _m, c, t, *_ in self.RULE_DROPS]
        value = pa.chunked_array([pa.array([], pa.string())])
        if n:
            # the failing metric of each row, as a string (ints print without ".0")
            values = self.np.zeros(n)
            for code, (_r, metric, *_rest) in enumerate(self.RULE_DROPS):
                mask = codes == code
                if mask.any():
                    values[mask] = pc.cast(dropped.column(metric), pa.float64()).to_numpy()[mask]
            value = pc.cast(pa.array(values), pa.string())
        return self.table(schemas.DECISIONS, n, {
            "doc_id": dropped.column("doc_id"), "stage": self.strings_of(["rules"], codes),
            "outcome": self.strings_of(["dropped"], codes),
            "reason": self.strings_of([r for r, *_ in self.RULE_DROPS], codes),
            "detail": pc.binary_join_element_wise(self.strings_of(prefix, codes), value, self.strings_of(suffix, codes),
                                                  ""),
            "url": dropped.column("url"), "source": self.strings_of([warc], codes)})

    def dedup_decisions(self, dropped, idx, key: str):
        from pipeline import schemas

        np, pa = self.np, self.pa
        codes = self.p_dedup[idx]
        dup_of = self.p_dup_of[idx]
        survivor = self.p_ids.take(pa.array(np.maximum(dup_of, 0), mask=dup_of < 0))
        detail = np.where(codes == 2, "2 repeated line(s) removed, 31 chars left (< dedup.min_chars_after_line_dedup"
                          " 50)", None)
        return self.table(schemas.DECISIONS, len(idx), {
            "doc_id": dropped.column("doc_id"), "stage": self.strings_of(["dedup"], codes),
            "outcome": self.strings_of(["dropped"], codes),
            "reason": self.strings_of([r for r, _ in self.DEDUP_DROPS], codes),
            "detail": pa.array(detail.tolist(), pa.string()), "url": dropped.column("url"),
            "source": self.strings_of([f"docs/{key}.parquet"], codes), "duplicate_of": survivor})

    def extract_decisions(self, lo: int, hi: int, warc: str):
        from pipeline import schemas

        pa, pc = self.pa, self.pa.compute
        n = hi - lo
        codes = self.x_reason[lo:hi]
        reasons = [r for r, *_ in self.EXTRACT_DROPS] + ["warc_request", "warc_metadata"]
        outcomes = [o for _, o, *_ in self.EXTRACT_DROPS] + ["dropped", "dropped"]
        pick = self.x_detail_pick[lo:hi]
        detail = pa.nulls(n, pa.string())
        for code, (_r, _o, details, _w) in enumerate(self.EXTRACT_DROPS):
            mask = pa.array(codes == code)
            if details is None:  # low_language_score: the score
                these = pc.cast(pc.round(pa.array(self.rng.uniform(0.2, 0.65, n)), 3), pa.string())
            else:
                these = self.strings_of(details, pick)
            detail = pc.if_else(mask, these, detail)
        return self.table(schemas.DECISIONS, n, {
            "doc_id": self.x_ids.slice(lo, n), "stage": self.strings_of(["extract"], codes),
            "outcome": self.strings_of(outcomes, codes), "reason": self.strings_of(reasons, codes),
            "detail": detail, "url": self.x_url.slice(lo, n), "source": self.strings_of([warc], codes)})

    def labels_table(self, rows):
        from pipeline import schemas

        np, pa = self.np, self.pa
        n = rows.num_rows
        error = self.rng.random(n) < 0.02
        score = self.rng.integers(0, 6, n)
        probs = self.rng.dirichlet(np.ones(6), n).astype(np.float32)
        expected = (probs * np.arange(6)).sum(axis=1)
        return self.table(schemas.LABELS, n, {
            "doc_id": rows.column("doc_id"), "task": self.strings_of(["labels"], score),
            "prompt_id": self.strings_of(["labels-v3"], score),
            "prompt_hash": self.strings_of(["4f1c" * 16], score),
            "model": self.strings_of(["Qwen/Qwen2.5-7B-Instruct"], score),
            "sampling_params": self.strings_of(['{"max_tokens": 256, "temperature": 0.0}'], score),
            "quality_score": pa.array(score, mask=error).cast(pa.int8()),
            "quality_reason": pa.array(np.where(error, None, "Coherent prose with some useful detail.").tolist(),
                                       pa.string()),
            "topics": self.lists(self.TOPICS, n, 1), "format": self.lists(self.FORMATS, n, 1),
            "quality_probs": pa.ListArray.from_arrays(pa.array(np.arange(0, 6 * n + 1, 6, dtype=np.int32)),
                                                      pa.array(probs.ravel())),
            "quality_expected": pa.array(expected.astype(np.float32), mask=error),
            "latency_s": pa.array(self.rng.uniform(0.2, 3, n).astype(np.float32)),
            "prompt_tokens": pa.array(self.rng.integers(300, 900, n).astype(np.int32)),
            "completion_tokens": pa.array(self.rng.integers(20, 120, n).astype(np.int32)),
            "cached": pa.array(np.zeros(n, bool)),
            "error": pa.array(np.where(error, "invalid_json", None).tolist(), pa.string()),
            "error_detail": pa.array(np.where(error, "Expecting ',' delimiter: line 1 column 48", None).tolist(),
                                     pa.string())})

    # -------------------------------------------------------------------------------- the lookups

    CYCLE = [("kept", "url"), ("rules", "url"), ("dedup", "doc_id"), ("classify", "url"), ("extract", "url"),
             ("miss_host", "url"), ("kept", "doc_id"), ("rules", "doc_id"), ("dedup", "url"), ("classify", "doc_id"),
             ("extract", "doc_id"), ("miss_other_host", "url"), ("kept_warc", "url"), ("dedup_short", "url"),
             ("extract_errored", "url"), ("miss_doc_id", "doc_id"), ("labelled", "doc_id")]

    def page_fate(self, i: int) -> dict[str, Any]:
        if self.p_rule[i] >= 0:
            return {"stage": "rules", "outcome": "dropped", "reason": self.RULE_DROPS[self.p_rule[i]][0]}
        if self.p_dedup[i] >= 0:
            j = self.p_dup_of[i]
            return {"stage": "dedup", "outcome": "dropped", "reason": self.DEDUP_DROPS[self.p_dedup[i]][0],
                    "survivor": self.p_ids[int(j)].as_py() if j >= 0 else None}
        fate = {"labelled": bool(self.p_labelled[i])}
        if self.p_kept[i]:
            return {**fate, "stage": "classify", "outcome": "kept", "reason": None,
                    "corpus_file": f"corpus/part-{self.p_corpus_file[i]:05d}.parquet"}
        return {**fate, "stage": "classify", "outcome": "dropped", "reason": "below_quality"}

    def record_fate(self, j: int) -> dict[str, Any]:
        reasons = [r for r, *_ in self.EXTRACT_DROPS] + ["warc_request", "warc_metadata"]
        outcomes = [o for _, o, *_ in self.EXTRACT_DROPS] + ["dropped", "dropped"]
        return {"stage": "extract", "outcome": outcomes[self.x_reason[j]], "reason": reasons[self.x_reason[j]]}

    def expected_for_url(self, url: str) -> dict[str, dict[str, Any]]:
        """Every record of the run with this URL: {doc_id: fate}."""
        np, pc = self.np, self.pa.compute
        out = {}
        for i in np.flatnonzero(pc.equal(self.p_url, url).to_numpy(zero_copy_only=False)):
            out[self.p_ids[int(i)].as_py()] = self.page_fate(int(i))
        for j in np.flatnonzero(pc.equal(self.x_url, url).to_numpy(zero_copy_only=False)):
            out[self.x_ids[int(j)].as_py()] = self.record_fate(int(j))
        return out

    def queries(self, count: int) -> list[dict[str, Any]]:
        np, rng = self.np, self.rng
        n_reasons = len(self.EXTRACT_DROPS)
        errored_code = [r for r, *_ in self.EXTRACT_DROPS].index("extract_failed")
        pools = {
            "kept": np.flatnonzero(self.p_kept), "rules": np.flatnonzero(self.p_rule >= 0),
            "dedup": np.flatnonzero((self.p_dedup >= 0) & (self.p_dedup != 2)),
            "dedup_short": np.flatnonzero(self.p_dedup == 2),
            "classify": np.flatnonzero(self.p_classify_drop), "labelled": np.flatnonzero(self.p_labelled),
            "kept_warc": np.intersect1d(self.x_target[self.x_target >= 0], np.flatnonzero(self.p_kept)),
            "extract": np.flatnonzero((self.x_reason < n_reasons) & (self.x_reason != errored_code)),
            "extract_errored": np.flatnonzero(self.x_reason == errored_code),
        }
        out = []
        for k in range(count):
            kind, by = self.CYCLE[k % len(self.CYCLE)]
            if kind.startswith("miss"):
                host = self.hosts[int(self.p_host[rng.integers(self.rows)])].as_py()  # a host with pages
                serial = self.serial_end + k
                if kind == "miss_host":
                    query = f"https://{host}/news/no-such-page-{serial}"
                elif kind == "miss_other_host":
                    host = f"www.not-in-this-run-{serial}.example"
                    query = f"https://{host}/news/no-such-page-{serial}"
                else:
                    query = self.hex_strings(1, 20)[0].as_py()
                    host = None
                out.append({"kind": kind, "by": by, "query": query, "expect": {}, "host": host})
                continue
            pool = pools[kind]
            if not len(pool):
                continue
            i = int(rng.choice(pool))
            if kind.startswith("extract"):
                doc_id, url = self.x_ids[i].as_py(), self.x_url[i].as_py()
                fate = self.record_fate(i)
            else:
                doc_id, url = self.p_ids[i].as_py(), self.p_url[i].as_py()
                fate = self.page_fate(i)
            expect = self.expected_for_url(url) if by == "url" else {doc_id: fate}
            out.append({"kind": kind, "by": by, "query": url if by == "url" else doc_id, "expect": expect,
                        "doc_id": doc_id})
        # the pages in a random order, then the misses: the first lookup opens the footers the others reuse, and
        # the peak RSS of the page lookups is read before the misses load every URL of the run for suggestions
        hits, misses = [q for q in out if q["expect"]], [q for q in out if not q["expect"]]
        return [hits[i] for i in rng.permutation(len(hits))] + misses


def folder_sizes(run: Path) -> dict[str, tuple[int, int]]:
    sizes: dict[str, tuple[int, int]] = {}
    for path in run.rglob("*.parquet"):
        name = str(path.parent.relative_to(run))
        files, size = sizes.get(name, (0, 0))
        sizes[name] = (files + 1, size + path.stat().st_size)
    return sizes


# ------------------------------------------------------------------------------------------------ workers


def summary_of(result: dict[str, Any]) -> dict[str, Any]:
    pages = []
    # the WARC records of a URL that are not pages (request, metadata) come apart from the page: both count
    for page in result["pages"] + result.get("records", []):
        steps = {s["stage"]: s for s in page["steps"]}
        dedup = steps.get("dedup", {}).get("facts", {})
        rules = steps.get("rules", {}).get("facts", {})
        pages.append({"doc_id": page["doc_id"], "url": page["url"], "fate": page["fate"],
                      "stage": page["fate_stage"], "outcome": page["fate_outcome"], "reason": page["fate_reason"],
                      "survivor": dedup.get("survivor_doc_id") if page["fate_stage"] == "dedup" else None,
                      "failing_checks": [c["reason"] for c in rules.get("checks", []) if c["passed"] is False],
                      "annotate": steps.get("annotate", {}).get("status"),
                      "threshold": steps.get("classify", {}).get("facts", {}).get("threshold")})
    return {"pages": pages, "suggestions": result["suggestions"]}


def worker_ours(run: Path, queries: list[str]) -> dict[str, Any]:
    from pipeline.explain import RunReader, explain

    rss_before = peak_rss_mb()
    reader = RunReader(run)  # one reader for every query, as explain_many shares it
    out = []
    for query in queries:
        wall, cpu = time.perf_counter(), cpu_seconds()
        result = explain(run, query, reader=reader)
        out.append({"seconds": time.perf_counter() - wall, "cpu": cpu_seconds() - cpu, "peak_rss_mb": peak_rss_mb(),
                    **summary_of(result)})
    return {"lookups": out, "rss_before_mb": rss_before, "peak_rss_mb": peak_rss_mb()}


def worker_naive(run: Path, queries: list[str]) -> dict[str, Any]:
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from pipeline.explain import DOC_ID
    from pipeline.io import parquet_files

    rss_before = peak_rss_mb()
    # every dataset folder of the run; a file list, not the folder, because corpus/ also holds README.md
    folders = sorted({p.parent for p in run.rglob("*.parquet")})
    out = []
    for query in queries:
        wall, cpu = time.perf_counter(), cpu_seconds()
        if DOC_ID.match(query):
            ids = {query}
        else:
            ids = set()
            for folder in (run / "extracted", run / "decisions" / "extract"):
                table = ds.dataset([str(p) for p in parquet_files(folder)]).to_table(filter=pc.field("url") == query)
                ids.update(table.column("doc_id").to_pylist())
        found: dict[str, int] = {}
        for folder in folders:
            dataset = ds.dataset([str(p) for p in parquet_files(folder)])
            for doc_id in sorted(ids):
                table = dataset.to_table(filter=pc.field("doc_id") == doc_id)
                if table.num_rows:
                    found[str(folder.relative_to(run))] = found.get(str(folder.relative_to(run)), 0) + table.num_rows
        out.append({"seconds": time.perf_counter() - wall, "cpu": cpu_seconds() - cpu, "doc_ids": sorted(ids),
                    "found": found})
    return {"lookups": out, "rss_before_mb": rss_before, "peak_rss_mb": peak_rss_mb()}


def run_worker(kind: str, run: Path, queries: list[str], work: Path) -> dict[str, Any]:
    query_file = work / f"queries-{kind}.json"
    query_file.write_text(json.dumps(queries))
    done = subprocess.run([sys.executable, __file__, "--worker", kind, str(run), str(query_file)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"worker {kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ checking


def check(query: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """What is wrong with one answer (empty: right)."""
    problems = []
    pages = {p["doc_id"]: p for p in got["pages"]}
    expect = query["expect"]
    if set(pages) != set(expect):
        problems.append(f"pages {sorted(pages)} != expected {sorted(expect)}")
    for doc_id, want in expect.items():
        page = pages.get(doc_id)
        if page is None:
            continue
        for key in ("stage", "outcome", "reason"):
            if page[key] != want[key]:
                problems.append(f"{doc_id}: fate {key} {page[key]!r} != {want[key]!r} ({page['fate']})")
        if want["outcome"] == "kept" and page["fate"] != f"kept in {want['corpus_file']}":
            problems.append(f"{doc_id}: fate {page['fate']!r} != 'kept in {want['corpus_file']}'")
        if want["stage"] == "dedup" and page["survivor"] != want.get("survivor"):
            problems.append(f"{doc_id}: survivor {page['survivor']} != {want.get('survivor')}")
        if want["stage"] == "rules" and want["reason"] not in page["failing_checks"]:
            problems.append(f"{doc_id}: rule checks failing {page['failing_checks']} lack {want['reason']}")
        if want["stage"] == "classify":
            if page["threshold"] != THRESHOLD:
                problems.append(f"{doc_id}: threshold {page['threshold']} != {THRESHOLD}")
            annotate = "sampled" if want.get("labelled") else "not_sampled"
            if page["annotate"] != annotate:
                problems.append(f"{doc_id}: annotate step {page['annotate']!r} != {annotate!r}")
    if not expect:
        if query["kind"] == "miss_doc_id":  # a doc_id has no "nearest": nothing to suggest
            if got["suggestions"]:
                problems.append(f"an unknown doc_id got suggestions {got['suggestions']}")
        elif not got["suggestions"]:
            problems.append("a query matching nothing got no suggestions")
        elif query["kind"] == "miss_host":
            from urllib.parse import urlsplit

            hosts = {urlsplit(u).netloc for u in got["suggestions"]}
            if hosts != {query["host"]}:
                problems.append(f"suggestions of hosts {sorted(hosts)}, not of {query['host']}")
    return problems


# ------------------------------------------------------------------------------------------------ main


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000, help="extracted pages of the generated run")
    parser.add_argument("--quick", action="store_true", help="100,000 rows")
    parser.add_argument("--files", type=int, default=64, help="shards: Parquet files per dataset")
    parser.add_argument("--row-group", type=int, default=65_536, help="rows per Parquet row group")
    parser.add_argument("--lookups", type=int, default=20, help="queries for our explain")
    parser.add_argument("--naive-lookups", type=int, default=3, help="of those (naming a page), for the naive one")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="generate here (DIR/run; reused when generated alike)")
    parser.add_argument("--keep", action="store_true", help="keep the generated run folder")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, run, query_file = args.worker
        queries = json.loads(Path(query_file).read_text())
        result = (worker_ours if kind == "ours" else worker_naive)(Path(run), queries)
        print(json.dumps(result))
        return
    if args.quick:
        args.rows = 100_000

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-explain-"))
    work.mkdir(parents=True, exist_ok=True)
    run = work / "run"
    try:
        bench(args, work, run)
    finally:
        if not args.keep:
            shutil.rmtree(run, ignore_errors=True)
            (work / "run.json").unlink(missing_ok=True)
            for path in work.glob("queries-*.json"):
                path.unlink()
            if not args.workdir:
                shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {run}")


def bench(args, work: Path, run: Path) -> None:
    settings = {"rows": args.rows, "files": args.files, "row_group": args.row_group, "seed": args.seed,
                "version": GENERATOR_VERSION}
    started = time.perf_counter()
    gen = Generator(args.rows, args.files, args.row_group, args.seed)
    planned = time.perf_counter() - started
    marker = work / "run.json"
    if run.is_dir() and marker.exists() and json.loads(marker.read_text()).get("settings") == settings:
        import numpy as np

        saved = json.loads(marker.read_text())
        kept = np.flatnonzero(gen.p_kept)
        gen.p_corpus_file[kept] = np.repeat(np.arange(len(saved["corpus_counts"])), saved["corpus_counts"])
        gen.run = run
        print(f"reusing the run generated in {run}")
    else:
        shutil.rmtree(run, ignore_errors=True)
        marker.unlink(missing_ok=True)
        gen.generate(run)
        import numpy as np

        kept = np.flatnonzero(gen.p_kept)
        counts = np.bincount(gen.p_corpus_file[kept]).tolist()
        marker.write_text(json.dumps({"settings": settings, "corpus_counts": counts}))
        print(f"generated {run} in {time.perf_counter() - started:.1f} s ({planned:.1f} s of it planning)")
    sizes = folder_sizes(run)
    rows = {}
    import pyarrow.parquet as pq

    from pipeline.io import parquet_files
    for name in sizes:
        rows[name] = sum(pq.ParquetFile(p).metadata.num_rows for p in parquet_files(run / name))
    print(f"{'dataset':<20} {'rows':>10} {'files':>6} {'MB':>8}")
    for name in sorted(sizes):
        files, size = sizes[name]
        print(f"{name:<20} {rows[name]:>10,} {files:>6} {size / 1e6:>8.1f}")
    total_rows = sum(rows.values())
    total_bytes = sum(size for _, size in sizes.values())
    print(f"{'total':<20} {total_rows:>10,} {sum(f for f, _ in sizes.values()):>6} {total_bytes / 1e6:>8.1f}")
    print(f"pages: {args.rows:,} extracted + {rows.get('decisions/extract', 0):,} records dropped at extract; "
          f"row groups of <= {args.row_group:,} rows")

    queries = gen.queries(args.lookups)
    ours = run_worker("ours", run, [q["query"] for q in queries], work)
    # the naive lookups: one page of each fate (kept first), the same queries ours answered
    naive_queries = []
    for kind in ("kept", "rules", "dedup", "classify", "extract", "kept_warc", "dedup_short", "extract_errored",
                 "labelled"):
        naive_queries += [q for q in queries if q["kind"] == kind][:1]
    naive_queries = naive_queries[: args.naive_lookups]
    naive = run_worker("naive", run, [q["query"] for q in naive_queries], work)

    print()
    print(f"{'#':>2} {'kind':<16} {'by':<6} {'pages':>5} {'ours':>9} {'cpu':>9}  fate")
    failures = []
    for k, (query, got) in enumerate(zip(queries, ours["lookups"])):
        problems = check(query, got)
        failures += [f"lookup {k} ({query['kind']} by {query['by']}: {query['query']}): {p}" for p in problems]
        fates = "; ".join(p["fate"] for p in got["pages"]) or f"no match, {len(got['suggestions'])} suggestions"
        print(f"{k:>2} {query['kind']:<16} {query['by']:<6} {len(got['pages']):>5} {fmt_s(got['seconds']):>9} "
              f"{fmt_s(got['cpu']):>9}  {'WRONG ' if problems else ''}{fates[:90]}")
    by_query = {q["query"]: r for q, r in zip(queries, ours["lookups"])}
    for query, got in zip(naive_queries, naive["lookups"]):
        want = set(query["expect"])
        if set(got["doc_ids"]) != want:
            failures.append(f"naive {query['query']}: doc_ids {got['doc_ids']} != {sorted(want)}")

    first = ours["lookups"][0]["seconds"]
    rest = [r["seconds"] for r in ours["lookups"][1:]] or [first]
    hits = [r["seconds"] for q, r in zip(queries[1:], ours["lookups"][1:]) if q["expect"]] or rest
    misses = [r["seconds"] for q, r in zip(queries[1:], ours["lookups"][1:]) if not q["expect"]]
    naive_s = [r["seconds"] for r in naive["lookups"]]
    ours_same = [by_query[q["query"]]["seconds"] for q in naive_queries]
    print()
    print(f"rows in the run: {total_rows:,} in {sum(f for f, _ in sizes.values())} files, "
          f"{total_bytes / 1e6:.0f} MB on disk ({args.rows:,} pages)")
    print(f"ours  (explain, one RunReader, {len(queries)} lookups): first {fmt_s(first)}; the rest median "
          f"{fmt_s(statistics.median(rest))}, max {fmt_s(max(rest))}; pages found median "
          f"{fmt_s(statistics.median(hits))}" + (f", no match median {fmt_s(statistics.median(misses))} max "
                                                 f"{fmt_s(max(misses))}" if misses else ""))
    if naive_s:
        print(f"naive (dataset.to_table(filter), all columns, every folder, {len(naive_s)} lookups): median "
              f"{fmt_s(statistics.median(naive_s))}, max {fmt_s(max(naive_s))}")
        print(f"ratio naive/ours: {statistics.median(naive_s) / statistics.median(ours_same):.1f}x on the same "
              f"{len(naive_s)} lookups (ours {', '.join(fmt_s(s) for s in ours_same)}; "
              f"naive {', '.join(fmt_s(s) for s in naive_s)}); "
              f"{statistics.median(naive_s) / statistics.median(hits):.1f}x against our median page lookup")
        naive_cpu = [r["cpu"] for r in naive["lookups"]]
        ours_cpu = [by_query[q["query"]]["cpu"] for q in naive_queries]
        print(f"ratio naive/ours by CPU time (steadier on a shared machine): "
              f"{statistics.median(naive_cpu) / statistics.median(ours_cpu):.1f}x (ours "
              f"{', '.join(fmt_s(s) for s in ours_cpu)}; naive {', '.join(fmt_s(s) for s in naive_cpu)})")
    page_peak = max([r["peak_rss_mb"] for q, r in zip(queries, ours["lookups"]) if q["expect"]] or [0])
    print(f"peak RSS: ours {page_peak:.0f} MB over the page lookups, {ours['peak_rss_mb']:.0f} MB with the "
          f"no-match ones (after imports {ours['rss_before_mb']:.0f} MB); naive {naive['peak_rss_mb']:.0f} MB "
          f"(after imports {naive['rss_before_mb']:.0f} MB)")
    if failures:
        print("\nWRONG ANSWERS:\n  " + "\n  ".join(failures))
        raise SystemExit(1)
    print(f"all {len(queries)} answers right (fate, corpus file, drop reason, dedup survivor, LLM sample, "
          f"suggestions)")


if __name__ == "__main__":
    main()
