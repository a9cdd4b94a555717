"""From a corpus to training shards: the mix (`curate mix`: groups, budget, weights, repeats, a seeded order)
and its tokens (`curate tokenize`: datatrove or Megatron shards with a document index). docs/mix.md.

- `allocate`: the allocation of a token budget over groups (pure).
- `groups`: a document's group from its labels.
- `tokenizer`: the target tokenizer, its fingerprint and end-of-document token.
- `stage`: `MixStage` (token counts per file, then mix/ in finish).
- `tokenize`: `TokenizeStage` (one token shard per mix/ file), the formats' writers, `trace_window`.
"""
