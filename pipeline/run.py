"""The whole pipeline as one command: every stage of the registry (`pipeline.stages`) this config enables, in
order (extract -> rules -> dedup -> annotate (sample) -> distil -> classify -> rewrite), then the report.

Each stage skips itself when its output is complete and resumes when it is partial, so rerunning the same
command after a crash (or a killed Ray job) finishes the run without redoing finished work.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pipeline import store
from pipeline.config import RunConfig
from pipeline.io import RunLayout, parquet_files


def _status(message: str) -> None:
    print(f"[run] {message}", flush=True)


def _needs_llm(cfg: RunConfig, layout: RunLayout, remaining: list[str]) -> bool:
    """Whether a stage still to run talks to the LLM and has work left (the demo's server is started then)."""
    from pipeline.stages import stage_class

    return any(stage_class(name).needs_llm and not layout.is_stage_done(name) for name in remaining)


def _start_llm(cfg: RunConfig, layout: RunLayout, stack: ExitStack) -> RunConfig:
    """For the demo: build the tiny model once and serve it on loopback for this run only.

    The server dies with this process however it ends (see pipeline.llm.server); it is recorded in
    `_state/llm-server.json`, and one still running there from an earlier run of this folder (a process from
    before that guarantee, or one whose guard was killed too) is stopped first."""
    from pipeline.llm.server import VLLMServer, stop_leftover
    from pipeline.llm.tiny_model import build_tiny_model

    pid_file = layout.root / "_state" / "llm-server.json"
    leftover = stop_leftover(pid_file)
    if leftover.stopped:
        _status(f"stopped a vLLM server left running by an earlier run of this folder ({leftover.detail})")
    model_dir = Path(cfg.llm.tiny_model_dir or layout.root / "tiny-llama")
    if not (model_dir / "config.json").exists():
        _status(f"building the tiny random-weight model in {model_dir} (its labels are noise, by design)")
        build_tiny_model(model_dir)
    server = stack.enter_context(VLLMServer(model_dir, served_model_name=cfg.llm.model, pid_file=pid_file,
                                            log_path=layout.root / "_state" / "llm-server.log"))
    _status(f"tiny vLLM server ready at {server.url} (pid {server.pid})")
    return cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"url": server.url})})


def run_stages(cfg: RunConfig, *names: str, executor: Any = None, quiet: bool = False) -> dict[str, dict[str, Any]]:
    """Run stages of the registry in the given order through the one runner; their summaries by name. The
    one entry path of commands, `curate run`, the notebook and the tests."""
    from pipeline.report import build_report
    from pipeline.runtime.runner import check_inputs_not_outputs, run_stage
    from pipeline.stages import make_stage

    store.configure(cfg.storage.cache_dir, cfg.storage.options, cfg.storage.retries)
    RunLayout(cfg.out).pull()  # a run folder on object storage: the store is the truth (other nodes, a killed run)
    check_inputs_not_outputs([make_stage(name, cfg) for name in names])
    summaries: dict[str, dict[str, Any]] = {}
    for name in names:  # (each stage's runner brings the copy up to date after its shards: what other nodes wrote)
        # made just before it runs: the run's documents (DOCUMENTS) are what the stages before it wrote
        stage = make_stage(name, cfg)
        summaries[name] = run_stage(stage, executor=executor, quiet=quiet)
        if stage.role == "side":  # labels and rewrites keep their summary in report.json for the run summary
            build_report(RunLayout(cfg.out), extra={name: summaries[name]})
    return summaries


def run_pipeline(cfg: RunConfig) -> dict[str, Any]:
    """Every stage of the registry the config enables (`Stage.enabled`: labelling and distillation only without
    a given classifier, rewriting only when enabled), in order, each through the one runner: a finished
    stage is skipped, a partial one resumed. A filter stage left incomplete by transient errors stops the
    run there (later stages must see all of its output); a side stage's (labels, rewrites) are retried by
    the next run while the run goes on."""
    from pipeline.runtime.runner import StageIncomplete, check_inputs_not_outputs
    from pipeline.stages import make_stage, stage_class, wanted

    store.configure(cfg.storage.cache_dir, cfg.storage.options, cfg.storage.retries)
    layout = RunLayout(cfg.out)
    layout.root.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    incomplete: list[str] = []
    llm_noise = False
    names = list(wanted(cfg))
    check_inputs_not_outputs([make_stage(name, cfg) for name in names])
    with ExitStack() as stack:
        for at, name in enumerate(names):
            if (stage_class(name).needs_llm and cfg.llm.serve_tiny_model and not llm_noise
                    and _needs_llm(cfg, layout, names[at:])):
                cfg, llm_noise = _start_llm(cfg, layout, stack), True
            started = time.perf_counter()
            _status(f"{name} ...")
            summary = run_stages(cfg, name)[name]
            timings[name] = round(time.perf_counter() - started, 2)
            _status(f"{name} done in {timings[name]:.1f}s")
            if not (summary.get("skipped") or summary.get("complete", True)):
                incomplete.append(name)
                if stage_class(name).role == "filter":
                    raise StageIncomplete(
                        f"{name}: {summary['transient_errors']} record(s) failed for transient reasons (see "
                        f"decisions/{name}); the later stages need all of its output: run the same command "
                        "again to retry only those")
    report = summarize(cfg, timings, llm_noise=llm_noise or cfg.llm.serve_tiny_model)
    report["complete"] = not incomplete
    report["incomplete_stages"] = incomplete
    return report


