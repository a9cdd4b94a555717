"""Dedup stage: docs/ -> unique/ (exact, URL and MinHash-LSH near-duplicates, then repeated lines).

Steps, each a set of Ray tasks over shards (input files), groups of `dedup.shards_per_task` consecutive shards,
or partitions (hash ranges), talking through the file shuffle in `pipeline.dedup.shuffle`. Every shuffle writer
writes one file per partition, so shards are grouped for writing and routed back per group: at scale that is
groups x partitions files instead of shards x partitions.

1. sign (per group): every document emits grouping keys -- its normalised-text digest, its URL digest, and
   one LSH key per MinHash band (with a compact signature when candidates are verified) -- partitioned by key.
2. group (per partition): documents sharing a key become edges to the group's smallest document (star, never
   all pairs); band candidates are linked only when their signature-estimated Jaccard passes
   `dedup.verify_threshold`. Edges are partitioned by document.
3. components: large-star / small-star rounds until every component is a star around its smallest document
   (see pipeline.dedup.components), then labels are routed back to the group of each document's home shard.
4. lines (per group, then per partition): survivors' lines are counted across the dataset; lines found in more
   than `dedup.max_line_repeats` documents are the repeated ones.
5. output (per shard): survivors go to unique/ with repeated lines removed; every other document gets a
   decisions/dedup row naming the survivor; a stats marker per shard feeds the conservation check.

A document's id in the graph is a string that sorts by (crawl date, doc_id): the smallest node of a component
is its survivor, and the string also carries the home shard, row and digests so labels and reasons need no
join. Nothing here holds more than one group's records or one partition in memory.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import schemas, store
from pipeline.accounting import peak_rss_mb
from pipeline.config import DedupConfig, RunConfig
from pipeline.dedup.components import EDGES, LABELS, connected_components, star_labels, write_undirected
from pipeline.dedup.keys import KEY_BYTES, MinHasher, compact_signature, exact_digest, line_digest, url_digest
from pipeline.dedup.shuffle import WorkArea, digest_partitions
from pipeline.io import RunLayout, parquet_files, write_json
from pipeline.runtime import DOCUMENTS, Input, Output, Shard, ShardResult, Stage
from pipeline.sources import InputError

STAGE = "dedup"
EXACT_DUPLICATE = "exact_duplicate"
URL_DUPLICATE = "url_duplicate"
NEAR_DUPLICATE = "near_duplicate"
TOO_SHORT = "too_short_after_line_dedup"

# Scratch records (see pipeline.dedup.shuffle): a grouping key and the document carrying it; `signature` is
# the compact MinHash signature on band keys when candidates are verified.
KEY_RECORDS = pa.schema([pa.field("key", pa.binary(KEY_BYTES), nullable=False),
                         pa.field("node", pa.string(), nullable=False),
                         pa.field("signature", pa.binary())])
# How many of a shard's surviving documents contain a line (digest); routed back to the shard's group when
# repeated.
LINE_COUNTS = pa.schema([pa.field("line", pa.uint64(), nullable=False), pa.field("shard", pa.int64(), nullable=False),
                         pa.field("docs", pa.int64(), nullable=False)])
REQUIRED_COLUMNS = ("doc_id", "url", "crawl_date", "text")
# A band group whose members match none of this many earlier members stops growing new centres: bounds the
# comparisons in a degenerate group (thousands of unrelated documents sharing one band) to k x this.
MAX_CENTRES_PER_BAND = 64


class DedupInputError(InputError):
    """The docs input cannot be deduplicated as given; the message names the folder or file and the problem."""


# ---- graph node ids ---------------------------------------------------------------------------------------

_SEP = "\x01"  # sorts below every printable character, so "abc" + _SEP < "abcd" + _SEP as for the ids alone
_UNDATED = "9" * 14


def date_key(crawl_date: str | None) -> str:
    """14 digits (YYYYMMDDhhmmss) of a WARC date; undated documents sort after every dated one."""
    digits = re.sub(r"\D", "", crawl_date or "")
    return digits[:14].ljust(14, "0") if len(digits) >= 8 else _UNDATED


def node_id(crawl_date: str | None, doc_id: str, shard: int, row: int, exact: bytes, url: bytes | None) -> str:
    return _SEP.join([date_key(crawl_date) + doc_id, f"{shard:06d}", f"{row:09d}", exact.hex(),
                      url.hex() if url else ""])


def parse_node(node: str) -> dict[str, Any]:
    head, shard, row, exact, url = node.rsplit(_SEP, 4)
    return {"doc_id": head[14:], "shard": int(shard), "row": int(row), "exact": exact, "url": url}


def duplicate_reason(member: dict[str, Any], survivor: dict[str, Any]) -> str:
    """How a dropped document relates to the survivor it names: same normalised text, else same URL, else
    similar text (possibly through other documents of the component)."""
    if member["exact"] == survivor["exact"]:
        return EXACT_DUPLICATE
    if member["url"] and member["url"] == survivor["url"]:
        return URL_DUPLICATE
    return NEAR_DUPLICATE


# ---- per-document pure functions ----------------------------------------------------------------------------

_HASHERS: dict[tuple, MinHasher] = {}


def get_hasher(cfg: DedupConfig) -> MinHasher:
    key = (cfg.ngram, cfg.num_bands, cfg.rows_per_band, cfg.seed)
    if key not in _HASHERS:
        _HASHERS[key] = MinHasher(*key)
    return _HASHERS[key]


def document_keys(text: str, url: str | None,
                  cfg: DedupConfig) -> tuple[bytes, bytes | None, list[tuple[bytes, bytes | None]]]:
    """A document's exact digest, URL digest, and the (key, signature) records it contributes to grouping."""
    exact = exact_digest(text, case=cfg.normalize_case, whitespace=cfg.normalize_whitespace)
    url_key = url_digest(url)
    records: list[tuple[bytes, bytes | None]] = []
    if cfg.exact:
        records.append((exact, None))
    if cfg.url and url_key is not None:
        records.append((url_key, None))
    if cfg.near:
        hasher = get_hasher(cfg)
        signature = hasher.text_signature(text)
        if signature is not None:  # fewer words than one shingle: only exact/URL dedup applies
            compact = compact_signature(signature) if cfg.verify_threshold is not None else None
            records.extend((band, compact) for band in hasher.band_digests(signature))
    return exact, url_key, records


