"""Every Arrow schema the pipeline writes, in one place.

No dataset's schema is inferred from its first row: writers cast to these, so an empty shard, a shard whose
first document lacks a field, and a shard written by another worker all read back as the same table.
"""

from __future__ import annotations

import pyarrow as pa

# Outcomes a record can end in. Every record read by a stage ends in exactly one.
KEPT = "kept"
DROPPED = "dropped"
ERRORED = "errored"

# Heuristic rule scores written by extract (see pipeline.rules). Null when rules were not applied to the
# document's language.
RULE_SCORE_FIELDS = [
    pa.field("n_words", pa.int32()),
    pa.field("mean_word_length", pa.float32()),
    pa.field("alpha_word_ratio", pa.float32()),
    pa.field("stop_word_count", pa.int32()),
    pa.field("symbol_word_ratio", pa.float32()),
    pa.field("dup_line_char_frac", pa.float32()),
    pa.field("top_2gram_char_frac", pa.float32()),
    pa.field("line_punct_ratio", pa.float32()),
    pa.field("short_line_ratio", pa.float32()),
    # names of every enabled rule the document fails (empty when it passes all of them)
    pa.field("rule_failures", pa.list_(pa.string())),
]

DOCS = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("warc_path", pa.string()),
        pa.field("warc_record_id", pa.string()),
        pa.field("crawl_date", pa.string()),
        pa.field("text", pa.string()),
        pa.field("language", pa.string()),
        pa.field("language_score", pa.float32()),
        pa.field("n_chars", pa.int32()),
        *RULE_SCORE_FIELDS,
    ]
)

# Every rule's metric as extract measured it (pipeline.rules): the quantities datatrove's Gopher quality,
# Gopher repetition, C4 and FineWeb filters compare to their thresholds (pipeline.config.RulesConfig names
# each threshold after its metric). Ratios are float64, as the filters compute them, so the rules stage's
# comparisons give the filters' verdicts exactly. Null where the rules were not applied to the page's
# language (`rules_applied` false) or where a metric is undefined (no words: datatrove's NaN, which passes).
RULE_METRIC_FIELDS = [
    # Gopher quality
    pa.field("n_words", pa.int32()),  # words with a non-punctuation character
    pa.field("mean_word_length", pa.float64()),  # of those words
    pa.field("hash_word_ratio", pa.float64()),  # '#' per word
    pa.field("ellipsis_word_ratio", pa.float64()),  # '...' and '…' per word
    pa.field("bullet_line_ratio", pa.float64()),
    pa.field("end_ellipsis_line_ratio", pa.float64()),
    pa.field("alpha_word_ratio", pa.float64()),
    pa.field("stop_word_count", pa.int32()),  # distinct stop words present
    # Gopher repetition
    pa.field("dup_para_frac", pa.float64()),
    pa.field("dup_para_char_frac", pa.float64()),
    pa.field("dup_line_frac", pa.float64()),
    pa.field("dup_line_char_frac", pa.float64()),
    *[pa.field(f"top_{n}gram_char_frac", pa.float64()) for n in (2, 3, 4)],
    *[pa.field(f"dup_{n}gram_char_frac", pa.float64()) for n in range(5, 11)],
    # C4 quality: sentences in the lines C4 keeps; the first such line (1-based) with "lorem ipsum" / "{"
    pa.field("n_sentences", pa.int32()),
    pa.field("lorem_ipsum_line", pa.int32()),
    pa.field("curly_bracket_line", pa.int32()),
    # FineWeb quality
    pa.field("line_punct_ratio", pa.float64()),
    pa.field("short_line_ratio", pa.float64()),
    pa.field("char_dup_ratio", pa.float64()),
    pa.field("list_ratio", pa.float64()),  # newlines per word
]

# extracted/ (extract's output): every page that got text and passed the checks before the rules (language
# etc.), with every rule metric. The rules stage decides from it, into docs/ (the kept pages, DOCS) and
# decisions/rules/, so other thresholds re-decide without reading a WARC file again.
EXTRACTED = pa.schema(
    [field for field in DOCS if field.name not in {f.name for f in RULE_SCORE_FIELDS}]
    + [pa.field("rules_applied", pa.bool_())]  # false: the rules were not applied to this page's language
    + RULE_METRIC_FIELDS
)

# unique/ = docs/ plus what dedup learned about each survivor.
UNIQUE = pa.schema(
    list(DOCS)
    + [
        pa.field("dup_cluster_id", pa.string()),
        pa.field("dup_cluster_size", pa.int32()),
        pa.field("lines_removed", pa.int32()),
    ]
)

