"""What `curate explain` says of a page and the mix: whether it is in it, in which group, how many times
(and why not: its group's cut, or its weight 0), and where its copies are in the token shards.

The functions take the explain module's run reader (`pipeline.explain.RunReader`: `layout`, `dataset(name)` with
`find`) and its step factory, so this module imports nothing of `pipeline.explain`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pipeline.mix.groups import LABEL_COLUMNS, group_of

MIX_COLUMNS = ["doc_id", "synthetic_id", "source", "group", "repeat", "position"]
TOKEN_COLUMNS = ["doc_id", "synthetic_id", "repeat", "position", "file", "offset", "length", "stream_offset"]


def _manifest(reader, dataset: str) -> dict[str, Any] | None:
    path = reader.layout.dataset(dataset) / "_manifest.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def mix_step(reader, doc_id: str, make: Callable[..., Any]) -> Any:
    """The page in the mix: `sampled` (in it: group, copies, files) or `not_sampled` (not in it, and why);
    None when the run has no mix."""
    manifest = _manifest(reader, "mix")
    if manifest is None:
        return None
    rows = reader.dataset("mix").find("doc_id", [doc_id], MIX_COLUMNS)
    own = sorted((r for r in rows if r.get("source") != "synthetic"), key=lambda r: r["repeat"])
    rewrites = [r for r in rows if r.get("source") == "synthetic"]
    extra = (f"; and {len(rewrites)} row(s) of its rewrites ({', '.join(sorted({r['group'] for r in rewrites}))})"
             if rewrites else "")
    if own:
        group = own[0]["group"]
        facts = manifest["groups"].get(group, {})
        files = sorted({f"mix/{r['_file']}" for r in own})
        return make("mix", "sampled",
                    f"in the mix: group {group}, {len(own)} time(s) (rows {', '.join(str(r['position']) for r in own)} "
                    f"of {manifest['rows']:,}, in {', '.join(files)}); the group was {facts.get('what_happened', '?')}"
                    + extra,
                    {"in_mix": True, "group": group, "copies": len(own), "rows": [r["position"] for r in own],
                     "files": files, "group_facts": facts, "rewrite_rows": len(rewrites)})
    corpus = reader.dataset("corpus").find("doc_id", [doc_id], ["doc_id", *LABEL_COLUMNS.values()])
    if not corpus:
        return make("mix", "not_sampled", "not in the mix (not in corpus/)" + extra,
                    {"in_mix": False, "rewrite_rows": len(rewrites)})
    row = corpus[0]
    group = group_of(row, manifest["grouping"])
    facts = manifest["groups"].get(group)
    if facts is None:
        why = f"its group {group} is not in the mix (the mix was made from another corpus)"
    elif facts["action"] == "left out":
        why = f"its group {group} has weight 0"
    else:
        prob = row.get("quality_prob")
        shown = f"{prob:.4f}" if isinstance(prob, float) else "none"
        why = (f"its group {group} was {facts['what_happened']}, and its quality_prob {shown} ranks below the "
               f"cut")
    return make("mix", "not_sampled", f"not in the mix: {why}" + extra,
                {"in_mix": False, "group": group, "group_facts": facts or {}, "rewrite_rows": len(rewrites)})


def tokens_step(reader, doc_id: str, make: Callable[..., Any]) -> Any:
    """Where the page's copies are in the token shards (tokens/), or None when it has none there."""
    if _manifest(reader, "tokens") is None:
        return None
    rows = sorted(reader.dataset("tokens").find("doc_id", [doc_id], TOKEN_COLUMNS), key=lambda r: r["position"])
    if not rows:
        return None
    places = [f"tokens/{r['file']} [{r['offset']}, {r['offset'] + r['length']})" for r in rows]
    return make("tokenize", "sampled", f"{len(rows)} copy(ies) in the token shards: {'; '.join(places)}",
                {"token_places": [{k: r[k] for k in TOKEN_COLUMNS if k in r} for r in rows]})
