"""Rules stage: extracted/ -> docs/ (the pages that pass the quality rules) and decisions/rules/.

Extract measures every rule metric of every page (pipeline.extract, pipeline.rules) and keeps them all in
extracted/; this stage only compares the stored metrics with the thresholds of `extract.rules`
(`pipeline.rules.failures`), one shard per extracted/ file, as Ray tasks. A page that fails a check is
dropped with the first failing check's reason (`gopher_short_doc`, `c4_too_few_sentences`, ...) and a detail
naming the value against the threshold (`gopher_short_doc: n_words 31 < 50`); the others go to docs/ (schema
DOCS, with their rule columns). Nothing here reads a WARC file or extracts a page.

Re-deciding works as classify's `--threshold` does: the thresholds are this stage's plan identity, not
extraction settings, so other thresholds (`curate rules --out RUN --set extract.rules.<field>=V`, or
`curate run` with the new values) redo every rules shard from the
stored metrics and leave extract alone. A shard whose extracted/ file was written again after it was
decided (extract retried a file) is decided again. What it cannot do is move docs/ under outputs already made
from it: dedup reads all of docs/ at once and guards its input, and the stages after it would keep results
made from the old docs/. So re-deciding at other thresholds in a run folder where a later stage has outputs
is refused before anything is written, naming those stages (delete their outputs to redo them from the new
docs/, or put the thresholds back).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import schemas
from pipeline.config import RulesConfig, RunConfig
from pipeline.errors import CurateError
from pipeline.io import RunLayout, SettingsChanged, canonical, parquet_files
from pipeline.rules import METRICS, failures
from pipeline.runtime import Input, Output, Resources, Shard, ShardResult, Stage

STAGE = "rules"
INPUT = "extracted"
# docs/'s rule columns that are a stored metric under the same name (the rest: symbol_word_ratio, rule_failures)
SAME_NAME_COLUMNS = ("n_words", "mean_word_length", "alpha_word_ratio", "stop_word_count", "dup_line_char_frac",
                     "top_2gram_char_frac", "line_punct_ratio", "short_line_ratio")


class RulesInputError(CurateError):
    """There are no stored metrics to decide from; the message says what to run first."""


class RedecideRefused(SettingsChanged):
    """Other thresholds would re-decide docs/ under outputs of later stages made from the current docs/."""


# ---------------------------------------------------------------------------------------------- decide


def decide_rows(rows: list[dict[str, Any]], cfg: RulesConfig) -> list[list[Any]]:
    """Pure decision step over extracted rows (their metric columns): the failed checks of each row at `cfg`'s
    thresholds, first the one that drops it; [] keeps it. Rows the rules were not applied to always pass."""
    return [failures(row, cfg) if row["rules_applied"] else [] for row in rows]


def decision_row(row: dict[str, Any], failed: list[Any], all_failures: bool) -> dict[str, Any]:
    """The decisions/rules row of a dropped page: the first failure's reason; its detail (every failure's with
    `rules.all_failures`), naming the value against the threshold."""
    shown = failed if all_failures else failed[:1]
    return {"doc_id": row["doc_id"], "stage": STAGE, "outcome": schemas.DROPPED, "reason": failed[0].reason,
            "detail": "; ".join(failure.detail for failure in shown), "url": row["url"], "source": row["warc_path"]}


def as_docs(kept: pa.Table) -> pa.Table:
    """Kept extracted rows as docs/ rows (DOCS): the page fields, the rule columns from the stored metrics
    (symbol_word_ratio: Gopher's '#' and ellipsis ratios summed), no rule failures (they passed)."""
    columns = {name: kept.column(name) for name in schemas.DOCS.names if name in kept.column_names}
    columns["symbol_word_ratio"] = pc.add(kept.column("hash_word_ratio"), kept.column("ellipsis_word_ratio"))
    columns["rule_failures"] = pa.array([[]] * kept.num_rows, pa.list_(pa.string()))
    return pa.table(columns).select(schemas.DOCS.names).cast(schemas.DOCS)


def decide_table(table: pa.Table, cfg: RulesConfig) -> tuple[pa.Table, list[dict[str, Any]], Counter]:
    """(docs rows kept, decision rows, {reason: dropped}) for one extracted/ shard at `cfg`'s thresholds."""
    rows = table.select(["doc_id", "url", "warc_path", "rules_applied", *METRICS]).to_pylist()
    verdicts = decide_rows(rows, cfg)
    decisions = [decision_row(row, failed, cfg.all_failures) for row, failed in zip(rows, verdicts) if failed]
    keep = pa.array([not failed for failed in verdicts], pa.bool_())
    return as_docs(table.filter(keep)), decisions, Counter(row["reason"] for row in decisions)


# ------------------------------------------------------------------------------------- re-deciding guard


def later_outputs(layout: RunLayout, stage: str = STAGE) -> list[str]:
    """The stages after `stage` in the registry that have outputs in this run folder."""
    from pipeline.stages import pipeline_order

    order = pipeline_order()
    return [name for name in order[order.index(stage) + 1:] if layout.has_outputs(name)]


def _stage_paths(layout: RunLayout, name: str) -> list[str]:
    """What a stage wrote in the run folder (its datasets, decisions, state and recorded settings)."""
    from pipeline.stages import stage_class

    try:
        cls = stage_class(name)
        datasets = [layout.dataset(output.dataset) for output in cls.outputs]
        decisions = [layout.decisions(name)] if cls.writes_decisions else []
    except ImportError:  # its optional dependencies are not installed: name what is certainly there
        datasets, decisions = [], []
    state = [layout.state(name), layout.settings_path(name).with_name(f"{name}.*")]
    return [str(path) for path in [*datasets, *decisions, *state]]


def check_redecide(layout: RunLayout, identity: dict[str, Any]) -> None:
    """Refuse, before anything is written, to re-decide docs/ at other thresholds when a later stage has
    outputs made from the current docs/, naming the changed thresholds and what to delete."""
    recorded = layout.settings_path(STAGE).with_suffix(".plan.json")
    if not recorded.exists() or not layout.has_outputs(STAGE):
        return
    before, now = json.loads(recorded.read_text()), canonical(identity)
    if before == now:
        return
    later = later_outputs(layout)
    if not later:
        return
    old, new = before.get("extract.rules", {}), now.get("extract.rules", {})
    changed = "; ".join(f"extract.rules.{key}: {old.get(key)!r} -> {new.get(key)!r}"
                        for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key))
    paths = ", ".join(path for name in later for path in _stage_paths(layout, name))
    raise RedecideRefused(
        f"rules: other thresholds ({changed}) would re-decide docs/ in {layout.root}, but {', '.join(later)} "
        f"already made outputs there from the current docs/ (they would not follow it). To re-decide here, "
        f"delete those outputs first ({paths}), then run again; or put the thresholds back.")


