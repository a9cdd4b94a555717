"""The card of the synthetic rewrites (synthetic/README.md): how the pages were routed and rewritten, the checks,
what each score is and its threshold, and the scores' distributions (histograms summed from the shard markers);
and the summary's one line on the scores. Written by the rewrite stage's `finish` (pipeline.rewrite.stage),
which gives it what the card says of the scores (`ScoreLegend`): the card imports nothing of the stage.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import RunConfig
from pipeline.io import RunLayout, write_text
from pipeline.llm.client import canonical_json

SYNTHETIC = "synthetic"
# The scores a rewrite is decided on (synthetic/ columns).
SCORE_COLUMNS = ("rewrite_quality_prob", "faithfulness")
# The card's histograms: SCORE_BINS equal bins over [0, 1].
SCORE_BINS = 10




@dataclass(frozen=True)
class ScoreLegend:
    """What the card says of the scores a rewrite is decided on, from the rewrite stage: the faithfulness measure
    (pipeline.rewrite.faithfulness: METHOD, COVERAGE_TARGET), the reason of each score's drop, and which
    thresholds are on (None or 0 is off: pipeline.rewrite.checks.threshold_on)."""

    method: str
    coverage_target: dict[str, float]
    unfaithful: str
    low_quality: str
    threshold_on: Callable[[float | None], bool]

    def threshold(self, value: float | None) -> str:
        return f"{value}" if self.threshold_on(value) else "off"


# ------------------------------------------------------------------------------ score distributions (markers)
def histogram(values: Sequence[float | None], bins: int = SCORE_BINS) -> list[int]:
    """Counts of `values` in `bins` equal bins over [0, 1] (1.0 in the last); None and NaN left out."""
    counts = [0] * bins
    for value in values:
        if value is not None and not math.isnan(value):
            counts[min(int(value * bins), bins - 1)] += 1
    return counts


def score_stats(values: Sequence[float | None]) -> dict[str, Any]:
    """What a shard marker keeps of a list of scores: histogram, count and sum (markers add up)."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    return {"hist": histogram(present), "n": len(present), "sum": round(sum(present), 6)}