DECISIONS = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("outcome", pa.string(), nullable=False),  # dropped | errored
        pa.field("reason", pa.string(), nullable=False),  # short snake_case
        pa.field("detail", pa.string()),  # free text: the file, the exception, the failing value
        pa.field("url", pa.string()),
        pa.field("source", pa.string()),  # the input unit (WARC path, shard) the record came from
        pa.field("duplicate_of", pa.string()),  # dedup: the survivor's doc_id
    ]
)

LABELS = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),  # labels (one combined answer) | quality | topics
        pa.field("prompt_id", pa.string()),
        pa.field("prompt_hash", pa.string()),
        pa.field("model", pa.string()),
        pa.field("sampling_params", pa.string()),  # canonical JSON
        pa.field("quality_score", pa.int8()),
        pa.field("quality_reason", pa.string()),
        pa.field("topics", pa.list_(pa.string())),
        pa.field("format", pa.list_(pa.string())),  # 1-2 WebOrganizer format ids (labels rows)
        # p(score = 0..5) from the score token's logprobs, and sum k * p(k); null: sampled score only
        pa.field("quality_probs", pa.list_(pa.float32())),
        pa.field("quality_expected", pa.float32()),
        # a valid answer whose topic/format lists had invalid entries: `kind: detail` of what was left out
        pa.field("field_errors", pa.list_(pa.string())),
        pa.field("raw_text", pa.string()),
        pa.field("latency_s", pa.float32()),
        pa.field("prompt_tokens", pa.int32()),
        pa.field("completion_tokens", pa.int32()),
        pa.field("cached", pa.bool_()),
        pa.field("error", pa.string()),  # null when the answer was valid; else annotation_error kind
        pa.field("error_detail", pa.string()),
    ]
)

# classify: unique/ plus the distilled classifier's scores. corpus/ holds the kept rows of this schema.
# safe/ (the safety stage) = unique/ with personal data redacted and benchmark text removed: the counts of
# redacted spans per type and their places (type and character offsets in the text before redaction; never
# the values), and how many contaminated spans were cut (decontam.mode: cut).
PII_SPAN = pa.struct([pa.field("type", pa.string()), pa.field("start", pa.int32()), pa.field("end", pa.int32())])
SAFETY_FIELDS = [
    pa.field("pii_email", pa.int32()),
    pa.field("pii_ip", pa.int32()),
    pa.field("pii_phone", pa.int32()),
    pa.field("pii_spans", pa.list_(PII_SPAN)),
    pa.field("decontam_cut", pa.int32()),
]
SAFE = pa.schema(list(UNIQUE) + SAFETY_FIELDS)

SCORED = pa.schema(
    list(SAFE)
    + [
        pa.field("quality_prob", pa.float32()),
        pa.field("topics", pa.list_(pa.string())),
        pa.field("topic_probs", pa.list_(pa.float32())),
        pa.field("format", pa.list_(pa.string())),  # WebOrganizer format ids, most probable first
        pa.field("format_probs", pa.list_(pa.float32())),
    ]
)

# rewrite: one row per (source document, style) whose rewrite passed every check; `doc_id` is the source's.
SYNTHETIC = pa.schema(
    [
        pa.field("synthetic_id", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("style", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string()),
        pa.field("prompt_hash", pa.string()),
        pa.field("model", pa.string()),
        pa.field("sampling_params", pa.string()),
        pa.field("n_chunks", pa.int32()),
        pa.field("text", pa.string()),
        pa.field("language", pa.string()),  # the source's, which the rewrite was checked to match
        pa.field("quality_prob", pa.float32()),  # the source's score that routed it to this style
        pa.field("source_tokens", pa.int32()),  # the source chunks' tokens (see rewrite.tokenizer)
        pa.field("prompt_tokens", pa.int32()),  # summed over the chunks' requests, as the server counted
        pa.field("completion_tokens", pa.int32()),
        # the scores the rewrite was kept on (pipeline.rewrite.checks.check_scores, docs/rewrite.md#scores):
        pa.field("rewrite_quality_prob", pa.float32()),  # the quality classifier on the rewrite; null: no classifier
        pa.field("faithfulness", pa.float32()),  # to the source chunks, in [0, 1] (pipeline.rewrite.faithfulness)
        pa.field("kept_content_frac", pa.float32()),  # share of the source's content words/numbers/names kept
        pa.field("invented_frac", pa.float32()),  # share of the rewrite's numbers and names not in the source
    ]
)


def empty(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()


def from_rows(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Build a table from row dicts with an explicit schema (missing keys become null)."""
    if not rows:
        return schema.empty_table()
    return pa.Table.from_pylist([{name: row.get(name) for name in schema.names} for row in rows], schema=schema)