def line_digests(text: str, cfg: DedupConfig) -> list[int | None]:
    """Digest per line of `text` (split on newlines), None for lines too short to count as repeated."""
    return [line_digest(line, case=cfg.normalize_case, whitespace=cfg.normalize_whitespace)
            if len(line.strip()) >= cfg.min_line_chars else None for line in text.split("\n")]


def remove_lines(text: str, repeated: set[int], cfg: DedupConfig) -> tuple[str, int]:
    """`text` without its repeated lines, and how many lines were removed."""
    lines = text.split("\n")
    kept = [line for line, digest in zip(lines, line_digests(text, cfg)) if digest is None or digest not in repeated]
    return "\n".join(kept).strip(), len(lines) - len(kept)


def link_band_group(nodes: list[str], signatures: list[bytes | None],
                    threshold: float | None) -> tuple[list[tuple[str, str]], int]:
    """Edges for one LSH band group (nodes sorted, smallest first). Without a threshold every member joins
    the smallest; with one, a member joins the first centre whose signature agrees on >= threshold of the
    permutations, else becomes a centre itself. Returns the edges and the number of members rejected."""
    if threshold is None:
        return [(node, nodes[0]) for node in nodes[1:]], 0
    centre_nodes = [nodes[0]]
    centre_sigs = [np.frombuffer(signatures[0], dtype=np.uint32)]
    edges: list[tuple[str, str]] = []
    rejected = 0
    for node, signature in zip(nodes[1:], signatures[1:]):
        sig = np.frombuffer(signature, dtype=np.uint32)
        agreement = (np.stack(centre_sigs) == sig).mean(axis=1)
        matches = np.flatnonzero(agreement >= threshold)
        if matches.size:
            edges.append((node, centre_nodes[int(matches[0])]))
            continue
        rejected += 1
        if len(centre_nodes) < MAX_CENTRES_PER_BAND:
            centre_nodes.append(node)
            centre_sigs.append(sig)
    return edges, rejected


# ---- tasks (each runs on a Ray worker; arguments are small) ------------------------------------------------


