"""The whole pipeline as one command: extract -> dedup -> annotate (sample) -> distil -> classify -> rewrite -> report.

Each stage skips itself when its output is complete and resumes when it is partial, so rerunning the same
command after a crash (or a killed Ray job) finishes the run without redoing finished work.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pipeline.config import RunConfig
from pipeline.io import RunLayout, write_json


def _status(message: str) -> None:
    print(f"[run] {message}", flush=True)


def _needs_llm(cfg: RunConfig, layout: RunLayout) -> bool:
    annotate_needed = cfg.classify.classifier is None and not layout.is_stage_done("annotate")
    rewrite_needed = cfg.rewrite.enabled and not layout.is_stage_done("rewrite")
    return annotate_needed or rewrite_needed


def _start_llm(cfg: RunConfig, layout: RunLayout, stack: ExitStack) -> RunConfig:
    """For the demo: build the tiny model once and serve it on loopback for this run only."""
    from pipeline.llm.server import VLLMServer
    from pipeline.llm.tiny_model import build_tiny_model

    model_dir = Path(cfg.llm.tiny_model_dir or layout.root / "tiny-llama")
    if not (model_dir / "config.json").exists():
        _status(f"building the tiny random-weight model in {model_dir} (its labels are noise, by design)")
        build_tiny_model(model_dir)
    server = stack.enter_context(VLLMServer(model_dir, served_model_name=cfg.llm.model))
    _status(f"tiny vLLM server ready at {server.url} (pid {server.pid})")
    return cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"url": server.url})})


def _distil_fingerprint(cfg: RunConfig, layout: RunLayout) -> str:
    """Labels files (names and sizes) and the distil settings: retrain only when either changed.

    fastText trains with several threads (hogwild), so retraining gives a slightly different model and
    threshold, which would make classify rescore everything on a mere rerun.
    """
    labels = sorted((p.name, p.stat().st_size) for p in layout.dataset("labels").glob("*.parquet"))
    payload = json.dumps({"labels": labels, "distil": cfg.distil.model_dump()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _marker_matches(layout: RunLayout, stage: str, fingerprint: str) -> bool:
    marker = layout.stage_marker(stage)
    return marker.exists() and json.loads(marker.read_text()).get("fingerprint") == fingerprint


def run_pipeline(cfg: RunConfig) -> dict[str, Any]:
    from pipeline import extract

    layout = RunLayout(cfg.out)
    layout.root.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def stage(name: str, fn, *args, **kwargs):
        started = time.perf_counter()
        _status(f"{name} ...")
        result = fn(*args, **kwargs)
        timings[name] = round(time.perf_counter() - started, 2)
        _status(f"{name} done in {timings[name]:.1f}s")
        return result

    with ExitStack() as stack:
        stage("extract", extract.run, cfg)
        from pipeline import dedup

        stage("dedup", dedup.run, cfg)
        if _needs_llm(cfg, layout) and cfg.llm.serve_tiny_model:
            cfg = _start_llm(cfg, layout, stack)
        classifier_dir = cfg.classify.classifier
        if classifier_dir is None:
            from classifiers.distil import run as distil_run
            from pipeline import annotate

            stage("annotate", annotate.run, cfg)
            classifier_dir = str(layout.dataset("classifier"))
            fingerprint = _distil_fingerprint(cfg, layout)
            if _marker_matches(layout, "distil", fingerprint) and Path(classifier_dir, "config.yaml").exists():
                _status("distil: classifier already trained on these labels, skipped")
            else:
                stage("distil", distil_run, cfg, out_dir=classifier_dir)
                write_json({"fingerprint": fingerprint}, layout.stage_marker("distil"))
        from pipeline import classify

        cfg = cfg.model_copy(update={"classify": cfg.classify.model_copy(update={"classifier": classifier_dir})})
        stage("classify", classify.run, cfg)
        if cfg.rewrite.enabled:
            from pipeline import rewrite

            stage("rewrite", rewrite.run, cfg)
    return summarize(cfg, timings, llm_noise=cfg.llm.serve_tiny_model)


def summarize(cfg: RunConfig, timings: dict[str, float], *, llm_noise: bool = False) -> dict[str, Any]:
    """Counts per stage and reason, kept words per quality bucket and topic, conservation; report.json."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipeline.report import build_report

    layout = RunLayout(cfg.out)
    # One corpus file at a time: the driver never holds the whole corpus.
    kept_docs = 0
    words_by_bucket: Counter = Counter()
    words_by_topic: Counter = Counter()
    for path in sorted(layout.dataset("corpus").glob("*.parquet")):
        part = pq.read_table(path, columns=["text", "quality_prob", "topics"])
        kept_docs += part.num_rows
        n_words = pc.list_value_length(pc.utf8_split_whitespace(part.column("text")))
        for words, prob, topics in zip(n_words.to_pylist(), part.column("quality_prob").to_pylist(),
                                       part.column("topics").to_pylist()):
            low = min(int((prob or 0.0) * 4), 3) / 4
            words_by_bucket[f"{low:.2f}-{low + 0.25:.2f}"] += words or 0
            words_by_topic[(topics or ["(none)"])[0]] += words or 0
    extra = {
        "timings_s": timings,
        "llm_noise": llm_noise,
        "kept_docs": kept_docs,
        "kept_words_by_quality_bucket": dict(sorted(words_by_bucket.items())),
        "kept_words_by_topic": dict(words_by_topic.most_common()),
        "outputs": {name: str(layout.dataset(name)) for name in
                    ("docs", "unique", "labels", "classifier", "scores", "corpus", "synthetic", "decisions")
                    if layout.dataset(name).exists()},
    }
    return build_report(layout, extra=extra)


