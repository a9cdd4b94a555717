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


def _threshold_origin(q: dict[str, Any]) -> str:
    choice = q.get("threshold_choice") or {}
    if choice.get("method") == "cross_validation":
        return "out-of-fold scores of the training labels"
    return "a validation split"


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
    was chosen, which model the metrics are of and which one ships, the spread of the held-out AUC over seeds,
    the text view) and the held-out Cohen's kappa, for artifacts whose metrics record them."""
    q = metrics["quality"]
    if "cohen_kappa" in q:
        header.setdefault("metrics", {})["heldout_cohen_kappa"] = _round(q["cohen_kappa"])
    if "hyperparameters" not in q:
        return
    tuning = q.get("tuning") or {}
    search: dict[str, Any] = {"tuned": bool(tuning.get("enabled")), "heldout_used": False}
    if tuning.get("mode") == "cross_validation":
        search.update({
            "selected_on": "cross-validation", "metric": "roc_auc", "folds": tuning["folds"],
            "repeats": tuning["repeats"], "documents": tuning["documents"], "rule": tuning["rule"],
            "configs_tried": tuning["configs_tried"], "configs_in_grid": tuning["configs_in_grid"],
            "complete": tuning["complete"], "budget_s": tuning["budget_s"], "seconds": tuning["seconds"],
            "chosen_mean_auc": _round(tuning["chosen_mean_auc"]), "chosen_se": _round(tuning["chosen_se"]),
            "best_mean_auc": _round(tuning["best_mean_auc"]), "best_se": _round(tuning["best_se"]),
            "configured_mean_auc": _round(tuning["configured_mean_auc"]), "why": tuning["why"],
        })
    elif tuning.get("enabled"):
        search.update({
            "selected_on": "validation split", "metric": "roc_auc", "rule": tuning.get("rule"),
            "validation_documents": tuning["validation_documents"],
            "configs_tried": tuning["configs_tried"], "configs_in_grid": tuning["configs_in_grid"],
            "complete": tuning["complete"], "budget_s": tuning["budget_s"], "seconds": tuning["seconds"],
            "chosen_validation_auc": _round(tuning["chosen_validation_auc"]),
            "configured_validation_auc": _round(tuning["configured_validation_auc"]),
        })
    choice = q.get("threshold_choice") or {}
    models = q.get("models") or {}
    shipped = models.get("shipped_model") or {}
    header["training"] = {
        "hyperparameters": q["hyperparameters"],
        "search": search,
        "threshold_chosen_by": {k: choice[k] for k in ("method", "folds", "repeats", "documents", "scores")
                                if k in choice},
        "final_model_trained_on": q["split"].get("final_model_trained_on", q["split"]["train"]),
    }
    if models:
        header["training"]["metrics_of"] = "held-out model (trained on {} documents, never saw the held-out labels)" \
            .format(models["heldout_model"]["trained_on"])
        header["training"]["shipped_model"] = {"refit_on_all_labels": bool(shipped.get("refit_all")),
                                               "trained_on": shipped.get("trained_on"),
                                               "files": shipped.get("files")}
    variance = q.get("variance") or {}
    if variance.get("measured"):
        header["training"]["heldout_auc_spread"] = {
            key: {"mean": _round(variance[key]["mean"]), "sd": _round(variance[key]["sd"]),
                  "min": _round(variance[key]["min"]), "max": _round(variance[key]["max"]), "n": variance[key]["n"]}
            for key in ("training_seed", "split_seed")}
    view = q.get("text_view")
    if view:
        header["training"]["text_view"] = {"view": view["view"], "max_chars": view["max_chars"],
                                           "teacher_chars": view["teacher_chars"]}