KEPT_KEYS = ("kept_docs", "kept_tokens_by_quality_bucket", "kept_tokens_by_topic", "kept_words_by_quality_bucket",
             "kept_words_by_topic", "token_count")
# Kept documents whose tokens are counted one by one; past this, tokens are words x the ratio measured on them.
EXACT_TOKEN_DOCS = 200_000


def summarize(cfg: RunConfig, timings: dict[str, float], *, llm_noise: bool = False) -> dict[str, Any]:
    """Counts per stage and reason, kept tokens and words per quality bucket and top topic, conservation;
    written to report.json."""
    from pipeline.llm.tokens import TokenCounter, resolve_tokenizer
    from pipeline.report import build_report

    layout = RunLayout(cfg.out)
    counter = TokenCounter(resolve_tokenizer(cfg))
    manifest = layout.dataset("corpus") / "_manifest.json"
    corpus_id = hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.exists() else None
    previous = json.loads(layout.report_path.read_text()) if layout.report_path.exists() else {}
    counted = previous.get("token_count", {})
    if corpus_id and counted.get("corpus") == corpus_id and counted.get("tokenizer") == counter.name:
        kept = {key: previous[key] for key in KEPT_KEYS}  # same corpus files, same tokenizer: counted already
    else:
        kept = kept_totals(layout.dataset("corpus"), counter)
        kept["token_count"]["corpus"] = corpus_id
    extra = {
        "timings_s": timings,
        "llm_noise": llm_noise,
        **kept,
        "outputs": {name: str(layout.dataset(name)) for name in run_datasets() if layout.dataset(name).exists()},
        **safety_summary(layout),
        **mix_report(layout),
    }
    return build_report(layout, extra=extra)


def mix_report(layout: RunLayout) -> dict[str, Any]:
    """The training mix, when the run has one (report.json's `mix`: budget, total, tokens per group before and
    after; `mix_tokens`: the token shards)."""
    from pipeline.io import read_json
    from pipeline.mix.stage import mix_summary

    manifest = layout.dataset("mix") / "_manifest.json"
    if not layout.stage_marker("mix").exists() or not manifest.exists():
        return {}
    out: dict[str, Any] = {"mix": mix_summary(read_json(manifest))}
    tokens = layout.dataset("tokens") / "_manifest.json"
    if layout.stage_marker("tokenize").exists() and tokens.exists():
        written = read_json(tokens)
        out["mix_tokens"] = {key: written[key] for key in ("format", "tokens", "documents", "dtype")} | {
            "files": len(written["files"]), "folder": str(tokens.parent)}
    return out


def safety_summary(layout: RunLayout) -> dict[str, Any]:
    """What the safety stage removed and redacted (report.json's `safety`): PII per type, the contamination report
    per eval set, the n-gram index's size and build time."""
    from pipeline.io import read_json

    marker = layout.stage_marker("safety")
    if not marker.exists():
        return {}
    done = read_json(marker)
    return {"safety": {"pii_mode": done.get("pii_mode"), "pii_redacted": done.get("pii_redacted", {}),
                       "dropped": done.get("dropped", {}), "contamination": done.get("contamination", {}),
                       "index": done.get("index")}}


def run_datasets() -> list[str]:
    """The datasets and artifact folders a run writes, in pipeline order (from the registry's declarations)."""
    from pipeline.stages import stage_classes

    names: list[str] = []
    for cls in stage_classes().values():
        names += [output.dataset for output in cls.outputs] + list(getattr(cls, "artifacts", ()))
    return [*dict.fromkeys(names), "decisions"]


