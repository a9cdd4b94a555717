"""The schemas of the mix's datasets: token counts (mix_tokens/), the mix (mix/), the token index (tokens/)."""

from __future__ import annotations

import pyarrow as pa

# mix_tokens/<source>-<file>.parquet: every document's tokens in the target tokenizer, in its file's row order,
# counted once per tokenizer (the fingerprint is the stage's plan identity): re-mixing never re-tokenizes.
MIX_TOKENS = pa.schema([
    pa.field("id", pa.string(), nullable=False),  # doc_id (corpus) or synthetic_id (synthetic)
    pa.field("n_tokens", pa.int32()),  # the text's tokens, no special token added
])

# mix/part-*.parquet: one row per copy of a chosen document, in the mix's seeded order.
MIX = pa.schema([
    pa.field("position", pa.int64(), nullable=False),  # the row's place in the mix (0, 1, ...)
    pa.field("doc_id", pa.string(), nullable=False),  # the page (for a rewrite: its source page)
    pa.field("synthetic_id", pa.string()),  # the rewrite, for a row from synthetic/; else null
    pa.field("source", pa.string()),  # corpus | synthetic
    pa.field("group", pa.string()),  # its group (mix.group_by)
    pa.field("repeat", pa.int16()),  # 0 for a document's first copy, 1 for its second, ...
    pa.field("n_tokens", pa.int32()),  # the text's tokens; a trainer sees one more (the end-of-document token)
    pa.field("quality_prob", pa.float32()),  # what it was ranked by within its group
    pa.field("url", pa.string()),
    pa.field("text", pa.string()),
])

# tokens/part-*.parquet: the document index beside the token shards: where each row of the mix is in them.
TOKEN_INDEX = pa.schema([
    pa.field("position", pa.int64(), nullable=False),  # the mix/ row
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("synthetic_id", pa.string()),
    pa.field("group", pa.string()),
    pa.field("repeat", pa.int16()),
    pa.field("file", pa.string()),  # the token file, relative to tokens/ (part-00000/part-00000.ds)
    pa.field("offset", pa.int64()),  # its first token's index in that file
    pa.field("length", pa.int32()),  # its tokens, the end-of-document token included
    pa.field("stream_offset", pa.int64()),  # its first token's index in all files one after the other
])
