"""Answer formats of the labelling tasks: the JSON schema a request is constrained to, and the pure parser
that turns the raw answer into a value or an error.

A parser never raises into the pipeline and never invents a value: a malformed, truncated or
out-of-range answer is an `Parsed(error=kind)` with the raw text kept by the caller. The schemas bound
every field (enums, integer ranges, maxLength, maxItems) so that even a random model's constrained output
terminates.

The combined `labels` answer (one request per page: reason, score, topics, format) is strict about its
structure and its score (anything else is an error, like quality's), but lenient inside its two id lists:
a valid score with an unknown topic or too many formats keeps the valid ids and records the rest in
`field_errors`. The score's probabilities come from the answer's logprobs (`value_logprobs` picks the top
alternatives at the token where the score digit is generated; `score_distribution` renormalises them over
the allowed digits); a missing distribution means "sampled score only", never an error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

QUALITY_MIN, QUALITY_MAX = 0, 5
QUALITY_REASON_MAX_CHARS = 120
MAX_TOPICS = 3
MAX_FORMATS = 2
LABELS_FIELDS = ("reason", "score", "topics", "format")
_DIGITS = "0123456789"
# vLLM reports the tokens the grammar masks out (logprob -inf) as -9999.0: not alternatives, not kept
MASKED_LOGPROB = -9999.0


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


def labels_schema(topic_ids: Sequence[str], format_ids: Sequence[str]) -> dict[str, Any]:
    """One answer with every label: "reason" then "score" (the quality rubric: the justification is generated
    before the score), then 1-3 "topics" and 1-2 "format" ids. Property order is generation order."""
    return {
        "type": "object",
        "properties": {
            "reason": {"type": "string", "maxLength": QUALITY_REASON_MAX_CHARS},
            "score": {"type": "integer", "minimum": QUALITY_MIN, "maximum": QUALITY_MAX},
            "topics": {"type": "array", "items": {"type": "string", "enum": list(topic_ids)},
                       "minItems": 1, "maxItems": MAX_TOPICS},
            "format": {"type": "array", "items": {"type": "string", "enum": list(format_ids)},
                       "minItems": 1, "maxItems": MAX_FORMATS},
        },
        "required": list(LABELS_FIELDS),
        "additionalProperties": False,
    }


def integer_fields(schema: dict[str, Any] | None) -> list[str]:
    """Top-level integer properties of an answer schema (those whose value distribution is worth keeping)."""
    properties = (schema or {}).get("properties") or {}
    return [name for name, prop in properties.items() if isinstance(prop, dict) and prop.get("type") == "integer"]


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


def _check_score(obj: dict[str, Any]) -> Parsed:
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


def parse_quality(raw: str | None, finish_reason: str | None = None) -> Parsed:
    """`{"reason": str <= 120 chars, "score": int 0..5}` -> {"quality_score", "quality_reason"}."""
    obj, error = parse_json_object(raw, finish_reason, ("reason", "score"))
    if error:
        return error
    return _check_score(obj)


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


def _valid_ids(value: Any, allowed: Sequence[str], noun: str, plural: str, max_items: int,
               problems: list[str]) -> list[str] | None:
    """The ids of `value` that are in `allowed` (order kept, repeats removed, at most `max_items`), each
    problem appended to `problems` as `kind: detail`; None when no valid id is left."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"wrong_type: {plural} must be a list of strings, got {value!r}"[:200])
        return None
    known = set(allowed)
    unknown = [v for v in value if v not in known]
    if unknown:
        problems.append(f"unknown_{noun}: not in the taxonomy: {', '.join(map(repr, unknown))}"[:200])
    kept = list(dict.fromkeys(v for v in value if v in known))
    if len(kept) > max_items:
        problems.append(f"too_many_{plural}: {len(kept)} (at most {max_items}; the first {max_items} kept)")
        kept = kept[:max_items]
    if not kept:
        if not unknown:
            problems.append(f"no_{plural}: empty {noun} list")
        return None
    return kept


def parse_labels(raw: str | None, topic_ids: Sequence[str], format_ids: Sequence[str],
                 finish_reason: str | None = None) -> Parsed:
    """The combined answer `{"reason", "score", "topics", "format"}` -> {"quality_score", "quality_reason",
    "topics", "format", "field_errors"}. Malformed, truncated or with a missing, extra or invalid score/reason
    field: an error. Topic and format lists keep their valid ids; what was wrong with them is listed in
    `field_errors` (None when nothing was), and a list with no valid id left is None."""
    obj, error = parse_json_object(raw, finish_reason, LABELS_FIELDS)
    if error:
        return error
    parsed = _check_score(obj)
    if not parsed.ok:
        return parsed
    problems: list[str] = []
    topics = _valid_ids(obj["topics"], topic_ids, "topic", "topics", MAX_TOPICS, problems)
    formats = _valid_ids(obj["format"], format_ids, "format", "formats", MAX_FORMATS, problems)
    return Parsed(value={**parsed.value, "topics": topics, "format": formats, "field_errors": problems or None})


