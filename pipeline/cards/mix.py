"""The cards of the training mix: mix/README.md (the budget, the table of tokens per group before and after,
what happened to each group, the plot `tokens_per_group.svg`, the files) and tokens/README.md (the token
shards, how to read them, the document index). Written by the mix and tokenize stages' `finish` from their
manifests: no timestamps and no paths of this machine, so the same mix gives the same bytes."""

from __future__ import annotations

import html
from typing import Any

import pyarrow as pa
import yaml

BAR_BEFORE = "#9aa5b1"
BAR_AFTER = "#1f6feb"


def mix_card(manifest: dict[str, Any], schema: pa.Schema, plot: str = "tokens_per_group.svg") -> str:
    """mix/README.md from the mix manifest (each group's `what_happened` in words) and the rows' schema."""
    groups, target, total = manifest["groups"], manifest["target_tokens"], manifest["tokens"]
    header = {
        "configs": [{"config_name": "default", "data_files": "part-*.parquet"}],
        "target_tokens": target, "tokens": total, "rows": manifest["rows"], "documents": manifest["documents"],
        "within_1pct": manifest["within_1pct"], "tokenizer": manifest["tokenizer"],
        "grouping": manifest["grouping"], "max_epochs": manifest["max_epochs"],
        "synthetic_share": manifest["synthetic_share"], "seed": manifest["seed"], "files": len(manifest["files"]),
    }
    given = manifest["weights"]["given"]
    if given is None:
        weights = "none: every group keeps its natural share (its share of the corpus's tokens)"
    else:
        default = manifest["weights"]["default_weight"]
        weights = (", ".join(f"`{g}` {w:g}" for g, w in given.items())
                   + ("; the groups not named share what is left in their natural proportions" if default is None
                      else f"; the groups not named: {default:g}")
                   + f" (file sha256 {manifest['weights']['sha256'][:12]})")
    lines = [
        "---", yaml.safe_dump(header, sort_keys=False).rstrip(), "---", "",
        "# Training mix", "",
        f"{total:,} training tokens for a budget of {target:,} ({manifest['off_target']:+.2%}): {manifest['rows']:,} "
        f"rows, {manifest['documents']:,} distinct documents, in a seeded shuffled order (seed {manifest['seed']}). "
        f"Tokens are counted exactly with the tokenizer `{manifest['tokenizer']['name']}` (sha256 "
        f"`{manifest['tokenizer']['sha256'][:12]}`): {manifest['tokens_counted']}.",
        "",
    ]
    if manifest.get("note"):
        lines += [f"**The budget is not met:** {manifest['note']}.", ""]
    lines += [
        f"- Groups: {' x '.join(manifest['grouping']['group_by'])}"
        + (f" (quality buckets at quality_prob {manifest['grouping']['quality_edges']}: "
           f"{', '.join(manifest['grouping']['quality_buckets'])})"
           if "quality_bucket" in manifest["grouping"]["group_by"] else ""),
        f"- Weights: {weights}",
        f"- A group with more tokens than its share is cut best first (by quality_prob); one with fewer is repeated, "
        f"up to {manifest['max_epochs']:g} epochs; what it still lacks then goes to the other groups in proportion "
        "to their shares.",
    ]
    if manifest["synthetic_share"]:
        lines.append(f"- {manifest['synthetic_share']:.0%} of the budget from the synthetic rewrites "
                     "(`synthetic:` groups, grouped by their source page's labels).")
    for why, n in (manifest.get("left_out") or {}).items():
        lines.append(f"- Left out: {n} {why}.")
    lines += [
        "", "## Tokens per group, before and after", "",
        f"![tokens per group, before and after]({plot})", "",
        "| group | documents | tokens before | share | wanted | tokens after | epochs | documents in | what happened |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, group in groups.items():
        lines.append(f"| `{name}` | {group['docs']:,} | {group['available']:,} | {group['share']:.1%} | "
                     f"{group['wanted']:,} | {group['taken']:,} | {group['epochs']:.2f} | {group['docs_taken']:,} | "
                     f"{group['what_happened']} |")
    before = sum(g["available"] for g in groups.values())
    lines.append(f"| **all** | {sum(g['docs'] for g in groups.values()):,} | {before:,} | 100% | {target:,} | "
                 f"{total:,} | {total / before if before else 0:.2f} | {manifest['documents']:,} | |")
    lines += ["", "*before*: one copy of every document of the group; *wanted*: its share of the budget; "
              "*after*: in the mix, copies included.", "", "## Files", "",
              "| file | rows | tokens | bytes | sha256 |", "|---|---:|---:|---:|---|"]
    for f in manifest["files"]:
        lines.append(f"| `{f['file']}` | {f['rows']:,} | {f['tokens']:,} | {f['bytes']:,} | `{f['sha256'][:16]}` |")
    lines += ["", "## Schema", "", "| column | type |", "|---|---|"]
    lines += [f"| `{f.name}` | `{f.type}` |" for f in schema]
    lines += ["", "`curate tokenize --out RUN` writes these rows as token ids for training (tokens/); `curate explain "
              "URL --out RUN` says whether a page is in the mix, in which group and how many times.", ""]
    return "\n".join(lines)


def tokens_plot(manifest: dict[str, Any], width: int = 720) -> str:
    """A horizontal bar chart (SVG, no dependency, no timestamp): tokens per group before and after."""
    groups = manifest["groups"]
    names = list(groups)
    label_w, row_h, top, pad = min(260, 12 + 7 * max([len(n) for n in names] + [5])), 34, 40, 10
    chart_w = width - label_w - 110
    peak = max([1, *(max(g["available"], g["taken"]) for g in groups.values())])
    height = top + row_h * len(names) + 30
    esc = html.escape
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
             f"viewBox='0 0 {width} {height}' font-family='sans-serif' font-size='12'>",
             f"<rect width='{width}' height='{height}' fill='white'/>",
             f"<text x='{pad}' y='18' font-size='14' font-weight='bold'>Tokens per group: before (one copy of each "
             f"document) and after (in the mix)</text>",
             f"<rect x='{label_w}' y='26' width='10' height='10' fill='{BAR_BEFORE}'/>"
             f"<text x='{label_w + 14}' y='35'>before</text>",
             f"<rect x='{label_w + 70}' y='26' width='10' height='10' fill='{BAR_AFTER}'/>"
             f"<text x='{label_w + 84}' y='35'>after</text>"]
    for i, name in enumerate(names):
        group = groups[name]
        y = top + i * row_h
        parts.append(f"<text x='{label_w - 6}' y='{y + 18}' text-anchor='end'>{esc(name)}</text>")
        for j, (value, colour) in enumerate(((group["available"], BAR_BEFORE), (group["taken"], BAR_AFTER))):
            bar = round(chart_w * value / peak, 1)
            parts.append(f"<rect x='{label_w}' y='{y + 4 + j * 13}' width='{bar}' height='12' fill='{colour}'/>")
            parts.append(f"<text x='{label_w + bar + 4}' y='{y + 14 + j * 13}' font-size='10'>{value:,}</text>")
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def tokens_card(manifest: dict[str, Any], schema: pa.Schema) -> str:
    """tokens/README.md: what the shards hold and how a trainer reads them."""
    header = {"format": manifest["format"], "tokens": manifest["tokens"], "documents": manifest["documents"],
              "files": len(manifest["files"]), "tokenizer": manifest["tokenizer"], "eos": manifest["eos"],
              "dtype": manifest["dtype"], "mix_fingerprint": manifest["mix_fingerprint"]}
    if manifest["format"] == "datatrove":
        reading = [
            "Datatrove's tokenized-file format: per shard `part-NNNNN/part-NNNNN.ds` (the token ids, "
            f"{manifest['dtype']} little-endian), `.ds.index` (uint64 end offset of every document) and "
            "`.ds.metadata`.",
            "Read with datatrove's own reader (one folder per shard, so the glob reaches into them; or the paths "
            "file, which lists the shards in mix order):", "", "```python",
            "from datatrove.utils.dataset import DatatroveFolderDataset", "",
            f"data = DatatroveFolderDataset(\"RUN/tokens\", seq_len=2048, filename_pattern=\"**/*.ds\", "
            f"token_size={manifest['token_size']})",
            "# or: DatatroveFolderDataset(\"RUN/tokens\", seq_len=2048, "
            f"paths_file=\"RUN/tokens/datatrove_paths.json\", "
            f"token_size={manifest['token_size']})",
            "data[0][\"input_ids\"]  # seq_len + 1 token ids", "```"]
    else:
        reading = [
            "Megatron's indexed-dataset format: per shard `part-NNNNN/part-NNNNN.bin` (the token ids, "
            f"{manifest['dtype']}) and `.idx` (one sequence per document, its length and byte offset). Read with "
            "Megatron-Core's reader, or list the prefixes in a blend (`--data-path`):", "", "```python",
            "from megatron.core.datasets.indexed_dataset import IndexedDataset", "",
            "shard = IndexedDataset(\"RUN/tokens/part-00000/part-00000\")", "shard[0]  # the first document's ids",
            "```"]
    lines = ["---", yaml.safe_dump(header, sort_keys=False).rstrip(), "---", "", "# Training tokens", "",
             f"{manifest['tokens']:,} tokens of {manifest['documents']:,} documents (the rows of mix/, in its order), "
             f"tokenized with `{manifest['tokenizer']['name']}`; `{manifest['eos']['token']}` (id "
             f"{manifest['eos']['id']}) after every document. The total equals mix/_manifest.json's.", "",
             *reading, "",
             "## Document index", "",
             "`part-NNNNN.parquet` beside each shard's folder: one row per document of the shard, with its place in "
             "the shard. A window of tokens a trainer sees (file, first and last token) is the rows whose "
             "`[offset, offset + length)` overlap it; their doc_id leads to the page (`curate explain DOC_ID --out "
             "RUN`). `pipeline.mix.tokenize.trace_window` does this for a `DatatroveFolderDataset` item.", "",
             "| column | type |", "|---|---|", *[f"| `{f.name}` | `{f.type}` |" for f in schema], "",
             "## Files", "", "| shard | documents | tokens | bytes | sha256 of the token file |",
             "|---|---:|---:|---:|---|"]
    for f in manifest["files"]:
        lines.append(f"| `{f['file']}` | {f['documents']:,} | {f['tokens']:,} | {f['bytes']:,} | "
                     f"`{f['sha256'][:16]}` |")
    return "\n".join(lines) + "\n"
