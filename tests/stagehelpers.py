"""Helpers for per-stage tests: run one stage on a few inputs in this process (the runtime's local
executor), as a user's run would, and read back the shard's counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import extract
from pipeline.config import ExtractConfig, InputConfig, RunConfig
from pipeline.io import RunLayout
from pipeline.rules_stage import RulesStage
from pipeline.run import run_stages
from pipeline.runtime.executor import LocalExecutor
from pipeline.runtime.runner import StageFailed, run_stage


def extract_one(source: str, extract_cfg: ExtractConfig, input_cfg: InputConfig, out: str | Path) -> dict[str, Any]:
    """The extract stage over one WARC file (path or URL) into `out`, then the rules stage (docs/), as
    `curate extract` runs them; returns the extract shard's marker."""
    cfg = RunConfig(out=str(out), input=input_cfg.model_copy(update={"warcs": [source]}), extract=extract_cfg)
    try:
        run_stage(extract.ExtractStage(cfg), executor=LocalExecutor(), quiet=True)
    except StageFailed:
        pass  # every record of the file errored: recorded, then said
    run_stage(RulesStage(cfg), executor=LocalExecutor(), quiet=True)
    (marker,) = RunLayout(out).shard_stats("extract")
    return marker


def decide_rules(cfg: RunConfig) -> dict[str, Any]:
    """The rules stage alone (re-deciding from the stored metrics) on the local executor; its summary."""
    return run_stage(RulesStage(cfg), executor=LocalExecutor(), quiet=True)


def without_timings(value: Any) -> Any:
    """A metrics or card structure without its timing fields (`*seconds`): what must be equal run to run."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not k.endswith("seconds")}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def extract_run(cfg: RunConfig, **kwargs: Any) -> dict[str, Any]:
    """`curate extract` as the registry runs it (extract, then the rules stage); the extract stage's summary."""
    return run_stages(cfg, "extract", "rules", **kwargs)["extract"]


def dedup_run(cfg: RunConfig, docs_dir: str | Path | None = None, **kwargs: Any) -> dict[str, Any]:
    """`curate dedup [--docs DIR]` as the registry runs it; the stage's summary."""
    if docs_dir is not None:
        cfg = cfg.updated(**{"dedup.docs": str(docs_dir)})
    return run_stages(cfg, "dedup", **kwargs)["dedup"]


def annotate_run(cfg: RunConfig, docs_dir: str | Path | None = None, **kwargs: Any) -> dict[str, Any]:
    """`curate annotate [--docs DIR]` as the registry runs it; the stage's summary."""
    if docs_dir is not None:
        cfg = cfg.updated(**{"annotate.docs": str(docs_dir)})
    return run_stages(cfg, "annotate", **kwargs)["annotate"]


def rewrite_run(cfg: RunConfig, corpus: str | Path | None = None, **kwargs: Any) -> dict[str, Any]:
    """`curate rewrite [--corpus DIR]` as the registry runs it; the stage's summary."""
    if corpus is not None:
        cfg = cfg.updated(**{"rewrite.corpus": str(corpus)})
    return run_stages(cfg, "rewrite", **kwargs)["rewrite"]


BENCHMARK = Path(__file__).resolve().parents[1] / "data" / "extraction-benchmark"


def quick_classifier(root: Path) -> Path:
    """A fastText classifier distilled in about a second from 20 benchmark pages' person-made labels."""
    from classifiers.distil import distil
    from classifiers.extraction_benchmark import labelled_texts, load_pages, write_teacher_run
    from classifiers.labels import load_llm_labels
    from pipeline.config import DistilConfig

    write_teacher_run(root / "teacher", labelled_texts(BENCHMARK, page_ids=sorted(load_pages(BENCHMARK))[:20]))
    distil(load_llm_labels(root / "teacher" / "labels", root / "teacher" / "docs", 3),
           DistilConfig(bucket=5000, dim=16, epoch=5, min_labels=10, tune=False), root / "classifier", quiet=True)
    return root / "classifier"