def _read_docs(path: str, columns: list[str] | None = None) -> pa.Table:
    remote = store.folder_of(path)
    if remote is not None:  # a run folder on object storage: this task may run on any node
        remote.pull_files([path])
    try:
        present = set(pq.read_schema(path).names)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported by name
        raise DedupInputError(f"dedup: cannot read docs shard {path}: {type(exc).__name__}: {exc}") from None
    missing = [name for name in REQUIRED_COLUMNS if name not in present]
    if missing:
        raise DedupInputError(f"dedup: {path} is not a docs shard: missing column(s) {', '.join(missing)}")
    if columns is None:
        columns = [name for name in schemas.DOCS.names if name in present]
    table = pq.read_table(path, columns=columns)
    if "doc_id" in table.column_names and table["doc_id"].null_count:
        raise DedupInputError(f"dedup: {path} has {table['doc_id'].null_count} row(s) without a doc_id")
    return table


def _rows_of_keys_above(table: pa.Table, key: str, column: str, aggregation: str,
                        limit: int) -> tuple[pa.Table, pa.Array]:
    """The rows whose key's `aggregation` of `column` exceeds `limit`, and those keys."""
    totals = table.group_by(key).aggregate([(column, aggregation)])
    keys = totals.filter(pc.greater(totals[f"{column}_{aggregation}"], limit))[key].combine_chunks()
    return table.filter(pc.is_in(table[key], value_set=keys)), keys


def _key_records(shard: int, path: str, cfg: DedupConfig) -> pa.Table:
    table = _read_docs(path, list(REQUIRED_COLUMNS))
    keys: list[bytes] = []
    nodes: list[str] = []
    signatures: list[bytes | None] = []
    columns = [table[name].to_pylist() for name in REQUIRED_COLUMNS]
    for row, (doc_id, url, crawl_date, text) in enumerate(zip(*columns)):
        exact, url_key, records = document_keys(text or "", url, cfg)
        node = node_id(crawl_date, doc_id, shard, row, exact, url_key)
        for key, signature in records:
            keys.append(key)
            nodes.append(node)
            signatures.append(signature)
    return pa.table({"key": pa.array(keys, pa.binary(KEY_BYTES)), "node": pa.array(nodes, pa.string()),
                     "signature": pa.array(signatures, pa.binary())}, schema=KEY_RECORDS)


def sign_group(item: tuple[int, list[tuple[int, str]]], cfg: DedupConfig, work_root: str) -> dict[str, Any]:
    """Key records of a group of shards, signed shard by shard and written as one set of partition files."""
    group, shards = item
    work, task = WorkArea(work_root), f"{group:06d}"
    if work.is_done("sign", task):
        return work.done_info("sign", task)
    records = pa.concat_tables([_key_records(shard, path, cfg) for shard, path in shards])
    work.write_partitioned("sign", task, records, digest_partitions(records["key"], cfg.num_partitions), KEY_RECORDS)
    return work.mark_done("sign", task, {"records": records.num_rows})


def group_partition(partition: int, cfg: DedupConfig, work_root: str) -> dict[str, Any]:
    work, task = WorkArea(work_root), f"{partition:05d}"
    if work.is_done("edges", task):
        return work.done_info("edges", task)
    records, _ = _rows_of_keys_above(work.read_partition("sign", partition, KEY_RECORDS), "key", "node", "count", 1)
    records = records.sort_by([("key", "ascending"), ("node", "ascending")])
    left: list[str] = []
    right: list[str] = []
    rejected = 0
    keys = records["key"].to_pylist()
    nodes = records["node"].to_pylist()
    signatures = records["signature"].to_pylist()
    start = 0
    while start < len(keys):
        end = start + 1
        while end < len(keys) and keys[end] == keys[start]:
            end += 1
        # exact and URL keys carry no signature: their groups are duplicates by definition
        threshold = cfg.verify_threshold if signatures[start] is not None else None
        edges, group_rejected = link_band_group(nodes[start:end], signatures[start:end], threshold)
        rejected += group_rejected
        left.extend(a for a, _ in edges)
        right.extend(b for _, b in edges)
        start = end
    write_undirected(work, "edges", task, pa.array(left, pa.string()), pa.array(right, pa.string()), cfg.num_partitions)
    return work.mark_done("edges", task, {"records": records.num_rows, "edges": len(left), "rejected": rejected})