# ----------------------------------------------------------------------------------- score probabilities
def _string_end(text: str, start: int) -> int:
    """Index just after the JSON string that opens at `start` (a quote), or -1 when it never closes."""
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == '"':
            return i + 1
        else:
            i += 1
    return -1


def value_offsets(text: str) -> dict[str, int]:
    """Character offset where the value of each top-level key of the JSON object `text` begins (keys inside
    strings or nested values are not keys). Works on a truncated text too, for the keys it reached."""
    offsets: dict[str, int] = {}
    depth, i, expecting_key = 0, 0, False
    while i < len(text):
        char = text[i]
        if char == '"':
            end = _string_end(text, i)
            if end < 0:
                break
            if depth == 1 and expecting_key:
                try:
                    key = json.loads(text[i:end])
                except json.JSONDecodeError:
                    break
                j = end
                while j < len(text) and text[j] in " \t\r\n":
                    j += 1
                if j < len(text) and text[j] == ":":
                    j += 1
                    while j < len(text) and text[j] in " \t\r\n":
                        j += 1
                    offsets.setdefault(key, j)
                expecting_key = False
                i = j
                continue
            i = end
            continue
        if char in "{[":
            depth += 1
            expecting_key = char == "{" and depth == 1
        elif char in "}]":
            depth -= 1
        elif char == "," and depth == 1:
            expecting_key = True
        i += 1
    return offsets


def _token_bytes(token: dict[str, Any]) -> bytes:
    raw = token.get("bytes")
    if isinstance(raw, list):
        return bytes(raw)
    return str(token.get("token", "")).encode("utf-8")


def _token_text(token: dict[str, Any]) -> str:
    return _token_bytes(token).decode("utf-8", errors="replace")


def value_logprobs(text: str, tokens: Sequence[dict[str, Any]], fields: Sequence[str]) -> dict[str, Any] | None:
    """From an OpenAI-style `choices[0].logprobs.content` (one entry per generated token: token, logprob,
    bytes, top_logprobs), keep only what a value distribution needs: for each of `fields` (top-level keys of
    the JSON answer `text`), the token where its value starts, as {"prefix": the token's text before the
    value, "token", "logprob", "top": [[alternative, logprob], ...]}. None when nothing could be located
    (tokens that do not spell the text, a field not in the answer)."""
    offsets = value_offsets(text)
    wanted = {field: len(text[: offsets[field]].encode("utf-8")) for field in fields if field in offsets}
    if not wanted:
        return None
    encoded = text.encode("utf-8")
    found: dict[str, Any] = {}
    position = 0
    for token in tokens:
        piece = _token_bytes(token)
        if encoded[position : position + len(piece)] != piece:
            return found or None  # the tokens no longer spell the answer: stop rather than guess
        for field, target in wanted.items():
            if field not in found and position <= target < position + len(piece):
                try:
                    prefix = piece[: target - position].decode("utf-8")
                    found[field] = {"prefix": prefix, "token": _token_text(token), "logprob": float(token["logprob"]),
                                    "top": [[_token_text(alt), float(alt["logprob"])]
                                            for alt in token.get("top_logprobs") or []
                                            if float(alt["logprob"]) > MASKED_LOGPROB]}
                except (UnicodeDecodeError, KeyError, TypeError, ValueError):
                    continue
        position += len(piece)
        if len(found) == len(wanted):
            break
    return found or None


def _digit_after(token: str, prefix: str) -> int | None:
    """The one-digit number a token spells right after `prefix` ("3", ":3", "3,"), else None ("10", "a")."""
    if not token.startswith(prefix) or len(token) <= len(prefix):
        return None
    rest = token[len(prefix):]
    if rest[0] not in _DIGITS or (len(rest) > 1 and rest[1] in _DIGITS):
        return None
    return int(rest[0])


def score_distribution(entry: dict[str, Any] | None, score: int | None, low: int = QUALITY_MIN,
                       high: int = QUALITY_MAX) -> tuple[list[float], float] | None:
    """(p(low..high), expected score) from the alternatives at the score's token (`value_logprobs` entry):
    the alternatives that spell a digit in range after the same prefix, their probabilities summed per digit
    and renormalised over the allowed digits. None (sampled score only) when there is no entry, the sampled
    token does not spell `score`, or no allowed digit has any probability."""
    if not entry or score is None:
        return None
    try:
        prefix, sampled = entry["prefix"], entry["token"]
        candidates = {str(token): float(logprob) for token, logprob in entry.get("top") or []}
        candidates.setdefault(sampled, float(entry["logprob"]))
    except (KeyError, TypeError, ValueError):
        return None
    if _digit_after(sampled, prefix) != score:
        return None
    mass = [0.0] * (high - low + 1)
    for token, logprob in candidates.items():
        digit = _digit_after(token, prefix)
        if digit is not None and low <= digit <= high and math.isfinite(logprob):
            mass[digit - low] += math.exp(logprob)
    total = sum(mass)
    if not total > 0:
        return None
    probs = [m / total for m in mass]
    return probs, sum((low + k) * p for k, p in enumerate(probs))
