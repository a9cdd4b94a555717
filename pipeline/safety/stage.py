"""The safety stage: the run's documents -> safe/, with benchmark text and personal data out.

One filter stage after dedup and before classify, so that nothing after it sees what must never reach
training: the LLM labels a sample of safe/, the classifier scores safe/, the corpus is cut from it. Per
document, in this order:
1. Decontamination (`decontam.eval_sets`): a document holding an n-gram of normalised words of an evaluation
   item is dropped (`reason: contaminated`, the detail names the eval set, the item and the matched words),
   or with `decontam.mode: cut` the matching spans are removed and the rest kept (dropped after all when
   what is left is shorter than the rules' minimum words).
2. Personal data (`pii.mode`): e-mail addresses, IP addresses and phone numbers are replaced by typed
   placeholders; their counts per type and their places (type and offsets, never the values) are columns;
   with `pii.mode: drop` a page with more than `pii.max_per_1k_words` of them is dropped (`too_much_pii`).
The n-gram index is built once per eval-set fingerprint, in the driver, saved under `_state/safety/` and
loaded by each worker; its size and build time go to the stage marker and the report. The eval sets, the
n and the PII settings are the stage's plan identity: other ones re-decide every shard (like the rules
thresholds), and the stages after it follow because their shards read safe/'s files.

Blocked sites are removed earlier, in extract, before any HTML is parsed (`filters.url_blocklist`), and the
synthetic rewrites are decontaminated by the rewrite stage with the same index (an LLM can reproduce a
benchmark it memorised).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline import schemas
from pipeline.config import RunConfig
from pipeline.io import RunLayout, parquet_files, tree_digest
from pipeline.runtime import DOCUMENTS, Input, Output, Shard, ShardResult, Stage

STAGE = "safety"
PII_COLUMNS = {"EMAIL_ADDRESS": "pii_email", "IP_ADDRESS": "pii_ip", "PHONE_NUMBER": "pii_phone"}
EXAMPLES_PER_ITEM = 3


def eval_set_fingerprint(cfg: RunConfig) -> str | None:
    """What the decontamination depends on: every eval-set file's content, the text fields and n (None without
    eval sets). Hashing the files is cheap next to building the index, which is cached under this name."""
    if not cfg.decontam.eval_sets:
        return None
    from pipeline.safety import SafetyInputError

    digest = hashlib.sha256(f"{cfg.decontam.ngram}\x00{cfg.decontam.text_fields}".encode())
    for entry in cfg.decontam.eval_sets:
        path = Path(entry)
        if not path.exists():
            raise SafetyInputError(f"decontam.eval_sets: {path} does not exist")
        digest.update(f"{path.name}\x00{tree_digest(path)}".encode())
    return digest.hexdigest()[:16]


def index_path(cfg: RunConfig) -> Path | None:
    fingerprint = eval_set_fingerprint(cfg)
    return None if fingerprint is None else RunLayout(cfg.out).state(STAGE) / f"_index-{fingerprint}.bin"


def load_or_build_index(cfg: RunConfig):
    """The eval sets' n-gram index: read from `_state/safety/` when this fingerprint was built before, else
    built and saved there (once per eval-set fingerprint, never per shard)."""
    from pipeline.safety.decontam import EvalIndex

    path = index_path(cfg)
    if path is None:
        return None
    if path.exists():
        return EvalIndex.load(path)
    index = EvalIndex.build(cfg.decontam.eval_sets, list(cfg.decontam.text_fields), cfg.decontam.ngram)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    index.save(tmp)
    tmp.replace(path)
    return index


class SafetyStage(Stage):
    """The run's documents -> safe/ and decisions/safety/: a task per documents file."""

    name = STAGE
    inputs = (Input(DOCUMENTS),)
    outputs = (Output("safe", schemas.SAFE),)
    unit = "file"

    @classmethod
    def enabled(cls, cfg: RunConfig) -> bool:
        return cfg.pii.mode != "off" or bool(cfg.decontam.eval_sets)

    def plan_identity(self) -> dict[str, Any]:
        # another eval set, n, cut/drop or PII setting re-decides every shard from the documents
        if not hasattr(self, "_eval_fingerprint"):  # the eval files are hashed once per stage, not per call
            self._eval_fingerprint = eval_set_fingerprint(self.cfg)
        return {"pii": self.cfg.pii.model_dump(mode="json"), "decontam": self._eval_fingerprint,
                "decontam.mode": self.cfg.decontam.mode,
                "min_doc_words": self.cfg.extract.rules.min_doc_words if self.cfg.decontam.mode == "cut" else None}

    def check(self) -> None:
        folder = self.input_folder()
        if not parquet_files(folder):
            from pipeline.safety import SafetyInputError

            raise SafetyInputError(f"safety: no documents in {folder} (run extract and dedup first)")
        self.index_stats = None
        if self.cfg.decontam.eval_sets:
            started = time.perf_counter()
            index = load_or_build_index(self.cfg)  # bad eval sets are one message here, before any shard
            self.index_stats = {**index.stats, "load_seconds": round(time.perf_counter() - started, 3),
                                "eval_sets": index.describe()}

    def plan(self) -> list[Shard]:
        return [Shard(key=path.stem, source=str(path), reads=(str(path),))
                for path in parquet_files(self.input_folder())]

    def worker_reads(self) -> list[Path]:
        path = index_path(self.cfg)
        return [] if path is None else [path]

    def setup(self) -> Any:
        return load_or_build_index(self.cfg)

    def process(self, index: Any, shard: Shard) -> ShardResult:
        from pipeline.safety.pii import find_pii, redact

        stats = self.new_stats(shard)
        table = pq.read_table(shard.source)
        kept, decisions = [], []
        pii_totals: Counter = Counter()
        found: dict[str, dict[str, Any]] = {}  # eval set -> item -> {docs, examples}
        pii_cfg, decontam = self.cfg.pii, self.cfg.decontam
        for doc in table.to_pylist():
            stats.input += 1
            text = doc.get("text") or ""
            cut = 0
            hits = index.find(text) if index is not None else []
            for hit in hits:
                item = found.setdefault(hit.eval_set, {}).setdefault(hit.item, {"docs": 0, "examples": []})
                item["docs"] += 1
                if len(item["examples"]) < EXAMPLES_PER_ITEM:
                    item["examples"].append({"doc_id": doc["doc_id"], "url": doc.get("url"), "words": hit.words})
            if hits and decontam.mode == "drop":
                decisions.append(self._decision(doc, shard, "contaminated", contamination_detail(hits)))
                stats.drop("contaminated")
                continue
            if hits:
                text, cut = index.cut(text, hits), len(hits)
                if len(text.split()) < self.cfg.extract.rules.min_doc_words:
                    decisions.append(self._decision(doc, shard, "contaminated", contamination_detail(hits)
                                                    + f"; {len(text.split())} words left after the cut"))
                    stats.drop("contaminated")
                    continue
            spans = find_pii(text) if pii_cfg.mode != "off" else []
            counts = Counter(span.type for span in spans)
            words = max(len(text.split()), 1)
            if pii_cfg.mode == "drop" and len(spans) * 1000 / words > pii_cfg.max_per_1k_words:
                detail = (", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())) + f" in {words} words "
                          f"({len(spans) * 1000 / words:.1f} per 1,000 > pii.max_per_1k_words="
                          f"{pii_cfg.max_per_1k_words})")
                decisions.append(self._decision(doc, shard, "too_much_pii", detail))
                stats.drop("too_much_pii")
                continue
            pii_totals.update(counts)
            if spans:
                text = redact(text, spans)
            row = {**doc, "text": text, "n_chars": len(text), "decontam_cut": cut,
                   "pii_spans": [{"type": s.type, "start": s.start, "end": s.end} for s in spans]}
            row.update({column: counts.get(kind, 0) for kind, column in PII_COLUMNS.items()})
            kept.append(row)
            stats.kept += 1
        stats.extra["pii"] = dict(sorted(pii_totals.items()))
        stats.extra["contamination"] = found
        return ShardResult(rows={"safe": kept}, decisions=decisions, stats=stats)

    def _decision(self, doc: dict[str, Any], shard: Shard, reason: str, detail: str) -> dict[str, Any]:
        return {"doc_id": doc["doc_id"], "stage": self.name, "outcome": schemas.DROPPED, "reason": reason,
                "detail": detail[:1000], "url": doc.get("url"), "source": shard.source}

    def finish(self, summary: dict[str, Any], markers: list[dict[str, Any]]) -> dict[str, Any]:
        """The stage's totals for the report, the run summary and the dataset card: PII redacted per type, and
        per eval set the items found, in how many documents, with examples; the index's size and build."""
        pii: Counter = Counter()
        contamination: dict[str, dict[str, Any]] = {}
        for marker in markers:
            pii.update(marker.get("pii", {}))
            for eval_set, items in (marker.get("contamination") or {}).items():
                merged = contamination.setdefault(eval_set, {})
                for item, seen in items.items():
                    into = merged.setdefault(item, {"docs": 0, "examples": []})
                    into["docs"] += seen["docs"]
                    into["examples"] = (into["examples"] + seen["examples"])[:EXAMPLES_PER_ITEM]
        report = {eval_set: {"items_found": len(items), "documents": sum(i["docs"] for i in items.values()),
                             "items": dict(sorted(items.items(), key=lambda kv: -kv[1]["docs"])[:20])}
                  for eval_set, items in sorted(contamination.items())}
        return {"pii_redacted": dict(sorted(pii.items())), "contamination": report,
                "index": getattr(self, "index_stats", None), "pii_mode": self.cfg.pii.mode,
                "decontam_mode": self.cfg.decontam.mode if self.cfg.decontam.eval_sets else None}

    def format_summary(self, summary: dict[str, Any]) -> str:
        dropped = summary["dropped"]
        pii = ", ".join(f"{kind} {n}" for kind, n in summary.get("pii_redacted", {}).items()) or "none"
        lines = [f"[{self.name}] {summary['input']} documents in, {summary['kept']} kept, "
                 f"{dropped.get('contaminated', 0)} contaminated, {dropped.get('too_much_pii', 0)} too_much_pii; "
                 f"personal data redacted: {pii} ({summary['seconds']:.1f}s)"]
        for eval_set, found in summary.get("contamination", {}).items():
            lines.append(f"[{self.name}] {eval_set}: {found['items_found']} item(s) found in "
                         f"{found['documents']} document(s)")
        index = summary.get("index")
        if index:
            lines.append(f"[{self.name}] n-gram index: {index.get('ngrams')} n-grams of {index.get('items')} items, "
                         f"{index.get('bytes', 0) / 1e6:.1f} MB, built in {index.get('build_seconds')}s")
        return "\n".join(lines)


def contamination_detail(hits: list[Any]) -> str:
    first = hits[0]
    more = f" (+{len(hits) - 1} more span(s))" if len(hits) > 1 else ""
    return f"{first.eval_set} item {first.item}: \"{first.words}\"{more}"