def format_summary(report: dict[str, Any]) -> str:
    from pipeline.report import format_report

    lines = [format_report(report), ""]
    lines.append(f"kept documents: {report.get('kept_docs', 0)}")
    lines.append("kept words by quality bucket (the distilled classifier's probability):")
    for bucket, words in report.get("kept_words_by_quality_bucket", {}).items():
        lines.append(f"  {bucket}  {words}")
    lines.append("kept words by top topic:")
    for topic, words in list(report.get("kept_words_by_topic", {}).items())[:12]:
        lines.append(f"  {topic:<32} {words}")
    labels = report.get("annotate")
    if labels:
        errors = ", ".join(f"{kind} {n}" for kind, n in labels.get("errors", {}).items()) or "none"
        lines.append(f"LLM labels: {labels['ok']} ok of {labels['labels']} on {labels['sampled']} sampled docs "
                     f"(errors: {errors}); tokens in/out {labels['prompt_tokens']}/{labels['completion_tokens']}")
    if report.get("llm_noise"):
        lines.append("NOTE: labels came from the tiny random-weight demo model: they are noise by design. "
                     "Point llm.url/llm.model (or --llm-url/--llm-model) at a real Llama for real labels.")
    timings = report.get("timings_s", {})
    if timings:
        lines.append("time per stage: " + ", ".join(f"{name} {secs:.1f}s" for name, secs in timings.items()))
    lines.append("outputs:")
    for name, path in report.get("outputs", {}).items():
        lines.append(f"  {name:<10} {path}")
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.cli import _config

    if args.config_path and not args.config:
        args.config = args.config_path
    cfg = _config(args)
    try:
        report = run_pipeline(cfg)
    except _stage_errors() as exc:
        print(f"curate run: {type(exc).__name__}: {exc}\n(finished stages are kept: fix the cause and run the "
              f"same command again to go on from there)", file=sys.stderr)
        return 2
    print(format_summary(report))
    return 0 if report.get("conserved") else 1


def _stage_errors() -> tuple[type[BaseException], ...]:
    """The errors a stage raises for a cause the user can fix (input, labels, endpoint, classifier)."""
    from classifiers.artifact import ArtifactError
    from classifiers.distil import DistilError
    from classifiers.labels import LabelsError
    from pipeline.classify import ClassifyError
    from pipeline.llm.client import LLMUnavailable
    from pipeline.llm.prompts import PromptError
    from pipeline.llm.server import ServerError
    from pipeline.report import ConservationError

    return (ArtifactError, DistilError, LabelsError, ClassifyError, PromptError, ServerError, LLMUnavailable,
            ConservationError, FileNotFoundError)


def register_cli(sub) -> None:
    from pipeline.cli import _common, _llm_flags

    p = sub.add_parser("run", help="the whole pipeline: extract -> dedup -> annotate -> distil -> classify -> rewrite")
    p.add_argument("config_path", nargs="?", help="YAML run config (same as --config)")
    _common(p)
    _llm_flags(p)
    p.set_defaults(handler=cmd_run)


if __name__ == "__main__":
    from pipeline.cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
