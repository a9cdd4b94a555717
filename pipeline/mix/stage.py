"""The mix stage (`curate mix`): corpus/ (and synthetic/) -> mix/, the documents of a training mix of
`mix.target_tokens` tokens, in a seeded order, each row with its group and repeat index.

Two parts, on the one runtime:

- **Shards: token counts.** One task per corpus (and synthetic) file counts every document's tokens in the
  target tokenizer into `mix_tokens/<source>-<file>.parquet`. The tokenizer's sha256 is the plan identity: the
  counts are made once per tokenizer (and again for a file classify wrote again), so another budget, other
  weights, another grouping or seed re-mix from them without tokenizing anything.
- **finish: the allocation and mix/.** In the driver: the documents' groups (`pipeline.mix.groups`) and
  training tokens (their tokens + one end-of-document token), each group's share from the weights
  (`pipeline.mix.allocate.resolve_shares`), the copies of each document (`allocate`: cut best first, repeated
  up to `mix.max_epochs`, shortfalls redistributed), their seeded order (`mix_order`), then mix/ written whole
  and replaced atomically: `part-00000.parquet`... (a new file every `mix.tokens_per_file` tokens), the
  manifest (`_manifest.json`: rows, tokens, sha256 per file; tokens per group before and after) and the card
  (`README.md` with the table and `tokens_per_group.svg`). The rows are gathered in two passes of bounded
  memory: each input file's chosen rows go to the output file they belong to, then each output file is
  sorted into the mix order and written. mix/ is left as it is when its inputs and settings did not change
  (a content fingerprint), so tokenize has nothing to redo.

Nothing of the mix is refused as a settings change: the counts are redone for another tokenizer, and mix/ is
rewritten whole from them for any other setting, so no two settings' rows ever meet. Deterministic: the same
corpus, counts, weights, budget and seed give byte-identical files. The stage removes nothing from the corpus
(a "step": its counts are conserved per file, documents in = documents counted).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from pipeline.config import RunConfig
from pipeline.io import PARQUET_COMPRESSION, RunLayout, file_digest, parquet_files, replace_dir, write_json, write_text
from pipeline.mix import tokenizer as target_tokenizer
from pipeline.mix.allocate import (
    Allocation,
    MixError,
    allocate,
    check_weights,
    describe_group,
    mix_order,
    resolve_shares,
)
from pipeline.mix.groups import group_labels, label_columns, missing_labels
from pipeline.mix.schemas import MIX, MIX_TOKENS
from pipeline.runtime import Input, Output, Resources, Shard, ShardResult, Stage

STAGE = "mix"
MIX_DIR = "mix"
COUNTS = "mix_tokens"
MANIFEST = "_manifest.json"
CARD = "README.md"
PLOT = "tokens_per_group.svg"
POOLS = ("corpus", "synthetic")
SYNTHETIC_PREFIX = "synthetic:"
MAX_OPEN_BUCKETS = 256  # output files gathered at once in the first pass (more: another pass over the inputs)


@dataclass
class MixDocs:
    """Every document that can go into the mix, in a canonical order (pool, file, row): where it is, its ids,
    group, quality and training tokens (its tokens + 1 end-of-document token)."""

    files: list[tuple[str, str]]  # (pool, path) per file index
    pool: np.ndarray  # int8: index in POOLS
    file: np.ndarray  # int32
    row: np.ndarray  # int32
    ids: np.ndarray  # doc_id or synthetic_id
    doc_ids: np.ndarray
    groups: np.ndarray
    quality: np.ndarray  # float64, NaN when missing
    tokens: np.ndarray  # int64 training tokens
    left_out: dict[str, int]  # documents that cannot be mixed, by why

    def __len__(self) -> int:
        return len(self.ids)

    def digest(self) -> str:
        h = hashlib.sha256()
        for array in (self.pool, self.file, self.row, self.tokens, np.nan_to_num(self.quality, nan=-1.0)):
            h.update(np.ascontiguousarray(array).tobytes())
        for strings in (self.ids, self.doc_ids, self.groups):
            h.update("\x00".join(strings.tolist()).encode())
        h.update(json.dumps([[pool, Path(path).name] for pool, path in self.files]).encode())
        return h.hexdigest()


class MixStage(Stage):
    """corpus/ (+ synthetic/) -> mix_tokens/ (a task per file) -> mix/ (in finish)."""

    name = STAGE
    section = "mix"
    inputs = (Input("corpus", config="mix.corpus"), Input("synthetic", config="mix.synthetic"))
    outputs = (Output(COUNTS, MIX_TOKENS), Output(MIX_DIR, MIX, per_shard=False))
    role = "step"
    writes_decisions = False
    unit = "file"

    @classmethod
    def enabled(cls, cfg: RunConfig) -> bool:
        return cfg.mix.target_tokens is not None

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.layout = RunLayout(cfg.out)
        self._target: target_tokenizer.TargetTokenizer | None = None
        self._labels: dict[str, Any] | None = None  # driver-side cache, never shipped to a worker

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_labels"] = None
        return state

    # ------------------------------------------------------------------------------------------ driver
    @property
    def target(self) -> target_tokenizer.TargetTokenizer:
        if self._target is None:
            self._target = target_tokenizer.resolve(self.cfg)
        return self._target

    def pool_files(self) -> dict[str, list[Path]]:
        """The Parquet files to mix, by pool (synthetic only when mix.synthetic_share > 0)."""
        corpus = self.input_folder("corpus")
        files = {"corpus": parquet_files(corpus)}
        if not files["corpus"]:
            raise MixError(f"mix: no corpus in {corpus} (run `curate classify` first, or set mix.corpus to a folder "
                           "of classify's corpus files)")
        if self.cfg.mix.synthetic_share > 0:
            synthetic = self.input_folder("synthetic")
            files["synthetic"] = parquet_files(synthetic)
            if not files["synthetic"]:
                raise MixError(f"mix.synthetic_share is {self.cfg.mix.synthetic_share} but there are no rewrites in "
                               f"{synthetic} (the rewrite stage writes them: `curate rewrite`, or rewrite.enabled in "
                               "`curate run`); set mix.synthetic_share to 0 to mix the corpus alone")
        return files

    def check(self) -> None:
        mix = self.cfg.mix
        if mix.target_tokens is None:
            raise MixError("mix: no budget: give --target-tokens N (mix.target_tokens)")
        self.target  # noqa: B018 (a path that is not a tokenizer stops here)
        labels = self.labels()
        self.weights(sorted(set(labels["base_groups"])))

    def labels(self) -> dict[str, Any]:
        """The label columns of every file (no text), their groups, and a check that the grouping's labels are
        there: read once in the driver."""
        if self._labels is not None:
            return self._labels
        mix = self.cfg.mix
        columns = label_columns(mix.group_by)
        files = self.pool_files()
        tables: dict[str, list[pa.Table]] = {pool: [] for pool in files}
        corpus_cols = sorted({"doc_id", "quality_prob", *columns})
        present: dict[str, int] = {}
        for path in files["corpus"]:
            names = pq.read_schema(path).names
            if "doc_id" not in names:
                raise MixError(f"mix: {path} has no doc_id column (expected classify's corpus files)")
            table = pq.read_table(path, columns=[c for c in corpus_cols if c in names])
            for column in columns:
                if column in names:
                    present[column] = present.get(column, 0) + _holding(table.column(column))
            tables["corpus"].append(table)
        problem = missing_labels(columns, {c: present.get(c) for c in columns}, str(self.input_folder("corpus")))
        if problem:
            raise problem
        corpus = pa.concat_tables([t.select([c for c in corpus_cols if c in t.column_names]) for t in tables["corpus"]],
                                  promote_options="permissive")
        for column in set(corpus_cols) - set(corpus.column_names):
            corpus = corpus.append_column(column, pa.nulls(corpus.num_rows, pa.float32()))
        corpus_groups = group_labels(corpus, mix.group_by, mix.quality_edges, mix.quality_buckets)
        result: dict[str, Any] = {"files": files, "tables": {"corpus": corpus}, "groups": {"corpus": corpus_groups},
                                  "base_groups": list(corpus_groups)}
        if "synthetic" in files:
            # a rewrite takes its source page's labels (and is ranked by its source's quality_prob)
            parts = [pq.read_table(path, columns=["synthetic_id", "doc_id", "quality_prob"])
                     for path in files["synthetic"]]
            synthetic = pa.concat_tables(parts)
            source_of = {doc_id: i for i, doc_id in enumerate(corpus.column("doc_id").to_pylist())}
            at = np.asarray([source_of.get(d, -1) for d in synthetic.column("doc_id").to_pylist()], dtype=np.int64)
            found = at >= 0
            groups = np.full(synthetic.num_rows, None, dtype=object)
            groups[found] = corpus_groups[at[found]]
            result["tables"]["synthetic"] = synthetic
            result["groups"]["synthetic"] = groups
            result["base_groups"] += [g for g in groups if g is not None]
        self._labels = result
        return result

    def weights(self, groups: list[str]) -> dict[str, Any]:
        """The weights file, checked against the groups: {"given": {group: weight} | None, "sha256"}."""
        path = self.cfg.mix.weights
        if path is None:
            return {"given": None, "sha256": None}
        file = Path(path)
        if not file.is_file():
            raise MixError(f"mix.weights: no file {file} (a YAML file of group: weight)")
        try:
            loaded = yaml.safe_load(file.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise MixError(f"mix.weights: {file} is not valid YAML ({type(exc).__name__}: {exc})") from None
        if not isinstance(loaded, dict) or not loaded:
            raise MixError(f"mix.weights: {file} must be a YAML mapping of group: weight, one per line "
                           f"(groups: {', '.join(groups)})")
        given = check_weights(loaded, groups, f"mix.weights ({file})")
        return {"given": given, "sha256": file_digest(file).hexdigest()}

    def plan_identity(self) -> dict[str, Any]:
        # counts depend on the tokenizer and the files counted: another of either recounts every file
        return {"tokenizer": self.target.sha256, "corpus": str(self.input_folder("corpus").resolve()),
                "synthetic": str(self.input_folder("synthetic").resolve())}

    def plan(self) -> list[Shard]:
        shards = []
        for pool, files in self.pool_files().items():
            for path in files:
                shards.append(Shard(key=f"{pool}-{path.stem}", source=str(path), payload=pool,
                                    reads=(str(path),)))
        return shards

    def resources(self) -> Resources:
        return Resources(kind="task", num_cpus=1)

    # ------------------------------------------------------------------------------------------ worker
    def setup(self) -> Any:
        return self.target.load()

    def process(self, worker, shard: Shard) -> ShardResult:
        id_column = "doc_id" if shard.payload == "corpus" else "synthetic_id"
        table = pq.read_table(shard.source, columns=[id_column, "text"])
        counts = target_tokenizer.count(worker, table.column("text").to_pylist(), self.cfg.mix.batch_size)
        stats = self.new_stats(shard)
        stats.input = stats.kept = table.num_rows
        stats.extra["tokens"] = int(counts.sum())
        stats.extra["tokenizer"] = self.target.sha256
        rows = pa.table({"id": table.column(id_column), "n_tokens": pa.array(counts, pa.int32())})
        return ShardResult(rows={COUNTS: rows}, decisions=[], stats=stats)

    # ------------------------------------------------------------------------------------------ finish
    def docs(self) -> MixDocs:
        """Every mixable document with its counted tokens (mix_tokens/, checked against its file's ids)."""
        labels = self.labels()
        files: list[tuple[str, str]] = []
        pools, file_index, rows, ids, doc_ids, groups, quality, tokens = [], [], [], [], [], [], [], []
        left_out: dict[str, int] = {}
        for pool_index, pool in enumerate(POOLS):
            if pool not in labels["files"]:
                continue
            table, group = labels["tables"][pool], labels["groups"][pool]
            id_column = "doc_id" if pool == "corpus" else "synthetic_id"
            start = 0
            for path in labels["files"][pool]:
                counted = pq.read_table(self.layout.dataset(COUNTS) / f"{pool}-{path.stem}.parquet")
                n = counted.num_rows
                part = table.slice(start, n)
                if part.num_rows != n or not part.column(id_column).equals(counted.column("id")):
                    raise MixError(f"mix: the token counts of {path} are not those of its documents (the file was "
                                   "written again while the mix ran?): run the same command again to count it anew")
                keep = np.asarray([g is not None for g in group[start:start + n]], dtype=bool)
                if not keep.all():
                    left_out["synthetic rows whose source page is not in the corpus"] = \
                        left_out.get("synthetic rows whose source page is not in the corpus", 0) + int((~keep).sum())
                at = np.flatnonzero(keep)
                files.append((pool, str(path)))
                pools.append(np.full(len(at), pool_index, dtype=np.int8))
                file_index.append(np.full(len(at), len(files) - 1, dtype=np.int32))
                rows.append(at.astype(np.int32))
                ids.append(np.asarray(part.column(id_column).to_pylist(), dtype=object)[at])
                doc_ids.append(np.asarray(part.column("doc_id").to_pylist(), dtype=object)[at])
                prefix = SYNTHETIC_PREFIX if pool == "synthetic" else ""
                groups.append(np.asarray([prefix + g for g in group[start:start + n][at]], dtype=object))
                probs = pc.fill_null(pc.cast(part.column("quality_prob"), pa.float64()), float("nan"))
                quality.append(probs.to_numpy(zero_copy_only=False)[at])
                tokens.append(counted.column("n_tokens").to_numpy(zero_copy_only=False)[at].astype(np.int64) + 1)
                start += n

        def joined(parts, dtype):
            return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

        return MixDocs(files, joined(pools, np.int8), joined(file_index, np.int32), joined(rows, np.int32),
                       joined(ids, object), joined(doc_ids, object), joined(groups, object),
                       joined(quality, np.float64), joined(tokens, np.int64), left_out)

    def shares(self, docs: MixDocs) -> dict[str, float]:
        """Each group's share of the budget: per pool from the weights, the synthetic pool taking
        mix.synthetic_share of the whole."""
        mix = self.cfg.mix
        given = self.weights(sorted(set(self.labels()["base_groups"])))["given"]
        shares: dict[str, float] = {}
        pool_share = {"corpus": 1 - mix.synthetic_share, "synthetic": mix.synthetic_share}
        for pool_index, pool in enumerate(POOLS):
            in_pool = docs.pool == pool_index
            if not in_pool.any():
                continue
            prefix = SYNTHETIC_PREFIX if pool == "synthetic" else ""
            available: dict[str, int] = {}
            for group, tokens in zip(docs.groups[in_pool], docs.tokens[in_pool]):
                available[group[len(prefix):]] = available.get(group[len(prefix):], 0) + int(tokens)
            weights = None if given is None else {g: w for g, w in given.items() if g in available}
            for group, share in resolve_shares(available, weights, mix.default_weight).items():
                shares[prefix + group] = share * pool_share[pool]
        return shares

    def ranked(self, docs: MixDocs) -> dict[str, np.ndarray]:
        """Document indices per group, best first: quality_prob high to low (missing last), then id."""
        order = np.lexsort((docs.ids.astype(str), np.where(np.isnan(docs.quality), np.inf, -docs.quality),
                            docs.groups.astype(str)))
        groups = docs.groups[order]
        out: dict[str, np.ndarray] = {}
        bounds = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1], True]) if len(groups) else np.array([0])
        for begin, end in itertools.pairwise(bounds):
            out[str(groups[begin])] = order[begin:end]
        return out

    def settings_fingerprint(self, docs: MixDocs) -> dict[str, Any]:
        mix = self.cfg.mix
        weights = self.weights(sorted(set(self.labels()["base_groups"])))
        return {"target_tokens": mix.target_tokens, "group_by": mix.group_by, "quality_edges": mix.quality_edges,
                "quality_buckets": mix.quality_buckets, "max_epochs": mix.max_epochs,
                "synthetic_share": mix.synthetic_share, "default_weight": mix.default_weight,
                "weights": weights["given"], "seed": mix.seed, "tokens_per_file": mix.tokens_per_file,
                "rows_per_file": mix.rows_per_file, "tokenizer": self.target.sha256, "docs": docs.digest(),
                "texts": self.texts_identity(docs), "version": 1}

    def texts_identity(self, docs: MixDocs) -> list[str]:
        """What the texts are: the corpus manifest's checksums when it has one, else each file's sha256."""
        out = []
        for pool, path in docs.files:
            manifest = Path(path).parent / MANIFEST
            recorded = None
            if pool == "corpus" and manifest.exists():
                files = {f["file"]: f.get("sha256") for f in json.loads(manifest.read_text()).get("files", [])}
                recorded = files.get(Path(path).name)
            out.append(recorded or file_digest(path).hexdigest())
        return out

    def finish(self, summary: dict[str, Any], markers: list[dict[str, Any]]) -> dict[str, Any]:
        mix = self.cfg.mix
        docs = self.docs()
        if not len(docs):
            raise MixError(f"mix: no document to mix in {self.input_folder('corpus')}")
        ranked = self.ranked(docs)
        shares = self.shares(docs)
        allocation = allocate({g: docs.tokens[idx] for g, idx in ranked.items()}, shares, mix.target_tokens,
                              mix.max_epochs)
        copies = np.zeros(len(docs), dtype=np.int64)
        for group, idx in ranked.items():
            copies[idx] = allocation.counts[group]
        fingerprint = hashlib.sha256(json.dumps(self.settings_fingerprint(docs), sort_keys=True,
                                                default=str).encode()).hexdigest()
        mix_dir = self.layout.dataset(MIX_DIR)
        manifest_path = mix_dir / MANIFEST
        rewritten = True
        if manifest_path.exists():
            try:
                previous = json.loads(manifest_path.read_text())
            except ValueError:
                previous = {}
            if previous.get("fingerprint") == fingerprint and all(
                    (mix_dir / f["file"]).is_file() and (mix_dir / f["file"]).stat().st_size == f["bytes"]
                    for f in previous.get("files", [])):
                manifest, rewritten = previous, False
        if rewritten:
            manifest = self.write_mix(docs, ranked, allocation, copies, fingerprint, mix_dir)
        return {"mix": mix_summary(manifest), "mix_rewritten": rewritten, "tokenizer_path": self.target.path}

    def group_facts(self, docs: MixDocs, ranked: dict[str, np.ndarray], allocation: Allocation) -> dict[str, Any]:
        """The manifest's per-group table: the allocation, plus where its ranking was cut: `cut_quality`, the
        quality_prob of the last document of the prefix taken (in the last, partial epoch), and `gap_fillers`, the
        lower-ranked documents taken after it to fill the last gap (None, 0 for a group taken in whole epochs)."""
        facts = {}
        for group, plan in allocation.groups.items():
            idx, counts = ranked[group], allocation.counts[group]
            extra = counts > counts.min() if len(counts) else counts.astype(bool)
            boundary = int(np.argmin(extra)) if not extra.all() else len(extra)
            cut = docs.quality[idx[boundary - 1]] if extra.any() and 0 < boundary < len(extra) else None
            facts[group] = {**plan.to_json(),
                            "cut_quality": None if cut is None or np.isnan(cut) else round(float(cut), 4),
                            "gap_fillers": int(extra[boundary:].sum()) if cut is not None else 0}
            facts[group]["what_happened"] = describe_group(facts[group], allocation.max_epochs)
        return facts

    def write_mix(self, docs: MixDocs, ranked: dict[str, np.ndarray], allocation: Allocation, copies: np.ndarray,
                  fingerprint: str, mix_dir: Path) -> dict[str, Any]:
        from pipeline.cards.mix import mix_card, tokens_plot

        mix = self.cfg.mix
        row_doc, row_repeat = mix_order(copies, mix.seed)
        row_tokens = docs.tokens[row_doc]
        row_file = output_files(row_tokens, mix.tokens_per_file, mix.rows_per_file)
        staging = mix_dir.with_name(f".{MIX_DIR}.tmp-{uuid.uuid4().hex[:8]}")
        staging.mkdir(parents=True)
        try:
            files = gather(docs, row_doc, row_repeat, row_file, staging)
            weights = self.weights(sorted(set(self.labels()["base_groups"])))
            manifest = {
                "schema": "pipeline.mix.schemas.MIX", "compression": PARQUET_COMPRESSION, "fingerprint": fingerprint,
                "target_tokens": allocation.target, "tokens": allocation.total, "rows": int(len(row_doc)),
                "documents": int((copies > 0).sum()), "within_1pct": allocation.within_tolerance,
                "off_target": round((allocation.total - allocation.target) / allocation.target, 6),
                "note": allocation.shortfall_note(),
                "tokens_counted": "training tokens: a document's tokens plus its one end-of-document token",
                "tokenizer": {"name": self.target.name, "sha256": self.target.sha256},
                "grouping": {"group_by": mix.group_by, "quality_edges": mix.quality_edges,
                             "quality_buckets": mix.quality_buckets},
                "weights": {"given": weights["given"], "sha256": weights["sha256"],
                            "default_weight": mix.default_weight},
                "max_epochs": mix.max_epochs, "synthetic_share": mix.synthetic_share, "seed": mix.seed,
                "sources": {POOLS[p]: {"documents": int((docs.pool == p).sum()),
                                       "tokens": int(docs.tokens[docs.pool == p].sum())}
                            for p in range(len(POOLS)) if (docs.pool == p).any()},
                "left_out": docs.left_out,
                "groups": self.group_facts(docs, ranked, allocation),
                "files": files,
            }
            write_json(manifest, staging / MANIFEST)
            write_text(tokens_plot(manifest), staging / PLOT)
            write_text(mix_card(manifest, MIX, plot=PLOT), staging / CARD)
            replace_dir(staging, mix_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return manifest

    def format_summary(self, summary: dict[str, Any]) -> str:
        lines = [f"[{self.name}] counted {summary['input']} documents in {summary['shards']} file(s) "
                 f"({summary['shards_run']} counted now); mix/ "
                 + ("written" if summary.get("mix_rewritten") else "unchanged") + f" in {self.layout.dataset(MIX_DIR)}"]
        lines += [f"[{self.name}] {line}" if i == 0 else line for i, line in enumerate(format_mix(summary["mix"]))]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ helpers


def _holding(column: pa.ChunkedArray) -> int:
    """Documents with a value in a label column (a non-empty list, a number)."""
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        return int(pc.sum(pc.greater(pc.fill_null(pc.list_value_length(column), 0), 0)).as_py() or 0)
    return len(column) - column.null_count


def output_files(row_tokens: np.ndarray, tokens_per_file: int, rows_per_file: int | None) -> np.ndarray:
    """The mix/ file of each row (in mix order): a new file every `tokens_per_file` tokens (a row goes to the
    file its first token falls in) and, when set, every `rows_per_file` rows."""
    if not len(row_tokens):
        return np.zeros(0, dtype=np.int64)
    starts = np.cumsum(row_tokens) - row_tokens
    index = starts // tokens_per_file
    if rows_per_file:
        index = np.maximum(index, np.arange(len(row_tokens)) // rows_per_file)
    return np.unique(index, return_inverse=True)[1].astype(np.int64)


def _mix_rows(docs: MixDocs, table: pa.Table, pool: str, at: np.ndarray, rows: np.ndarray,
              row_doc: np.ndarray, row_repeat: np.ndarray) -> pa.Table:
    """The mix/ rows `rows` (positions) of one input file, whose documents sit at rows `at` of `table`."""
    taken = table.take(pa.array(at, pa.int64()))
    doc = row_doc[rows]
    n = len(rows)
    return pa.table({
        "position": pa.array(rows, pa.int64()),
        "doc_id": taken.column("doc_id"),
        "synthetic_id": taken.column("synthetic_id") if pool == "synthetic" else pa.nulls(n, pa.string()),
        "source": pa.array([pool] * n, pa.string()),
        "group": pa.array(docs.groups[doc].tolist(), pa.string()),
        "repeat": pa.array(row_repeat[rows], pa.int16()),
        "n_tokens": pa.array(docs.tokens[doc] - 1, pa.int32()),
        "quality_prob": pa.array(np.where(np.isnan(docs.quality[doc]), None, docs.quality[doc]).tolist(),
                                 pa.float32()),
        "url": taken.column("url") if "url" in taken.column_names else pa.nulls(n, pa.string()),
        "text": taken.column("text"),
    }, schema=MIX)


def gather(docs: MixDocs, row_doc: np.ndarray, row_repeat: np.ndarray, row_file: np.ndarray,
           staging: Path) -> list[dict[str, Any]]:
    """Write mix/ files in `staging` in two passes of bounded memory: every input file's chosen rows go to the
    pieces of the output files they belong to; then each output file is its pieces sorted by position."""
    n_files = int(row_file.max()) + 1 if len(row_file) else 0
    pieces = staging / ".pieces"
    pieces.mkdir()
    order = np.argsort(row_doc, kind="stable")  # rows grouped by document (and so by input file)
    by_doc_file = docs.file[row_doc[order]]
    bounds = np.searchsorted(by_doc_file, np.arange(len(docs.files) + 1))
    for first in range(0, max(n_files, 1), MAX_OPEN_BUCKETS):
        wanted = range(first, min(first + MAX_OPEN_BUCKETS, n_files))
        writers: dict[int, pq.ParquetWriter] = {}
        try:
            for file_index, (pool, path) in enumerate(docs.files):
                rows = order[bounds[file_index]:bounds[file_index + 1]]
                rows = rows[(row_file[rows] >= wanted.start) & (row_file[rows] < wanted.stop)]
                if not len(rows):
                    continue
                columns = [c for c in ("doc_id", "synthetic_id", "url", "text") if c in pq.read_schema(path).names]
                table = pq.read_table(path, columns=columns)
                part = _mix_rows(docs, table, pool, docs.row[row_doc[rows]], rows, row_doc, row_repeat)
                targets = row_file[rows]
                for out in np.unique(targets):
                    if out not in writers:
                        writers[out] = pq.ParquetWriter(pieces / f"{out:05d}.parquet", MIX,
                                                        compression="lz4")
                    writers[out].write_table(part.filter(pa.array(targets == out)))
        finally:
            for writer in writers.values():
                writer.close()
    files = []
    for out in range(n_files):
        table = pq.read_table(pieces / f"{out:05d}.parquet")
        table = table.take(pc.sort_indices(table, [("position", "ascending")])).combine_chunks()
        name = f"part-{out:05d}.parquet"
        path = staging / name
        pq.write_table(table, path, compression=PARQUET_COMPRESSION)
        (pieces / f"{out:05d}.parquet").unlink()
        n_tokens = table.column("n_tokens").to_numpy()
        files.append({"file": name, "rows": table.num_rows, "tokens": int(n_tokens.sum()) + table.num_rows,
                      "bytes": path.stat().st_size, "sha256": file_digest(path).hexdigest()})
    if not n_files:  # an empty mix: one empty file with the schema
        path = staging / "part-00000.parquet"
        pq.write_table(MIX.empty_table(), path, compression=PARQUET_COMPRESSION)
        files.append({"file": path.name, "rows": 0, "tokens": 0, "bytes": path.stat().st_size,
                      "sha256": file_digest(path).hexdigest()})
    shutil.rmtree(pieces)
    return files


def mix_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the run summary and report.json keep of a mix: totals and the per-group table."""
    keys = ("target_tokens", "tokens", "rows", "documents", "within_1pct", "off_target", "note", "tokenizer",
            "grouping", "max_epochs", "synthetic_share", "seed", "sources", "left_out")
    groups = {name: {key: group[key] for key in ("docs", "available", "share", "wanted", "quota", "taken", "rows",
                                                 "docs_taken", "epochs", "capped", "shortfall", "received", "action",
                                                 "cut_quality", "gap_fillers", "what_happened")}
              for name, group in manifest["groups"].items()}
    return {**{key: manifest.get(key) for key in keys}, "groups": groups, "files": len(manifest["files"])}


def format_mix(summary: dict[str, Any]) -> list[str]:
    """The mix table: tokens per group before (one copy of each document) and after (in the mix)."""
    total, target = summary["tokens"], summary["target_tokens"]
    lines = [f"mix: {total:,} tokens of a {target:,} budget ({summary['off_target']:+.2%}), {summary['rows']:,} rows "
             f"of {summary['documents']:,} documents, grouped by {' x '.join(summary['grouping']['group_by'])}, "
             f"tokenizer {summary['tokenizer']['name']}"]
    if summary.get("note"):
        lines.append(f"  NOTE: {summary['note']}")
    width = max([len("group"), *(len(name) for name in summary["groups"])])
    lines.append(f"  {'group':<{width}} {'docs':>6} {'tokens before':>14} {'share':>7} {'tokens after':>13} "
                 f"{'epochs':>6}  what happened")
    for name, group in summary["groups"].items():
        lines.append(f"  {name:<{width}} {group['docs']:>6} {group['available']:>14,} {group['share']:>7.1%} "
                     f"{group['taken']:>13,} {group['epochs']:>6.2f}  {group['what_happened']}")
    for why, n in (summary.get("left_out") or {}).items():
        lines.append(f"  left out: {n} {why}")
    return lines
