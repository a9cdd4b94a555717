"""Answer formats of the labelling tasks: the JSON schema a request is constrained to, and the pure parser
that turns the raw answer into a value or an error.

A parser never raises into the pipeline and never invents a value: a malformed, truncated or
out-of-range answer is an `Parsed(error=kind)` with the raw text kept by the caller. The schemas bound
every field (enums, integer ranges, maxLength, maxItems) so that even a random model's constrained output
terminates.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

QUALITY_MIN, QUALITY_MAX = 0, 5
QUALITY_REASON_MAX_CHARS = 120
MAX_TOPICS = 3


@dataclass(frozen=True)
class Parsed:
    """A parsed answer: `value` (the label fields) when valid, else `error` (snake_case kind) + `detail`."""

    value: dict[str, Any] | None = None
    error: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _fail(kind: str, detail: str) -> Parsed:
    return Parsed(error=kind, detail=detail[:500])


def quality_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "reason": {"type": "string", "maxLength": QUALITY_REASON_MAX_CHARS},
            "score": {"type": "integer", "minimum": QUALITY_MIN, "maximum": QUALITY_MAX},
        },
        "required": ["reason", "score"],
        "additionalProperties": False,
    }


def topics_schema(topic_ids: Sequence[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "topics": {"type": "array", "items": {"type": "string", "enum": list(topic_ids)},
                       "minItems": 1, "maxItems": MAX_TOPICS},
        },
        "required": ["topics"],
        "additionalProperties": False,
    }


def parse_json_object(raw: str | None, finish_reason: str | None = None,
                      fields: Sequence[str] = ()) -> tuple[dict[str, Any] | None, Parsed | None]:
    """Common first step: (object, None) when `raw` is one JSON object with exactly `fields`, else (None, error)."""
    if raw is None or not raw.strip():
        return None, _fail("empty_answer", f"finish_reason={finish_reason}")
    if finish_reason == "length":
        return None, _fail("truncated_answer", "the answer hit max_tokens before it was complete")
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, _fail("invalid_json", f"{exc.msg} at char {exc.pos}")
    if not isinstance(obj, dict):
        return None, _fail("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    missing = [f for f in fields if f not in obj]
    if missing:
        return None, _fail("missing_field", f"missing {', '.join(missing)}")
    extra = sorted(set(obj) - set(fields))
    if fields and extra:
        return None, _fail("unexpected_field", f"unexpected {', '.join(extra)}")
    return obj, None


def parse_quality(raw: str | None, finish_reason: str | None = None) -> Parsed:
    """`{"reason": str <= 120 chars, "score": int 0..5}` -> {"quality_score", "quality_reason"}."""
    obj, error = parse_json_object(raw, finish_reason, ("reason", "score"))
    if error:
        return error
    score, reason = obj["score"], obj["reason"]
    # bool is an int subclass in Python; JSON `true` is not a score.
    if not isinstance(score, int) or isinstance(score, bool):
        return _fail("wrong_type", f"score must be an integer, got {score!r}")
    if not QUALITY_MIN <= score <= QUALITY_MAX:
        return _fail("score_out_of_range", f"score {score} not in {QUALITY_MIN}..{QUALITY_MAX}")
    if not isinstance(reason, str):
        return _fail("wrong_type", f"reason must be a string, got {type(reason).__name__}")
    if len(reason) > QUALITY_REASON_MAX_CHARS:
        return _fail("reason_too_long", f"reason has {len(reason)} characters (at most {QUALITY_REASON_MAX_CHARS})")
    return Parsed(value={"quality_score": score, "quality_reason": reason})


def parse_topics(raw: str | None, topic_ids: Sequence[str], finish_reason: str | None = None) -> Parsed:
    """`{"topics": [1..3 ids from the taxonomy]}` -> {"topics": [...]} (order kept, repeats removed)."""
    obj, error = parse_json_object(raw, finish_reason, ("topics",))
    if error:
        return error
    topics = obj["topics"]
    if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
        return _fail("wrong_type", f"topics must be a list of strings, got {topics!r}"[:200])
    unknown = [t for t in topics if t not in set(topic_ids)]
    if unknown:
        return _fail("unknown_topic", f"not in the taxonomy: {', '.join(map(repr, unknown))}")
    unique = list(dict.fromkeys(topics))
    if not unique:
        return _fail("no_topics", "empty topic list")
    if len(unique) > MAX_TOPICS:
        return _fail("too_many_topics", f"{len(unique)} topics (at most {MAX_TOPICS})")
    return Parsed(value={"topics": unique})