def kept_totals(corpus_dir: Path, counter, exact_docs: int = EXACT_TOKEN_DOCS) -> dict[str, Any]:
    """Kept documents, tokens and words per quality bucket (the classifier's probability, in quarters) and
    per top topic. One corpus file at a time: the driver never holds the corpus. Tokens are counted with
    `counter` for the first `exact_docs` documents, then estimated from their tokens-per-word ratio."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    docs = counted_docs = counted_words = counted_tokens = 0
    by_bucket: dict[str, Counter] = {"tokens": Counter(), "words": Counter()}
    by_topic: dict[str, Counter] = {"tokens": Counter(), "words": Counter()}
    for path in parquet_files(corpus_dir):
        part = pq.read_table(path, columns=["text", "quality_prob", "topics"])
        docs += part.num_rows
        words = pc.list_value_length(pc.utf8_split_whitespace(part.column("text"))).fill_null(0).to_pylist()
        if counted_docs < exact_docs:
            tokens = counter.count_many([t or "" for t in part.column("text").to_pylist()])
            counted_docs += part.num_rows
            counted_words += sum(words)
            counted_tokens += sum(tokens)
        else:
            ratio = counted_tokens / counted_words if counted_words else 0.0
            tokens = [round(w * ratio) for w in words]
        for n_words, n_tokens, prob, topics in zip(words, tokens, part.column("quality_prob").to_pylist(),
                                                   part.column("topics").to_pylist()):
            low = min(int((prob or 0.0) * 4), 3) / 4
            bucket, topic = f"{low:.2f}-{low + 0.25:.2f}", (topics or ["(none)"])[0]
            for totals, key in ((by_bucket, bucket), (by_topic, topic)):
                totals["tokens"][key] += n_tokens
                totals["words"][key] += n_words
    return {  # the keys of KEPT_KEYS
        "kept_docs": docs,
        "kept_tokens_by_quality_bucket": dict(sorted(by_bucket["tokens"].items())),
        "kept_tokens_by_topic": dict(by_topic["tokens"].most_common()),
        "kept_words_by_quality_bucket": dict(sorted(by_bucket["words"].items())),
        "kept_words_by_topic": dict(by_topic["words"].most_common()),
        "token_count": {"tokenizer": counter.name, "exact_docs": min(counted_docs, docs), "docs": docs},
    }


def format_summary(report: dict[str, Any]) -> str:
    from pipeline.report import format_report

    lines = [format_report(report), ""]
    lines.append(f"kept documents: {report.get('kept_docs', 0)}")
    count = report.get("token_count", {})
    exact = count.get("exact_docs")
    how = "" if exact == count.get("docs") else f", exact for the first {exact} docs"
    lines.append(f"kept tokens ({count.get('tokenizer')}{how}) / words, by quality bucket "
                 "(the distilled classifier's probability):")
    words = report.get("kept_words_by_quality_bucket", {})
    for bucket, tokens in report.get("kept_tokens_by_quality_bucket", {}).items():
        lines.append(f"  {bucket}  {tokens:>10} / {words.get(bucket, 0)}")
    lines.append("kept tokens / words, by top topic:")
    words = report.get("kept_words_by_topic", {})
    for topic, tokens in list(report.get("kept_tokens_by_topic", {}).items())[:12]:
        lines.append(f"  {topic:<32} {tokens:>10} / {words.get(topic, 0)}")
    labels = report.get("annotate")
    if labels:
        errors = ", ".join(f"{kind} {n}" for kind, n in labels.get("errors", {}).items()) or "none"
        lines.append(f"LLM labels: {labels['ok']} ok of {labels['labels']} on {labels['sampled']} sampled docs "
                     f"(errors: {errors}); tokens in/out {labels['prompt_tokens']}/{labels['completion_tokens']}")
        from pipeline.annotate import consistency_line, noise_warning

        consistency = labels.get("self_consistency")
        for line in (consistency_line(consistency), noise_warning(consistency)):
            if line:
                lines.append(line[0].upper() + line[1:])
    safety = report.get("safety")
    if safety:
        redacted = ", ".join(f"{kind} {n}" for kind, n in safety["pii_redacted"].items()) or "none"
        lines.append(f"personal data ({safety['pii_mode']}): redacted {redacted}; dropped too_much_pii "
                     f"{safety['dropped'].get('too_much_pii', 0)}")
        for eval_set, found in safety["contamination"].items():
            lines.append(f"benchmark decontamination: {eval_set}: {found['items_found']} item(s) found in "
                         f"{found['documents']} document(s)")
        if safety.get("index"):
            lines.append(f"  dropped contaminated {safety['dropped'].get('contaminated', 0)}; n-gram index "
                         f"{safety['index'].get('ngrams')} n-grams, {safety['index'].get('bytes', 0) / 1e6:.2f} MB")
    blocked = report.get("stages", {}).get("extract", {}).get("dropped", {}).get("blocked_url")
    if blocked:
        lines.append(f"blocked sites: {blocked} page(s) dropped before extraction (blocked_url)")
    if report.get("llm_noise"):
        lines.append("NOTE: labels came from the tiny random-weight demo model: they are noise by design. "
                     "Point llm.url/llm.model (or --llm-url/--llm-model) at a real Llama for real labels.")
    if report.get("mix"):
        from pipeline.mix.stage import format_mix

        lines += format_mix(report["mix"])
        shards = report.get("mix_tokens")
        if shards:
            lines.append(f"training tokens: {shards['tokens']:,} ({shards['format']} format, {shards['dtype']}) of "
                         f"{shards['documents']:,} documents in {shards['files']} shard(s) in {shards['folder']}"
                         + ("" if shards["tokens"] == report["mix"]["tokens"] else " -- NOT the mix's total"))
    timings = report.get("timings_s", {})
    if timings:
        lines.append("time per stage: " + ", ".join(f"{name} {secs:.1f}s" for name, secs in timings.items()))
    lines.append("outputs:")
    for name, path in report.get("outputs", {}).items():
        lines.append(f"  {name:<10} {path}")
    return "\n".join(lines)
