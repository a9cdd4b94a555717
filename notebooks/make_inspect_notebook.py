"""Writes notebooks/inspect_decisions.ipynb (without outputs) from the cells below.

    .venv/bin/python notebooks/make_inspect_notebook.py

Edit the cells here rather than in the .ipynb, so the stored notebook stays small and reviewable.
"""

from pathlib import Path

import nbformat as nbf

nb = nbf.v4.new_notebook()
cells = []


def md(s):
    cells.append(nbf.v4.new_markdown_cell(s))


def code(s):
    cells.append(nbf.v4.new_code_cell(s))


md("""# Inspect a run's filter decisions

Why was each page kept or dropped? Counts per stage and reason, then **one card per sampled document**
(grouped by stage and reason): its outcome, reason, the scores the run has for it and its URL, above the
page text in a short scrolling box. Then the LLM and classifier score distributions, what another threshold
would keep, topics, rewrites, the training mix, and one page's path through every stage.

Set `CURATE_RUN_DIR` to a run's output folder (default: the demo's `runs/demo`). Counts are exact (from
`report.json`); cards, tables and plots use a seeded sample of whole files (`MAX_ROWS` rows per dataset),
and page texts are read only for the documents shown (`SAMPLE_PER_REASON` per reason, or
`$CURATE_SAMPLE_PER_REASON`). Everything taken from a page (text, URL, reason detail) is shown HTML-escaped:
pages contain scripts and markup, and none of it may run or render here. URLs are links you can open in a
new tab; the notebook never loads them.""")
code("""import os
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import HTML, display

from pipeline.inspect import (conservation_lines, counts_table, default_explain_query, explain_section_html,
                              group_counts, keep_rate, load_run, render_cards, render_html, render_rewrite_cards,
                              sample_decisions)

# Jupyter starts in notebooks/; the demo writes runs/demo at the repository root.
REPO = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
RUN_DIR = Path(os.environ.get("CURATE_RUN_DIR", "runs/demo"))
if not RUN_DIR.is_absolute() and not RUN_DIR.exists():
    RUN_DIR = REPO / RUN_DIR
SAMPLE_PER_REASON = int(os.environ.get("CURATE_SAMPLE_PER_REASON", "3"))   # documents shown per reason
SEED = 0
TEXT_CHARS = 4000       # characters of page text per card (the box scrolls; the rest is counted, not shown)
MAX_ROWS = 200_000      # rows read per dataset (decisions per stage, scores, synthetic)
%matplotlib inline
view = load_run(RUN_DIR, max_rows=MAX_ROWS, seed=SEED)
print("run:", view.root.resolve())""")
md("## Counts per stage and reason, and the conservation check")
code("""counts = counts_table(view)
display(counts)
for line in conservation_lines(view):
    print(line)""")
code("""fig, ax = plt.subplots(figsize=(8, max(2.5, 0.28 * len(counts))))
labels = [f"{r.stage}: {r.outcome} {r.reason}".strip() for r in counts.itertuples()]
ax.barh(labels, counts["count"], color=["tab:green" if o == "kept" else "tab:red" if o == "errored" else "tab:gray"
                                       for o in counts.outcome])
ax.invert_yaxis(); ax.set_xscale("log")
ax.set_xlabel("records (log scale)"); ax.set_title("decisions per stage and reason")
plt.tight_layout(); plt.show()""")
md("""## A stratified random sample of documents per decision and reason

One card per document: the header says what happened to it (stage, outcome, reason and its detail), the
scores the run has for it (classifier quality probability against the threshold, LLM score, topics, language,
dedup cluster, the rule values extract computed) and its URL; the page text is underneath, in a box that
scrolls. A record extract got no text from (not a page, not HTML, an error, another language) has none to
show: its card says so.""")
code("""sample = sample_decisions(view, per_group=SAMPLE_PER_REASON, seed=SEED)
display(HTML(render_cards(sample, group_counts(view), view.threshold, max_chars=TEXT_CHARS)))""")
md("## Quality scores: the LLM teacher and the distilled classifier")
code("""fig, axes = plt.subplots(1, 3, figsize=(14, 3.5))
if not view.labels.empty:
    view.labels.quality_score.dropna().astype(int).value_counts().sort_index().plot.bar(ax=axes[0])
axes[0].set_title("LLM quality score (0-5)"); axes[0].set_xlabel("score")
if not view.scores.empty:
    axes[1].hist(view.scores.quality_prob.dropna(), bins=20, range=(0, 1))
    if view.threshold is not None:
        axes[1].axvline(view.threshold, color="red", linestyle="--", label=f"threshold {view.threshold:.2f}")
        axes[1].legend()
axes[1].set_title("fastText quality probability (all documents)")
joined = view.labels.merge(view.scores, on="doc_id") if not (view.labels.empty or view.scores.empty) else pd.DataFrame()
if not joined.empty:
    axes[2].scatter(joined.quality_score, joined.quality_prob, alpha=0.5)
axes[2].set_xlabel("LLM score"); axes[2].set_ylabel("fastText probability"); axes[2].set_title("labelled sample")
plt.tight_layout(); plt.show()""")
code("""# What would another threshold keep? Documents, tokens and the held-out teacher labels' precision/recall,
# exact over every stored score (classify's threshold table; no re-inference: `curate classify --threshold T`,
# `--target-tokens N` or `--target-keep-rate R` re-decides the corpus).
from pipeline.classify import stored_threshold_table

stored = stored_threshold_table(view.root)
if stored is not None:
    what_if = pd.DataFrame(stored["rows"])[["threshold", "keep_rate", "kept_docs", "kept_tokens", "precision",
                                            "recall", "chosen"]]
    display(what_if)
    print("chosen by:", stored["reason"])
    print("kept tokens:", stored["tokens"])
    print("precision/recall:", stored["heldout"])
else:  # classify has not finished here (or ran before the table existed): keep rates of the sampled scores
    thresholds = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    what_if = pd.DataFrame({"threshold": thresholds, "keep_rate": [keep_rate(view, t) for t in thresholds],
                            "kept_tokens": [None] * len(thresholds)})
    display(what_if)
    print("kept tokens: run `curate classify --out RUN --threshold T` once to get classify's threshold table")
print("chosen threshold:", view.threshold)""")
md("## Topics of kept vs dropped documents")
code("""if not view.scores.empty and view.threshold is not None:
    top = view.scores.assign(topic=view.scores.topics.map(lambda t: t[0] if t is not None and len(t) else "(none)"),
                             kept=view.scores.quality_prob >= view.threshold)
    table = top.groupby(["topic", "kept"]).size().unstack(fill_value=0)
    display(table)
    table.plot.barh(figsize=(8, max(2.5, 0.3 * len(table))), title="documents per top topic: kept vs dropped")
    plt.tight_layout(); plt.show()
else:
    print("no classifier scores in this run")""")