def label_partition(partition: int, final_step: str, shards_per_task: int, work_root: str) -> dict[str, Any]:
    work, task = WorkArea(work_root), f"{partition:05d}"
    if work.is_done("labels", task):
        return work.done_info("labels", task)
    labels = star_labels(work.read_partition(final_step, partition, EDGES))
    # home is the group of the document's shard: one file per (partition, group), not per (partition, shard)
    homes = np.fromiter((parse_node(node)["shard"] // shards_per_task for node in labels["node"].to_pylist()),
                        dtype=np.int64, count=labels.num_rows)
    work.write_partitioned("labels", task, labels, homes, LABELS)
    return work.mark_done("labels", task, {"labelled": labels.num_rows,
                                           "components": labels.num_rows - labels["size"].null_count})


def _group_labels(work: WorkArea, group: int) -> dict[int, dict[int, tuple[str, str, int | None]]]:
    """shard -> row -> (node, root, component size on the root's row) for the group's documents in a
    component."""
    labels = work.read_partition("labels", group, LABELS)
    by_shard: dict[int, dict[int, tuple[str, str, int | None]]] = {}
    for node, root, size in zip(*(labels[name].to_pylist() for name in LABELS.names)):
        home = parse_node(node)
        by_shard.setdefault(home["shard"], {})[home["row"]] = (node, root, size)
    return by_shard


def _shard_labels(work: WorkArea, shard: int, shards_per_task: int) -> dict[int, tuple[str, str, int | None]]:
    """row -> (node, root, component size on the root's row) for this shard's documents in a component.
    The group's labels are filtered to this shard in Arrow before any node id is parsed."""
    labels = work.read_partition("labels", shard // shards_per_task, LABELS)
    labels = labels.filter(pc.match_substring(labels["node"], f"{_SEP}{shard:06d}{_SEP}"))
    return {parse_node(node)["row"]: (node, root, size)
            for node, root, size in zip(*(labels[name].to_pylist() for name in LABELS.names))}


def _line_counts(shard: int, path: str, labels: dict[int, tuple[str, str, int | None]], cfg: DedupConfig) -> pa.Table:
    counts: Counter = Counter()
    for row, text in enumerate(_read_docs(path, ["doc_id", "text"])["text"].to_pylist()):
        label = labels.get(row)
        if label is not None and label[0] != label[1]:
            continue  # a duplicate: its lines must not count, or every line of a copied page looks repeated
        counts.update({digest for digest in line_digests(text or "", cfg) if digest is not None})
    return pa.table({"line": pa.array(list(counts), pa.uint64()), "shard": pa.array([shard] * len(counts), pa.int64()),
                     "docs": pa.array(list(counts.values()), pa.int64())}, schema=LINE_COUNTS)


def count_lines_group(item: tuple[int, list[tuple[int, str]]], cfg: DedupConfig, work_root: str) -> dict[str, Any]:
    """Line counts of a group of shards, one row per (line, shard), written as one set of partition files."""
    group, shards = item
    work, task = WorkArea(work_root), f"{group:06d}"
    if work.is_done("lines", task):
        return work.done_info("lines", task)
    labels = _group_labels(work, group)
    table = pa.concat_tables([_line_counts(shard, path, labels.get(shard, {}), cfg) for shard, path in shards])
    parts = (table["line"].to_numpy() % np.uint64(cfg.num_partitions)).astype(np.int64)
    work.write_partitioned("lines", task, table, parts, LINE_COUNTS)
    return work.mark_done("lines", task, {"line_counts": table.num_rows})


def repeated_lines_partition(partition: int, cfg: DedupConfig, work_root: str) -> dict[str, Any]:
    work, task = WorkArea(work_root), f"{partition:05d}"
    if work.is_done("repeated", task):
        return work.done_info("repeated", task)
    counts = work.read_partition("lines", partition, LINE_COUNTS)
    # each repeated line goes back to the groups of exactly the shards that contain it (a join without
    # another shuffle)
    routed, repeated = _rows_of_keys_above(counts, "line", "docs", "sum", cfg.max_line_repeats)
    work.write_partitioned("repeated", task, routed, routed["shard"].to_numpy() // cfg.shards_per_task, LINE_COUNTS)
    return work.mark_done("repeated", task, {"repeated_lines": len(repeated)})


def _repeated_lines_in(work: WorkArea, shard: int, shards_per_task: int) -> set[int]:
    """The repeated lines that occur in this shard's surviving documents (its group's, filtered by shard)."""
    routed = work.read_partition("repeated", shard // shards_per_task, LINE_COUNTS, columns=["line", "shard"])
    return set(routed.filter(pc.equal(routed["shard"], shard))["line"].to_pylist())


def output_name(path: str) -> str:
    return Path(path).name.removesuffix(".parquet")


def dedup_shard(shard: int, path: str, stats, cfg: DedupConfig, work_root: str) -> tuple[list, list]:
    """One input shard's outcome from the finished shuffle: (unique rows, decision rows); fills `stats`."""
    work = WorkArea(work_root)
    docs = _read_docs(path).to_pylist()
    labels = _shard_labels(work, shard, cfg.shards_per_task)
    repeated = _repeated_lines_in(work, shard, cfg.shards_per_task) if cfg.line else set()
    source = stats.source
    stats.input = len(docs)
    kept: list[dict[str, Any]] = []
    decisions: list[dict[str, Any]] = []
    lines_removed_total = 0

    def drop(doc: dict[str, Any], reason: str, survivor: str | None = None, detail: str | None = None) -> None:
        stats.drop(reason)
        decisions.append({"doc_id": doc["doc_id"], "stage": STAGE, "outcome": schemas.DROPPED, "reason": reason,
                          "detail": detail, "url": doc.get("url"), "source": source, "duplicate_of": survivor})

    for row, doc in enumerate(docs):
        label = labels.get(row)
        if label is not None and label[0] != label[1]:
            member, survivor = parse_node(label[0]), parse_node(label[1])
            drop(doc, duplicate_reason(member, survivor), survivor["doc_id"])
            continue
        text, removed = remove_lines(doc["text"] or "", repeated, cfg) if cfg.line else (doc["text"], 0)
        if removed and len(text) < cfg.min_chars_after_line_dedup:
            drop(doc, TOO_SHORT, detail=f"{removed} repeated line(s) removed, {len(text)} chars left "
                                        f"< dedup.min_chars_after_line_dedup={cfg.min_chars_after_line_dedup}")
            continue
        lines_removed_total += removed
        stats.kept += 1
        kept.append({**doc, "text": text, "n_chars": len(text or ""), "dup_cluster_id": doc["doc_id"],
                     "dup_cluster_size": label[2] if label is not None else 1, "lines_removed": removed})
    stats.extra.update({"lines_removed": lines_removed_total, "peak_rss_mb": peak_rss_mb()})
    return kept, decisions


# ---- driver ---------------------------------------------------------------------------------------------------


def _docs_shards(docs_dir: Path) -> list[tuple[int, str]]:
    if not docs_dir.is_dir():
        raise DedupInputError(f"dedup: docs folder {docs_dir} does not exist "
                              "(run `curate extract` first, or pass --docs)")
    files = parquet_files(docs_dir)
    if not files:
        raise DedupInputError(f"dedup: docs folder {docs_dir} holds no *.parquet files")
    names = [output_name(str(f)) for f in files]
    if len(set(names)) != len(names):
        raise DedupInputError(f"dedup: docs folder {docs_dir} has shards with the same name")
    return [(index, str(path)) for index, path in enumerate(files)]


def _prepare_work(work: WorkArea, cfg: DedupConfig, shards: list[tuple[int, str]]) -> None:
    """Scratch files of an interrupted run are reused only when they were made for the same inputs and the
    same split of the work (`num_partitions` and `shards_per_task` decide the task and partition file names;
    the result-shaping settings are the stage's, guarded by the runtime)."""
    manifest = {"config": cfg.model_dump(mode="json", exclude={"keep_work", "docs"}),
                "shards": [path for _, path in shards]}
    path = work.root / "manifest.json"
    if path.exists():
        import json

        if json.loads(path.read_text()) == manifest:
            return
        work.remove()
    write_json(manifest, path)


def dedup_settings(cfg: DedupConfig, shards: list[tuple[int, str]]) -> dict[str, Any]:
    """What unique/ depends on: the input files (names and sizes) and the dedup settings that change the result
    (not how the work is split: partitions, shards per task, scratch kept)."""
    result_cfg = cfg.model_dump(mode="json", exclude={"num_partitions", "shards_per_task", "keep_work", "docs"})
    inputs = [f"{Path(path).name}:{Path(path).stat().st_size}" for _, path in shards]
    return {**{f"dedup.{k}": v for k, v in result_cfg.items()},
            "input_files": hashlib.sha256("\n".join(inputs).encode()).hexdigest()[:16] + f" ({len(inputs)} files)"}


class DedupStage(Stage):
    """docs/ -> unique/: the shuffle steps run in `prepare` (Ray tasks through the executor, each resumable in
    the scratch area), then one shard per docs file writes its unique/ rows and decisions."""

    name = STAGE
    section = "dedup"
    inputs = (Input(DOCUMENTS, config="dedup.docs"),)
    outputs = (Output("unique", schemas.UNIQUE),)
    plan_follows_settings = True  # the input files are one of the settings

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.work = WorkArea(RunLayout(cfg.out).root / "_work" / STAGE)
        self.steps: dict[str, Any] = {}

    @property
    def docs_dir(self) -> Path:
        return self.input_folder()

    def settings(self) -> dict[str, Any]:
        return dedup_settings(self.cfg.dedup, _docs_shards(self.docs_dir))

    def plan(self) -> list[Shard]:
        return [Shard(key=output_name(path), source=Path(path).name, payload=(index, path))
                for index, path in _docs_shards(self.docs_dir)]

    def prepare(self, shards: list[Shard], executor) -> None:
        cfg = self.cfg.dedup
        every = _docs_shards(self.docs_dir)  # the shuffle sees every document, also of finished shards
        per_task = cfg.shards_per_task
        # shard indices are positions in `every`, so group g holds exactly the shards with index // per_task == g
        groups = [(start // per_task, every[start:start + per_task]) for start in range(0, len(every), per_task)]
        partitions = list(range(cfg.num_partitions))
        _prepare_work(self.work, cfg, every)
        work_root = str(self.work.root)
        peaks: dict[str, float] = {}

        def run_tasks(fn, items, *args, label: str | None = None):
            step = label or fn.__name__
            infos = executor.map(fn, items, *args, label=f"{STAGE}:{step}")
            peaks[step] = max([peaks.get(step, 0.0)] + [info.get("peak_rss_mb", 0.0) for info in infos])
            return infos

        sign_infos = run_tasks(sign_group, groups, cfg, work_root)
        edge_infos = run_tasks(group_partition, partitions, cfg, work_root)
        final_step, rounds = connected_components(self.work, "edges", cfg.num_partitions,
                                                  partial(run_tasks, label="components"))
        run_tasks(label_partition, partitions, final_step, per_task, work_root)
        if cfg.line:
            run_tasks(count_lines_group, groups, cfg, work_root)
            run_tasks(repeated_lines_partition, partitions, cfg, work_root)
        self.steps = {
            "cc_rounds": rounds, "key_records": sum(i.get("records", 0) for i in sign_infos),
            "edges": sum(i.get("edges", 0) for i in edge_infos),
            "candidates_rejected": sum(i.get("rejected", 0) for i in edge_infos),
            "peak_rss_mb_by_step": peaks, "num_partitions": cfg.num_partitions, "sign_tasks": len(groups),
        }

    def shard_files(self, shard: Shard) -> list[str]:
        return [shard.payload[1]]  # its docs file

    def process(self, worker: Any, shard: Shard) -> ShardResult:
        index, path = shard.payload
        stats = self.new_stats(shard)
        kept, decisions = dedup_shard(index, path, stats, self.cfg.dedup, str(self.work.root))
        return ShardResult(rows={"unique": kept}, decisions=decisions, stats=stats)

    def finish(self, summary: dict[str, Any], markers: list[dict[str, Any]]) -> dict[str, Any]:
        peaks = dict(self.steps.get("peak_rss_mb_by_step", {}))
        peaks["write_shard"] = max((m.get("peak_rss_mb", 0.0) for m in markers), default=0.0)
        if summary["complete"] and not self.cfg.dedup.keep_work:
            self.work.remove()
            if self.work.root.parent.is_dir() and not any(self.work.root.parent.iterdir()):
                self.work.root.parent.rmdir()
        return {**self.steps, "peak_rss_mb_by_step": peaks, "peak_task_rss_mb": max(peaks.values(), default=0.0)}

    def format_summary(self, summary: dict[str, Any]) -> str:
        return (f"[{STAGE}] {summary['input']} docs in {summary['shards']} shards -> {summary['kept']} kept, "
                f"{summary.get('edges', 0)} edges, {summary.get('cc_rounds', 0)} component round(s), "
                f"{summary['seconds']:.1f}s")