# ------------------------------------------------------------------------------------------------ stage


class RulesStage(Stage):
    """extracted/ -> docs/ and decisions/rules/: one shard per extracted/ file (a Ray task each), decided from
    the stored metrics at the configured thresholds."""

    name = STAGE
    section = "extract"
    inputs = (Input(INPUT),)
    outputs = (Output("docs", schemas.DOCS),)
    role = "filter"
    unit = "file"
    # The plan (extracted/'s files) and the thresholds (the plan identity) are checked on every run: a finished
    # stage is not skipped unseen when the thresholds changed or extract wrote a file again.
    plan_follows_settings = False

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.layout = RunLayout(cfg.out)

    @property
    def rules(self) -> RulesConfig:
        return self.cfg.extract.rules

    def plan_identity(self) -> dict[str, Any]:
        # other thresholds, family switches or all_failures redo every decision (never the extraction)
        return {"extract.rules": self.rules.decision_settings()}

    def check(self) -> None:
        folder = self.input_folder(INPUT)
        if not parquet_files(folder):
            raise RulesInputError(f"rules: no stored rule metrics in {folder} (run `curate extract` first: it "
                                  "measures every page's metrics there; the rules stage only decides)")
        check_redecide(self.layout, self.plan_identity())

    def plan(self) -> list[Shard]:
        # an extracted/ file written again since its shard was decided (a WARC retried) is decided again
        return [Shard(key=path.stem, source=str(path), reads=(str(path),))
                for path in parquet_files(self.input_folder(INPUT))]

    def resources(self) -> Resources:
        return Resources(kind="task")

    def process(self, worker, shard: Shard) -> ShardResult:
        table = pq.read_table(shard.source, schema=schemas.EXTRACTED)
        docs, decisions, dropped = decide_table(table, self.rules)
        stats = self.new_stats(shard)
        stats.input, stats.kept = table.num_rows, docs.num_rows
        for reason, n in dropped.items():
            stats.drop(reason, n)
        return ShardResult(rows={"docs": docs}, decisions=decisions, stats=stats)

    def finish(self, summary: dict[str, Any], markers: list[dict[str, Any]]) -> dict[str, Any]:
        """The thresholds decided at, where they are not datatrove's defaults (the summary and stage marker)."""
        default = RulesConfig().decision_settings()
        return {"changed_thresholds": {key: value for key, value in self.rules.decision_settings().items()
                                       if default.get(key) != value}}

    def format_summary(self, summary: dict[str, Any]) -> str:
        dropped = sum(summary["dropped"].values())
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(summary["dropped"].items(), key=lambda kv: -kv[1]))
        changed = summary.get("changed_thresholds") or {}
        at = ", ".join(f"{key}={value}" for key, value in changed.items()) or "datatrove's defaults"
        return (f"[{self.name}] {summary['shards']} file(s) ({summary['shards_run']} decided now, from stored "
                f"metrics): {summary['input']} pages in, {summary['kept']} kept, {dropped} dropped"
                + (f" ({reasons})" if reasons else "") + f", {summary['seconds']:.1f}s\n"
                f"[{self.name}] thresholds: {at}; other ones re-decide without extracting: `curate rules "
                "--set extract.rules.<threshold>=V`")