md("## Original vs rewritten text")
code("""if not view.synthetic.empty:
    pairs = view.synthetic.sample(n=min(3, len(view.synthetic)), random_state=SEED)
    originals = view.texts(pairs.doc_id)[["doc_id", "text"]].rename(columns={"text": "original"})
    pairs = pairs.merge(originals, on="doc_id", how="left")
    display(HTML(render_rewrite_cards(pairs.rename(columns={"text": "rewrite"}), max_chars=TEXT_CHARS)))
else:
    print("no rewrite passed the output checks in this run")
rejected = view.decisions[view.decisions.stage == "rewrite"] if not view.decisions.empty else pd.DataFrame()
if not rejected.empty:
    print("rewrites rejected, by reason:")
    display(rejected.groupby("reason").size().rename("units").to_frame())
    display(HTML(render_html(rejected.head(5), ["doc_id", "reason", "detail"], max_chars=300)))""")
md("""## The training mix

What `curate mix` made of the corpus (mix/, when the run has one): per group, its tokens before (one copy of
every document) and after (in the mix, copies included), its share of the budget, and whether it was cut (best
first, by quality_prob) or repeated (up to `mix.max_epochs`; a group held at that cap gives what it still lacks
to the others).""")
code("""from pipeline.inspect import mix_view

mix = mix_view(view.root)
if mix is None:
    print("no mix in this run: `curate mix --out RUN --target-tokens N` makes one (or mix.target_tokens in the "
          "config)")
else:
    groups, totals = mix
    print(f"mix: {totals['tokens']:,} tokens for a budget of {totals['target_tokens']:,} "
          f"({totals['off_target']:+.2%}), {totals['rows']:,} rows of {totals['documents']:,} documents, "
          f"by {' x '.join(totals['group_by'])}, tokenizer {totals['tokenizer']}")
    if totals["note"]:
        print("NOTE:", totals["note"])
    print("cut:", ", ".join(groups[groups.cut].group) or "none")
    print("repeated:", ", ".join(groups[groups.repeated].group) or "none",
          "| at the repeat cap:", ", ".join(groups[groups.at_repeat_cap].group) or "none")
    display(groups)
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.45 * len(groups))))
    at = range(len(groups))
    ax.barh([i - 0.2 for i in at], groups.tokens_before, height=0.4, color="tab:gray", label="before")
    ax.barh([i + 0.2 for i in at], groups.tokens_after, height=0.4, color="tab:blue", label="after (in the mix)")
    ax.set_yticks(list(at), groups.group); ax.invert_yaxis(); ax.legend()
    ax.set_xlabel("tokens"); ax.set_title("tokens per group, before and after the mix")
    plt.tight_layout(); plt.show()""")
md("""## Explain one page

One page's path through every stage: what extract, dedup, the labels, the classifier and rewrite did with it
and why (`pipeline.explain`). Set `EXPLAIN_URL` to a page's URL (or doc_id) to follow another page; by
default it is the first sampled kept page.""")
code("""EXPLAIN_URL = os.environ.get("CURATE_EXPLAIN_URL")   # None: the first sampled kept page
try:
    from pipeline.explain import explain, render_html as render_explanation
except ModuleNotFoundError as exc:
    if exc.name not in ("pipeline.explain",):
        raise
    print("pipeline.explain is not in this checkout yet: update the project to follow one page through the stages")
else:
    query = EXPLAIN_URL or default_explain_query(sample)
    if query is None:
        print("no kept page in the sample: set EXPLAIN_URL to a page's URL or doc_id")
    else:
        display(HTML(explain_section_html(render_explanation(explain(RUN_DIR, query)), query)))""")
for i, cell in enumerate(cells):  # fixed ids: regenerating an unchanged notebook changes no byte
    cell["id"] = f"cell-{i:02d}"
nb["cells"] = cells
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, Path(__file__).with_name("inspect_decisions.ipynb"))
