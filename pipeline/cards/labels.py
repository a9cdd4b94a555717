"""The card of the teacher's labels (labels/README.md): a YAML header (teacher, prompts, sampling, counts,
self-consistency) and a short text; and the one-line figures of the teacher's self-consistency that the card,
the annotate summary and `curate run` print. Written by the annotate stage's `finish` (pipeline.annotate)."""

from __future__ import annotations

from typing import Any

import yaml


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def consistency_line(consistency: dict[str, Any] | None) -> str | None:
    """One line on the two passes' agreement (the stage summary, `curate run`), or None when not measured."""
    if not consistency or consistency.get("pages") is None:
        return None
    return (f"teacher self-consistency on {consistency['pages']} pages (second pass at temperature "
            f"{consistency['temperature']}, seed {consistency['seed']}): score kappa {_figure(consistency['kappa'])}"
            f" (quadratic-weighted), exact {_figure(consistency['exact'])}, within-1 "
            f"{_figure(consistency['within_1'])}; topics Jaccard {_figure(consistency['topics_jaccard'])}, format "
            f"Jaccard {_figure(consistency['format_jaccard'])}")


def noise_warning(consistency: dict[str, Any] | None) -> str | None:
    """The plain warning when the score's kappa is below annotate.min_kappa, else None."""
    if not consistency or not consistency.get("noisy"):
        return None
    return (f"WARNING: the teacher's scores agree with themselves at kappa {consistency['kappa']:.3f} < "
            f"annotate.min_kappa={consistency['min_kappa']}: these labels are too noisy to distil well")


def labels_card(summary: dict[str, Any], tasks, consistency_tasks=None) -> str:
    """labels/README.md: a YAML header (teacher, prompts, sampling, counts, self-consistency) and a short text.
    `tasks` / `consistency_tasks`: the two passes' pipeline.annotate.TaskSet (prompts, model, sampling)."""
    consistency = summary.get("self_consistency")
    header = {
        "teacher_model": tasks.model,
        "mode": tasks.mode,
        "prompts": [{"task": t, "prompt_id": p.prompt_id, "prompt_hash": p.prompt_hash}
                    for t, p in tasks.prompts.items()],
        "sampling": {t: {**tasks.task_params(t), "max_tokens": tasks.max_tokens[t]} for t in tasks.prompts},
        "max_doc_chars": tasks.max_doc_chars,
        "sampled_docs": summary["sampled"],
        "labels": summary["labels"], "ok": summary["ok"], "errors": summary["errors"],
        "with_score_probabilities": summary["with_probs"],
        "self_consistency": consistency,
    }
    if consistency_tasks is not None and consistency:
        header["consistency_sampling"] = {t: consistency_tasks.task_params(t) for t in consistency_tasks.prompts}
    how = ("one request per page answers every label (reason, score, topics, format)" if tasks.mode == "combined"
           else f"one request per page and task ({', '.join(tasks.prompts)})")
    lines = ["---", yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             "# Teacher labels", "",
             f"{summary['ok']} valid labels of {summary['labels']} on {summary['sampled']} sampled pages from "
             f"{summary['docs_dir']}, by {tasks.model}: {how}; prompts "
             + ", ".join(f"`{p.prompt_id}` ({p.prompt_hash})" for p in tasks.prompts.values()) + ". "
             f"{summary['with_probs']} scores carry their probabilities p(0..5) (`quality_probs`, "
             "`quality_expected`); the others are sampled scores only.", ""]
    line = consistency_line(consistency)
    if line:
        lines += ["## Self-consistency", "", line[0].upper() + line[1:] + ".",
                  "The second pass is in labels_consistency/ (distillation reads this folder only).", ""]
        warning = noise_warning(consistency)
        if warning:
            lines += [warning + ".", ""]
    else:
        lines += ["Self-consistency: not measured (annotate.consistency_sample=0).", ""]
    return "\n".join(lines)
