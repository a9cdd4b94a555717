"""The model card (README.md with YAML front matter) of a classifier artifact."""

from __future__ import annotations

from typing import Any

import yaml


def _round(value: Any, digits: int = 4) -> Any:
    return round(value, digits) if isinstance(value, float) else value


def score_source(config: dict[str, Any], metrics: dict[str, Any]) -> str:
    """What the binary labels were decided on: the label set's own record (what was applied), else the config."""
    return (metrics.get("labels") or {}).get("label_source") or (config.get("distil") or {}).get("label_source") \
        or "sampled"


def _score_source_line(config: dict[str, Any], metrics: dict[str, Any]) -> str:
    threshold = config["quality"]["label_threshold"]
    if score_source(config, metrics) == "expected":
        used = (metrics.get("labels") or {}).get("expected_labels")
        return (f"Quality labels: the teacher's expected score (sum of k * p(k) over its score probabilities) >= "
                f"{threshold}" + (f", for {used} documents; the sampled score for the rest." if used is not None
                                  else "; the sampled score where no probabilities were kept."))
    return f"Quality labels: the teacher's sampled score >= {threshold}."


def front_matter(config: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    quality = config["quality"]
    q = metrics["quality"]
    topics = config.get("topics")
    return {
        "library_name": "fasttext",
        "pipeline_tag": "text-classification",
        "tags": ["data-filtering", "quality-classifier", "webcurate"],
        "teacher_model": config["teacher"]["models"],
        "prompts": config["teacher"]["prompts"],
        "label_source": config["teacher"]["source"],
        "labels": {"positive": quality["positive_label"], "negative": quality["negative_label"]},
        "label_threshold": quality["label_threshold"],
        "label_score": score_source(config, metrics),  # sampled | expected
        "decision_threshold": _round(quality["decision_threshold"], 6),
        "threshold_target": quality["threshold_target"],
        "training_size": q["split"],
        "labels_used": metrics["labels"],
        "model_file": quality["model_file"],
        "topics_model_file": topics["model_file"] if topics else None,
        "topics": sorted(topics["labels"].values()) if topics else [],
        "formats_model_file": config["formats"]["model_file"] if config.get("formats") else None,
        "formats": sorted(config["formats"]["labels"].values()) if config.get("formats") else [],
        "metrics": {
            "heldout_roc_auc": _round(q["roc_auc"]),
            "heldout_precision": _round(q["precision"]),
            "heldout_recall": _round(q["recall"]),
            "heldout_f1": _round(q["f1"]),
            "heldout_ece": _round(q["ece"]),
            "heldout_keep_rate": _round(q["keep_rate"]),
            "topics_macro_agreement": _round(metrics["topics"].get("macro_agreement")),
            "topics_macro_f1": _round(metrics["topics"].get("macro_f1")),
            "formats_macro_agreement": _round((metrics.get("formats") or {}).get("macro_agreement")),
            "formats_macro_f1": _round((metrics.get("formats") or {}).get("macro_f1")),
        },
    }


def _training_line(distil: dict[str, Any]) -> str:
    threads, seed = distil.get("threads"), distil.get("seed")
    if threads == 1:
        how = "reproducible: the same labels and settings give the same model, byte for byte"
    else:
        how = "not reproducible bit for bit (several threads train hogwild)"
    return f"Training: fastText with seed {seed} and {threads} thread{'s' if threads != 1 else ''}, {how}."


_FASTTEXT_NAMES = {"lr": "lr", "epoch": "epoch", "word_ngrams": "wordNgrams", "dim": "dim", "min_count": "minCount"}


def add_training_front_matter(header: dict[str, Any], config: dict[str, Any], metrics: dict[str, Any]) -> None:
    """The header's `training` block (the fastText settings used, how they were chosen, how the threshold
    was chosen) and the held-out Cohen's kappa, for artifacts whose metrics record them."""
    q = metrics["quality"]
    if "cohen_kappa" in q:
        header.setdefault("metrics", {})["heldout_cohen_kappa"] = _round(q["cohen_kappa"])
    if "hyperparameters" not in q:
        return
    tuning = q.get("tuning") or {}
    search: dict[str, Any] = {"tuned": bool(tuning.get("enabled")), "heldout_used": False}
    if tuning.get("enabled"):
        search.update({
            "selected_on": "validation split", "metric": "roc_auc",
            "validation_documents": tuning["validation_documents"],
            "configs_tried": tuning["configs_tried"], "configs_in_grid": tuning["configs_in_grid"],
            "complete": tuning["complete"], "budget_s": tuning["budget_s"], "seconds": tuning["seconds"],
            "chosen_validation_auc": _round(tuning["chosen_validation_auc"]),
            "configured_validation_auc": _round(tuning["configured_validation_auc"]),
        })
    choice = q.get("threshold_choice") or {}
    header["training"] = {
        "hyperparameters": q["hyperparameters"],
        "search": search,
        "threshold_chosen_by": {k: choice[k] for k in ("method", "folds", "documents") if k in choice},
        "final_model_trained_on": q["split"].get("final_model_trained_on", q["split"]["train"]),
    }


def _auc_text(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def training_section(config: dict[str, Any], metrics: dict[str, Any], top: int = 10) -> list[str]:
    """'## Training settings and threshold': the settings, the search that chose them (the best `top`
    configurations; all of them are in metrics.json), how the threshold was chosen, Cohen's kappa."""
    q = metrics["quality"]
    settings = q.get("hyperparameters")
    if not settings:
        return []
    named = ", ".join(f"{name} {settings[key]}" for key, name in _FASTTEXT_NAMES.items())
    tuning = q.get("tuning") or {}
    lines = ["## Training settings and threshold", ""]
    if tuning.get("enabled"):
        lines += [
            f"fastText settings: {named} (bucket {settings.get('bucket')}), chosen by a search on the validation "
            f"split ({tuning['validation_documents']} documents; the held-out split was not used): "
            f"{tuning['configs_tried']} of {tuning['configs_in_grid']} configurations in {tuning['seconds']:.1f} s "
            f"(budget {tuning['budget_s']:g} s), the configured settings first, then the grid in a seeded order. "
            f"Best validation ROC AUC {_auc_text(tuning['chosen_validation_auc'])} (configured settings: "
            f"{_auc_text(tuning['configured_validation_auc'])}); ties go to the smaller model.",
            "",
        ]
        if not tuning["complete"]:
            lines += ["The time budget ran out before the whole grid was tried: a faster or slower machine can "
                      "try other configurations and so choose other settings.", ""]
        trials = tuning.get("trials") or []
        chosen = tuning.get("chosen_trial")
        def auc_of(i: int) -> float:
            return -1.0 if trials[i]["validation_auc"] is None else trials[i]["validation_auc"]

        ranked = sorted(range(len(trials)), key=lambda i: (-auc_of(i), i))[:top]
        if chosen is not None and chosen not in ranked:
            ranked.append(chosen)
        lines += ["| | " + " | ".join(_FASTTEXT_NAMES.values()) + " | validation AUC | seconds |",
                  "|---|" + "---|" * (len(_FASTTEXT_NAMES) + 2)]
        for i in ranked:
            t = trials[i]
            mark = " and ".join(name for name, yes in (("chosen", i == chosen), ("configured", i == 0)) if yes)
            lines.append(f"| {mark} | " + " | ".join(str(t[key]) for key in _FASTTEXT_NAMES)
                         + f" | {_auc_text(t['validation_auc'])} | {t['seconds']:.2f} s |")
        lines += ["", "Every configuration tried is in metrics.json (`quality.tuning.trials`).", ""]
    else:
        lines += [f"fastText settings: {named} (bucket {settings.get('bucket')}), as configured "
                  "(`distil.tune: false`, no search).", ""]
    choice = q.get("threshold_choice") or {}
    if choice.get("method") == "cross_validation":
        lines.append(f"Decision threshold: chosen on out-of-fold scores of a {choice['folds']}-fold cross-validation "
                     f"over train+validation ({choice['documents']} documents, {choice['folds']} models trained with "
                     "these settings), because the validation split was too small; the shipped model was then "
                     f"trained on all {choice['documents']} documents.")
    elif choice:
        lines.append(f"Decision threshold: chosen on the validation split ({choice['documents']} documents), "
                     "scored by the shipped model.")
    if q.get("cohen_kappa") is not None:
        lines += ["", f"Held-out Cohen's kappa between student (at the decision threshold) and teacher (at the label "
                      f"threshold): {q['cohen_kappa']:.3f}."]
    return lines + [""]


def tag_model_lines(section: dict[str, Any] | None, tag_metrics: dict[str, Any], noun: str) -> list[str]:
    """The card's paragraph on one one-vs-all tag model (topics or formats), or why there is none."""
    if not section:
        return [f"No {noun} model: {tag_metrics.get('skipped')}.", ""]
    return [
        f"{noun.capitalize()}s: one-vs-all model over {len(section['labels'])} {noun}s; a {noun} applies when its "
        f"probability >= {section['threshold']}. Held-out macro agreement with the teacher "
        f"{tag_metrics.get('macro_agreement', float('nan')):.3f}, macro F1 "
        f"{tag_metrics.get('macro_f1', float('nan')):.3f} (per {noun} in metrics.json). fastText label of each {noun}:",
        "",
        *[f"- `{label}`: {tag}" for label, tag in section["labels"].items()],
        "",
    ]


def render_card(config: dict[str, Any], metrics: dict[str, Any]) -> str:
    header = front_matter(config, metrics)
    add_training_front_matter(header, config, metrics)
    quality = config["quality"]
    q = metrics["quality"]
    topics = config.get("topics")
    c = q["confusion"]
    auc = "n/a" if q["roc_auc"] is None else f"{q['roc_auc']:.3f}"
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        "# fastText quality classifier (distilled from teacher labels)",
        "",
        f"Predicts whether a text would get a teacher quality score of at least {quality['label_threshold']} "
        f"(of 5): label `{quality['positive_label']}` (high quality) versus `{quality['negative_label']}`. "
        f"Teacher: {', '.join(config['teacher']['models']) or 'unknown'}; labels from {config['teacher']['source']}.",
        _score_source_line(config, metrics),
        "",
        "## Use",
        "",
        "Join a document's lines with spaces before predicting (fastText rejects newlines; the model was "
        "trained that way). Keep a text when P(`__label__hq`) >= "
        f"{quality['decision_threshold']:.6g} (chosen on a validation split for target "
        f"`{quality['threshold_target']}`).",
        "",
        "```python",
        "from classifiers import QualityClassifier",
        "clf = QualityClassifier.load(\"THIS_FOLDER\")",
        "clf.score([\"some text\"])       # P(high quality), numpy array",
        "clf.predict([\"some text\"])     # keep/drop at the decision threshold",
        *(["clf.predict_topics([\"some text\"])"] if topics else []),
        *(["clf.predict_formats([\"some text\"])"] if config.get("formats") else []),
        "",
        "import fasttext",
        f"model = fasttext.load_model(\"THIS_FOLDER/{quality['model_file']}\")",
        "labels, probs = model.predict(text.replace(\"\\n\", \" \"), k=2)",
        "```",
        "",
        "CLI: `curate classifier score --classifier THIS_FOLDER file.jsonl`. datatrove: "
        f"`FastTextClassifierFilter(\"THIS_FOLDER/{quality['model_file']}\", keep_labels=(\"hq\", "
        f"{quality['decision_threshold']:.6g}), newline_replacement=\" \")`.",
        "",
        "## Held-out evaluation against the teacher",
        "",
        f"{q['n']} held-out documents ({q['positives']} positive), never seen in training or threshold choice.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| ROC AUC | {auc} |",
        f"| precision / recall / F1 at threshold | {q['precision']:.3f} / {q['recall']:.3f} / {q['f1']:.3f} |",
        f"| keep rate | {q['keep_rate']:.3f} |",
        f"| expected calibration error | {q['ece']:.3f} |",
        f"| confusion (tp, fp, fn, tn) | {c['tp']}, {c['fp']}, {c['fn']}, {c['tn']} |",
        "",
        _training_line(config.get("distil") or {}),
        "",
    ]
    for kind, noun in (("topics", "topic"), ("formats", "format")):
        lines += tag_model_lines(config.get(kind), metrics.get(kind) or {"skipped": "not trained"}, noun)
    lines += training_section(config, metrics)
    lines += [
        "## Intended use",
        "",
        "Filtering web text for language-model pretraining at the scale where the teacher is too slow: score "
        "every document, keep those above the threshold. The score ranks documents; treat the probability as "
        "approximately calibrated only as far as the ECE above says.",
        "",
        "## Limits",
        "",
        "- It imitates the teacher on the labelled sample, with the teacher's biases; it is no better than "
        "those labels, and a small or unrepresentative sample makes it worse (see the training size above).",
        "- A bag of words and word n-grams: it sees vocabulary and style, not facts, coherence or safety.",
        "- Trained on the languages and sources of the sample; scores on other languages or domains are "
        "not meaningful.",
        "- The held-out metrics measure agreement with the teacher, not the quality of a model trained on "
        "the kept data.",
        "",
    ]
    return "\n".join(lines)