def add_score_stats(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {"hist": [x + y for x, y in zip(a["hist"], b["hist"])], "n": a["n"] + b["n"],
            "sum": round(a["sum"] + b["sum"], 6)}


def merge_score_stats(markers: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{"kept"|"dropped": {score column: stats}} summed over the shard markers (`dropped`: by a score)."""
    empty = score_stats([])
    total = {group: {column: dict(empty) for column in SCORE_COLUMNS} for group in ("kept", "dropped")}
    for marker in markers:
        for group, columns in (marker.get("scores") or {}).items():
            for column, stats in columns.items():
                total[group][column] = add_score_stats(total[group][column], stats)
    return total


# ----------------------------------------------------------------------------------------------- the card
def card_section(cfg: RunConfig, summary: dict[str, Any], legend: ScoreLegend) -> str:
    """The synthetic data's section of a dataset card (markdown)."""
    rewrite = cfg.rewrite
    lines = [
        "## Synthetic rewrites",
        "",
        f"Rewrites of pages of `{summary['corpus']}` by `{summary['model']}` (served by vLLM), made by "
        "`curate rewrite`. Each row's `doc_id` is its source page's; `prompt_id`, `prompt_hash`, `model` and "
        "`sampling_params` say how it was made. Pages were routed by the classifier's `quality_prob`, in the "
        "manner of Nemotron-CC:",
        "",
        f"- `quality_prob >= {rewrite.high_threshold}`: {', '.join(f'`{s}`' for s in rewrite.high_styles)}",
        f"- `{rewrite.mid_threshold} <= quality_prob < {rewrite.high_threshold}`: "
        f"{', '.join(f'`{s}`' for s in rewrite.mid_styles)}",
        f"- below `{rewrite.mid_threshold}`: not rewritten",
        "",
        f"Styles run: {', '.join(f'`{s}`' for s in rewrite.styles)}. Pages were split on paragraph boundaries "
        f"into chunks of at most {rewrite.chunk_tokens} tokens (counted with {summary['tokenizer']}), rewritten "
        "chunk by chunk and reassembled in order.",
        "",
        "| prompt id | style | prompt hash | max tokens per chunk | rows |",
        "|---|---|---|---|---|",
    ]
    for prompt_id, style in summary["styles"].items():
        lines.append(f"| `{prompt_id}` | {style['style']} | `{style['prompt_hash']}` | {style['max_tokens']} | "
                     f"{summary['kept_by_style'].get(style['style'], 0)} |")
    lines += [
        "",
        f"Sampling parameters: `{canonical_json(summary['sampling_params'])}`.",
        "",
        f"Of {summary['input']} (page, style) units from {summary['docs']} pages, {summary['kept']} passed every "
        f"check ({summary['kept_completion_tokens']} generated tokens kept). A rewrite is dropped when an answer "
        "is empty or cut at the token limit, a question-answer answer does not parse into pairs, the output "
        f"copies the source verbatim (more than {rewrite.max_copy_ratio:.0%} of its words in runs of "
        f"{rewrite.copy_ngram}), or is in another language than the source"
        f"{'' if rewrite.check_language else ' (language check off)'}; a rewrite passing those checks is then "
        "dropped when its scores miss their thresholds (below). Reasons, per unit, are in `decisions/rewrite` "
        "(the detail of a score drop lists every score):",
        "",
        "| outcome | reason | units |",
        "|---|---|---|",
    ]
    for outcome in ("dropped", "errored"):
        for reason, count in summary[outcome].items():
            lines.append(f"| {outcome} | {reason} | {count} |")
    return "\n".join(lines + ["", *scores_section(rewrite, summary, legend)]) + "\n"


def _mean(stats: dict[str, Any]) -> str:
    return f"{stats['sum'] / stats['n']:.3f}" if stats["n"] else "-"


def scores_section(rewrite_cfg, summary: dict[str, Any], legend: ScoreLegend) -> list[str]:
    """The card's "Scores" part: what each score is, its threshold, and both distributions (histogram, count
    and mean) for the kept rewrites and for those dropped by a score."""
    classifier = summary["quality_classifier"]
    scores = summary["scores"]
    if classifier["path"]:
        quality = (f"the quality classifier `{classifier['path']}` (found by {classifier['found_by']}, sha256 "
                   f"`{(classifier['sha256'] or '')[:16]}`) on the rewrite's text, the classifier that scored the "
                   "corpus")
    else:
        quality = f"not scored: no quality classifier ({classifier['found_by']})"
    lines = [
        "### Scores",
        "",
        "Every rewrite that passed the checks above is scored, and kept only when each score reaches its "
        "threshold (`off`: the score is recorded, nothing is dropped for it):",
        "",
        f"- `faithfulness` >= {legend.threshold(rewrite_cfg.min_faithfulness)} (`rewrite.min_faithfulness`, else "
        f"`{legend.unfaithful}`): each chunk's answer against its own chunk, (1 - invented_frac) x min(1, "
        "kept_content_frac / the style's coverage target), the lowest chunk's; `invented_frac` is the share of "
        "the rewrite's numbers and named terms not in the source, `kept_content_frac` the share of the source's "
        "content words, numbers and named terms the rewrite keeps (`pipeline/rewrite/faithfulness.py`, "
        f"{legend.method}; targets {', '.join(f'{k} {v}' for k, v in legend.coverage_target.items())}).",
        f"- `rewrite_quality_prob` >= {legend.threshold(rewrite_cfg.min_quality_prob)} (`rewrite.min_quality_prob`, "
        f"else `{legend.low_quality}`): {quality}.",
        "",
        "Unfaithful is decided first. Distributions (rewrites per score range):",
        "",
        "| score range | kept: faithfulness | dropped by a score: faithfulness | kept: rewrite_quality_prob | "
        "dropped by a score: rewrite_quality_prob |",
        "|---|---|---|---|---|",
    ]
    columns = [scores[group][column] for column in ("faithfulness", "rewrite_quality_prob")
               for group in ("kept", "dropped")]
    for index in range(SCORE_BINS):
        low, high = index / SCORE_BINS, (index + 1) / SCORE_BINS
        label = f"[{low:.1f}, {high:.1f}" + ("]" if index == SCORE_BINS - 1 else ")")
        lines.append(f"| {label} | " + " | ".join(str(c["hist"][index]) for c in columns) + " |")
    lines.append("| rewrites scored | " + " | ".join(str(c["n"]) for c in columns) + " |")
    lines.append("| mean | " + " | ".join(_mean(c) for c in columns) + " |")
    return lines


def scores_line(scores: dict[str, Any], rewrite_cfg, legend: ScoreLegend) -> str:
    """One line of the stage summary: the kept rewrites' mean scores, how many a score dropped, thresholds."""
    kept, dropped = scores["kept"], scores["dropped"]
    return (f"scores: kept mean faithfulness {_mean(kept['faithfulness'])}, rewrite_quality_prob "
            f"{_mean(kept['rewrite_quality_prob'])}; {dropped['faithfulness']['n']} dropped by a score "
            f"(rewrite.min_faithfulness {legend.threshold(rewrite_cfg.min_faithfulness)}, rewrite.min_quality_prob "
            f"{legend.threshold(rewrite_cfg.min_quality_prob)})")


def write_card(layout: RunLayout, cfg: RunConfig, summary: dict[str, Any], legend: ScoreLegend) -> Path:
    """synthetic/README.md: a YAML header for tools, then the card section."""
    header = {"pretty_name": "synthetic rewrites", "source_corpus": summary["corpus"], "model": summary["model"],
              "styles": {pid: s["prompt_hash"] for pid, s in summary["styles"].items()},
              "rows": summary["kept"], "complete": summary["complete"],
              "min_faithfulness": cfg.rewrite.min_faithfulness, "min_quality_prob": cfg.rewrite.min_quality_prob,
              "quality_classifier": summary["quality_classifier"]["path"]}
    text = "---\n" + yaml.safe_dump(header, sort_keys=True) + "---\n\n" + card_section(cfg, summary, legend)
    return write_text(text, layout.dataset(SYNTHETIC) / "README.md")