def _auc_text(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _se_text(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _search_lines(tuning: dict[str, Any], named: str, bucket: Any, top: int) -> list[str]:
    """The search that chose the settings: how, the ranked configurations (the best `top`, and the chosen and
    configured ones), and why the chosen one."""
    trials = tuning.get("trials") or []
    chosen = tuning.get("chosen_trial")
    cross_validation = tuning.get("mode") == "cross_validation"
    if cross_validation:
        lines = [
            f"fastText settings: {named} (bucket {bucket}), chosen by {tuning['folds']}-fold cross-validation "
            f"repeated {tuning['repeats']} time{'s' if tuning['repeats'] != 1 else ''} (stratified, seeded) over "
            f"the {tuning['documents']} training documents (the held-out documents were not used): each "
            f"configuration is ranked by its mean out-of-fold ROC AUC over the {tuning['folds'] * tuning['repeats']} "
            f"folds, with the standard error of that mean. {tuning['configs_tried']} of {tuning['configs_in_grid']} "
            f"configurations in {tuning['seconds']:.1f} s (budget {tuning['budget_s']:g} s), the configured "
            "settings first, then the grid in a seeded order.",
            "",
            f"Chosen: {tuning['why']}. "
            + ("Order of simplicity (simplest first, setting by setting): fewer word n-grams, fewer dimensions, a "
               "higher minCount, fewer epochs, a lower learning rate." if tuning.get("rule") == "one_standard_error"
               else ""),
            "",
        ]
    else:
        lines = [
            f"fastText settings: {named} (bucket {bucket}), chosen by a search on the validation split "
            f"({tuning['validation_documents']} documents; the held-out split was not used): "
            f"{tuning['configs_tried']} of {tuning['configs_in_grid']} configurations in {tuning['seconds']:.1f} s "
            f"(budget {tuning['budget_s']:g} s), the configured settings first, then the grid in a seeded order. "
            f"Chosen validation ROC AUC {_auc_text(tuning['chosen_validation_auc'])} (configured settings: "
            f"{_auc_text(tuning['configured_validation_auc'])})"
            + (f"; {tuning['why']} (standard errors by Hanley and McNeil)."
               if tuning.get("rule") == "one_standard_error" else "; ties go to the smaller model."),
            "",
        ]
    if not tuning["complete"]:
        lines += ["The time budget ran out before the whole grid was tried: a faster or slower machine can "
                  "try other configurations and so choose other settings.", ""]

    def auc_of(i: int) -> float:
        return -1.0 if trials[i]["mean_auc"] is None else trials[i]["mean_auc"]

    ranked = sorted(range(len(trials)), key=lambda i: (-auc_of(i), i))[:top]
    for extra in (chosen, 0):
        if extra is not None and extra < len(trials) and extra not in ranked:
            ranked.append(extra)
    column = "mean AUC ± SE" if cross_validation else "validation AUC ± SE"
    lines += ["| | " + " | ".join(_FASTTEXT_NAMES.values()) + f" | {column} | seconds |",
              "|---|" + "---|" * (len(_FASTTEXT_NAMES) + 2)]
    for i in ranked:
        t = trials[i]
        mark = " and ".join(name for name, yes in (("chosen", i == chosen), ("configured", i == 0)) if yes)
        lines.append(f"| {mark} | " + " | ".join(str(t[key]) for key in _FASTTEXT_NAMES)
                     + f" | {_auc_text(t['mean_auc'])} ± {_se_text(t['se'])} | {t['seconds']:.2f} s |")
    return lines + ["", "Every configuration tried is in metrics.json (`quality.tuning.trials`).", ""]


def training_section(config: dict[str, Any], metrics: dict[str, Any], top: int = 10) -> list[str]:
    """'## Training settings and threshold': the settings, the search that chose them (the best `top`
    configurations; all of them are in metrics.json), how the threshold was chosen, which model the metrics
    are of and which one ships, the spread of the held-out AUC, Cohen's kappa."""
    q = metrics["quality"]
    settings = q.get("hyperparameters")
    if not settings:
        return []
    named = ", ".join(f"{name} {settings[key]}" for key, name in _FASTTEXT_NAMES.items())
    tuning = q.get("tuning") or {}
    lines = ["## Training settings and threshold", ""]
    if tuning.get("enabled") and tuning.get("trials"):
        lines += _search_lines(tuning, named, settings.get("bucket"), top)
    else:
        lines += [f"fastText settings: {named} (bucket {settings.get('bucket')}), as configured "
                  "(`distil.tune: false`, no search).", ""]
    choice = q.get("threshold_choice") or {}
    if choice.get("method") == "cross_validation":
        lines.append(f"Decision threshold: chosen on the out-of-fold scores of the chosen settings "
                     f"({choice['folds']}-fold cross-validation x {choice.get('repeats', 1)} over "
                     f"{choice['documents']} training documents): scores of models that had not seen the document "
                     "they scored, as the held-out and the shipped model's scores of new text are, so the threshold "
                     "keeps its meaning on them.")
    elif choice:
        lines.append(f"Decision threshold: chosen on the validation split ({choice['documents']} documents), "
                     "scored by a model with the chosen settings trained on the train split.")
    models = q.get("models") or {}
    if models:
        held, shipped = models["heldout_model"], models["shipped_model"]
        lines += ["", f"The held-out metrics above are those of the held-out model, trained on {held['trained_on']} "
                      "documents with these settings; it never saw the held-out labels."
                  + (f" The shipped model ({', '.join(shipped['files'])}) was then refit on all "
                     f"{shipped['trained_on']} labelled documents, the held-out ones included, with the same "
                     "settings and threshold: it has no held-out evaluation of its own (its documents are all "
                     "training documents), and `heldout_scores.jsonl` keeps the held-out model's scores."
                     if shipped["refit_all"] else " It is the shipped model.")]
    variance = q.get("variance") or {}
    if variance.get("measured"):
        t, s = variance["training_seed"], variance["split_seed"]
        lines += ["", f"Spread of the held-out ROC AUC with these settings: over {t['n']} training seeds (fastText's "
                      f"seed and the training-line order) {t['mean']:.4f} ± {t['sd']:.4f} (sd, range "
                      f"{t['min']:.4f}-{t['max']:.4f}); over {s['n']} seeded held-out splits {s['mean']:.4f} ± "
                      f"{s['sd']:.4f} (range {s['min']:.4f}-{s['max']:.4f}). Differences between classifiers "
                      "smaller than this are noise."]
    bag = q.get("bag") or {}
    if bag.get("models", 1) > 1:
        lines += ["", f"Bagging: the score is the mean P(`__label__hq`) of {bag['models']} models "
                      f"({bag['sampling']} samples; `{config['quality']['model_file']}` is the one trained on every "
                      "document, config.yaml `quality.bag_files` the others). `QualityClassifier` averages them; plain "
                      "fastText and datatrove load the one model file."]
    view = q.get("text_view") or {}
    if view:
        lines += ["", f"Text view: trained and scored on {view['trained_on']}."]
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
    max_chars = (config.get("text_view") or {}).get("max_chars")
    cut = f"[:{max_chars}]" if max_chars else ""
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
        "trained that way)" + (f", after cutting it to its first {max_chars} characters (the text view the model "
                               "was trained and is scored on; `QualityClassifier` does both)" if max_chars else "")
        + ". Keep a text when P(`__label__hq`) >= "
        f"{quality['decision_threshold']:.6g} (chosen for target `{quality['threshold_target']}` on "
        f"{_threshold_origin(q)}).",
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
        f"labels, probs = model.predict(text{cut}.replace(\"\\n\", \" \"), k=2)",
        "```",
        "",
        "CLI: `curate classifier score --classifier THIS_FOLDER file.jsonl`. datatrove: "
        f"`FastTextClassifierFilter(\"THIS_FOLDER/{quality['model_file']}\", keep_labels=(\"hq\", "
        f"{quality['decision_threshold']:.6g}), newline_replacement=\" \")`"
        + (f" (it scores the whole text: cut documents to their first {max_chars} characters before it to score "
           "what the model was trained on)" if max_chars else "") + "."
        + (" Plain fastText and datatrove load the one model file; the bag's mean is `QualityClassifier`'s."
           if config["quality"].get("bag_files") else ""),
        "",
        "## Held-out evaluation against the teacher",
        "",
        f"{q['n']} held-out documents ({q['positives']} positive), scored by a model that never saw them and "
        "whose threshold was not chosen on them"
        + (" (the held-out model; the shipped model was then refit on every label)."
           if (q.get("models") or {}).get("shipped_model", {}).get("refit_all") else "."),
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
