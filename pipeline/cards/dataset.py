"""The dataset card of the kept corpus (corpus/README.md): where the documents came from, what filtered them,
the counts, the classifier, the threshold and why it was chosen, what other thresholds would keep, the files
and the schema. Written by the classify stage's `finish` (pipeline.classify.decide), which gives it everything
it shows: the card reads nothing of the classifier folder and imports nothing of the stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline import schemas
from pipeline.config import RunConfig
from pipeline.io import RunLayout, read_json_or_empty


def dataset_card(cfg: RunConfig, layout: RunLayout, plan: dict[str, Any], threshold: float, totals: dict[str, int],
                 files: list[dict[str, Any]], choice: dict[str, Any] | None = None,
                 classifier: dict[str, Any] | None = None, stage: str = "classify") -> str:
    """README.md of corpus/: where the data came from, what filtered it, counts, classifier, the threshold and
    why it was chosen, what other thresholds would keep, schema.

    `plan`: what the score stage stored (classifier, classifier_fingerprint, docs_dir); `totals`: input, kept
    and the documents dropped per reason (in the card's order); `choice`: the threshold's reason, the threshold
    table as Markdown lines (`table_lines`) and its notes (tokens, heldout); `classifier`: what the card says
    of the classifier besides its path and fingerprint (teacher, label_threshold, heldout_roc_auc; empty when
    its folder could not be read); `stage`: the deciding stage's name (its decisions folder)."""
    classifier_dir = Path(plan["classifier"])
    card_meta = classifier or {}
    dropped = {reason: n for reason, n in totals.items() if reason not in ("input", "kept")}
    from pipeline.stages import filter_stages

    stages = {}
    for before in filter_stages():  # the lineage: every filter stage of the registry before this one
        if before == stage:
            break
        summary = layout.shard_stats(before)
        if summary:
            stages[before] = {"input": sum(s["input"] for s in summary), "kept": sum(s["kept"] for s in summary)}
    stages[stage] = {"input": totals["input"], "kept": totals["kept"], "dropped": dropped}
    source = cfg.input.snapshot or (f"{len(cfg.input.warcs)} WARC path pattern(s)" if cfg.input.warcs else None)
    header = {
        "configs": [{"config_name": "default", "data_files": "part-*.parquet"}],
        "source": source or f"documents from {plan['docs_dir']}",
        "docs_dir": plan["docs_dir"],
        "classifier": {"path": str(classifier_dir), "sha256": plan["classifier_fingerprint"], **card_meta},
        "quality_threshold": threshold,
        "threshold_chosen_by": (choice or {}).get("reason"),
        "stages": stages,
        "rows": totals["kept"],
        "files": len(files),
    }
    safety = _safety(layout)
    if safety:
        header["safety"] = safety
    schema_lines = [f"| `{f.name}` | `{f.type}` |" for f in schemas.SCORED]
    extract_cfg = cfg.extract.model_dump()
    return "\n".join([
        "---", yaml.safe_dump(header, sort_keys=False).rstrip(), "---", "",
        "# Curated web text (webcurate)", "",
        f"Documents extracted from web pages ({header['source']}), deduplicated when the run's dedup stage "
        f"ran, then filtered by a fastText quality classifier distilled from LLM labels: a document is kept "
        f"when `quality_prob >= {threshold:.4f}`.", "",
        *_threshold_section(choice, stage),
        "## Stages and counts", "",
        "| stage | input | kept |", "|---|---|---|",
        *[f"| {name} | {s['input']} | {s['kept']} |" for name, s in stages.items()], "",
        f"Dropped by {stage}: " + ", ".join(f"{n} `{reason}`" for reason, n in dropped.items())
        + f" (one row each in `decisions/{stage}/` of the run).", "",
        f"Extraction: trafilatura, languages {extract_cfg['languages'] or 'all'}, heuristic rules "
        f"{'on' if extract_cfg['rules']['enabled'] else 'off'}.", "",
        *_safety_section(safety),
        "## Classifier", "",
        f"`{classifier_dir}` (see its README.md model card); stored scores in the run's `scores/`, so "
        "`curate classify --threshold T` rewrites this folder without re-running the model.", "",
        "## Files", "",
        f"{len(files)} Parquet file(s), zstd, listed with rows and sha256 in `_manifest.json`. Load with "
        "`datasets.load_dataset(\"parquet\", data_files=\"corpus/part-*.parquet\")` or DuckDB "
        "`SELECT * FROM 'corpus/part-*.parquet'`.", "",
        "## Schema", "",
        "| column | type |", "|---|---|", *schema_lines, "",
        "`quality_prob`: P(high quality) from the classifier; `topics`/`topic_probs`: the classifier's most "
        "probable topics, most probable first (null without a topic model); `format`/`format_probs`: the same "
        "for the WebOrganizer format ids (null without a format model). The dedup columns are null when "
        "the input was docs/.", "",
    ])


def _threshold_section(choice: dict[str, Any] | None, stage: str) -> list[str]:
    if not choice:
        return []
    notes = choice.get("notes", {})
    return [
        "## Threshold", "",
        f"Chosen by {choice['reason']}. What other thresholds would keep, from the stored scores (no model run; "
        "`curate classify --threshold T`, `--target-tokens N` or `--target-keep-rate R` rewrites this folder "
        "at another one):", "",
        *choice["table_lines"], "",
        f"Keep rate: of all {stage} input documents. Kept tokens: {notes.get('tokens')}. Precision and recall: "
        f"against the teacher's labels, {notes.get('heldout')}.", "",
    ]


def _safety(layout: RunLayout) -> dict[str, Any]:
    """What was removed before training could see it, from the extract and safety stages' markers: every
    blocklist and eval set used (path, entries or items, sha256) and the counts removed."""
    out: dict[str, Any] = {}
    extract = read_json_or_empty(layout.stage_marker("extract"))
    if extract.get("blocklists"):
        out["blocklists"] = extract["blocklists"]
        out["blocked_url"] = (extract.get("dropped") or {}).get("blocked_url", 0)
    safety = read_json_or_empty(layout.stage_marker("safety"))
    if safety:
        dropped = safety.get("dropped") or {}
        out["pii"] = {"mode": safety.get("pii_mode"), "redacted": safety.get("pii_redacted", {}),
                      "too_much_pii": dropped.get("too_much_pii", 0)}
        if safety.get("decontam_mode"):
            index = safety.get("index") or {}
            out["decontamination"] = {
                "mode": safety["decontam_mode"], "eval_sets": index.get("eval_sets", []),
                "contaminated": dropped.get("contaminated", 0),
                "found": {name: {"items_found": found["items_found"], "documents": found["documents"]}
                          for name, found in (safety.get("contamination") or {}).items()}}
    return out


def _safety_section(safety: dict[str, Any]) -> list[str]:
    if not safety:
        return []
    lines = ["## Removed before training", ""]
    for entry in safety.get("blocklists", []):
        lines.append(f"- URL blocklist `{entry.get('path')}`: {entry.get('entries')} entries, sha256 "
                     f"`{str(entry.get('sha256'))[:16]}`")
    if "blocked_url" in safety:
        lines.append(f"- {safety['blocked_url']} page(s) dropped as `blocked_url` before extraction")
    pii = safety.get("pii")
    if pii:
        redacted = ", ".join(f"{kind} {n}" for kind, n in pii["redacted"].items()) or "none"
        lines.append(f"- personal data ({pii['mode']}): redacted {redacted}; {pii['too_much_pii']} page(s) "
                     "dropped as `too_much_pii`; counts per type are the `pii_*` columns")
    decontam = safety.get("decontamination")
    if decontam:
        for entry in decontam["eval_sets"]:
            found = decontam["found"].get(entry.get("path"), {"items_found": 0, "documents": 0})
            lines.append(f"- eval set `{entry.get('path')}`: {entry.get('items')} items, sha256 "
                         f"`{str(entry.get('sha256'))[:16]}`; {found['items_found']} item(s) found in "
                         f"{found['documents']} document(s)")
        lines.append(f"- {decontam['contaminated']} document(s) dropped as `contaminated` ({decontam['mode']})")
    return [*lines, ""]
