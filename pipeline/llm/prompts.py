"""Prompt files: one per task and version in `prompts/`, with one checked placeholder for the document.

File format (`prompts/quality_v1.txt`):

    # comment lines
    task: quality                          header `key: value` lines (task, optional taxonomy file,
    taxonomy: taxonomy_weborganizer_v1.txt   optional `formats:` file: a second taxonomy, same format)

    [system]
    ...long shared instructions...
    [user]
    ...more instructions, {{taxonomy}} if the header names a taxonomy ({{formats}}: the formats one)...
    <document>
    {{document}}
    </document>

`{{document}}` appears exactly once, in the last (user) message, with only a short tail after it: the
long shared instructions come first so vLLM's prefix cache reuses them across pages. The page text is
inserted once, by splitting the template at the placeholder (never by a format/replace pass over the
page), and neutralised first so it cannot close the document tag, open a chat turn with special tokens,
or look like a placeholder. The prompt hash covers the instructions after static filling (taxonomy
included), so a changed rubric or taxonomy is a new hash and a new cache key.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import CurateError

DOCUMENT = "{{document}}"
TAXONOMY = "{{taxonomy}}"
FORMATS = "{{formats}}"  # the second taxonomy (page formats) of a prompt that labels both
ROLES = ("system", "user", "assistant")
# Characters allowed after the document placeholder (closing tag, an answer cue). More would put
# per-page text before shared text in some future edit and defeat prefix caching.
MAX_TAIL_CHARS = 200

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_SECTION = re.compile(r"^\[(\w+)\]\s*$")
_HEADER = re.compile(r"^([a-z_]+)\s*:\s*(.+?)\s*$")
_TOPIC_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_DOCUMENT_TAG = re.compile(r"<(/?\s*document)", re.IGNORECASE)


class PromptError(CurateError, ValueError):
    """A prompt or taxonomy file that cannot be used; the message names the file and the problem."""


def default_prompts_dir() -> Path:
    env = os.environ.get("CURATE_PROMPTS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "prompts"


def load_taxonomy(path: str | Path) -> tuple[tuple[str, str], ...]:
    """`id: description` lines -> ((id, description), ...); ids are unique snake_case."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise PromptError(f"taxonomy file not found: {path}") from None
    entries: list[tuple[str, str]] = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        topic_id, sep, description = line.partition(":")
        topic_id = topic_id.strip()
        if not sep or not _TOPIC_ID.match(topic_id):
            raise PromptError(f"{path}:{number}: expected `snake_case_id: description`, got {line!r}")
        if topic_id in dict(entries):
            raise PromptError(f"{path}:{number}: topic {topic_id!r} listed twice")
        entries.append((topic_id, description.strip()))
    if not entries:
        raise PromptError(f"{path}: no topics")
    return tuple(entries)


def neutralize_document(text: str) -> str:
    """Make page text inert inside the prompt: it can't end the <document> block, start a chat turn with
    special tokens (`<|eot_id|>`, `<|start_header_id|>`), or read as a template placeholder."""
    text = text.replace("<|", "< |").replace("|>", "| >")
    text = _DOCUMENT_TAG.sub(lambda m: "&lt;" + m.group(1), text)
    return text.replace("{{", "{ {").replace("}}", "} }")


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    task: str
    # (role, content); the last content holds DOCUMENT exactly once
    messages: tuple[tuple[str, str], ...]
    prompt_hash: str
    taxonomy: tuple[tuple[str, str], ...] | None = None
    path: str | None = None
    formats: tuple[tuple[str, str], ...] | None = None  # the `formats:` taxonomy, when the header names one

    @property
    def topic_ids(self) -> list[str]:
        return [topic_id for topic_id, _ in self.taxonomy or ()]

    @property
    def format_ids(self) -> list[str]:
        return [format_id for format_id, _ in self.formats or ()]

    def render(self, document: str, max_chars: int | None = None) -> list[dict[str, str]]:
        """Chat messages for one page: shared instructions, then the (truncated, neutralised) page."""
        if max_chars is not None:
            document = document[:max_chars]
        document = neutralize_document(document)
        rendered = [{"role": role, "content": content} for role, content in self.messages]
        head, tail = rendered[-1]["content"].split(DOCUMENT)
        rendered[-1]["content"] = head + document + tail
        return rendered


def _parse_file(path: Path) -> tuple[dict[str, str], list[tuple[str, str]]]:
    header: dict[str, str] = {}
    sections: list[tuple[str, list[str]]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        section = _SECTION.match(line)
        if section:
            role = section.group(1)
            if role not in ROLES:
                raise PromptError(f"{path}:{number}: unknown section [{role}] (expected one of {', '.join(ROLES)})")
            sections.append((role, []))
        elif sections:
            sections[-1][1].append(line)
        elif line.strip() and not line.lstrip().startswith("#"):
            match = _HEADER.match(line.strip())
            if not match:
                raise PromptError(f"{path}:{number}: expected a `key: value` header line or a [section], got {line!r}")
            header[match.group(1)] = match.group(2)
    return header, [(role, "\n".join(lines).strip()) for role, lines in sections]


def load_prompt(prompt_id: str, prompts_dir: str | Path | None = None) -> Prompt:
    """Load and check `prompts/<prompt_id>.txt`."""
    folder = Path(prompts_dir) if prompts_dir else default_prompts_dir()
    path = folder / f"{prompt_id}.txt"
    if not path.exists():
        available = sorted(p.stem for p in folder.glob("*.txt") if not p.stem.startswith("taxonomy"))
        raise PromptError(f"prompt {prompt_id!r} not found in {folder} (available: {', '.join(available) or 'none'})")
    header, sections = _parse_file(path)
    if not sections:
        raise PromptError(f"{path}: no [system]/[user] sections")
    task = header.get("task")
    if not task:
        raise PromptError(f"{path}: missing `task:` header line")

    taxonomy = None
    if "taxonomy" in header:
        taxonomy = load_taxonomy(folder / header["taxonomy"])
    formats = load_taxonomy(folder / header["formats"]) if "formats" in header else None
    messages: list[tuple[str, str]] = []
    for role, content in sections:
        for placeholder, entries, key in ((TAXONOMY, taxonomy, "taxonomy"), (FORMATS, formats, "formats")):
            if placeholder in content:
                if entries is None:
                    raise PromptError(f"{path}: uses {placeholder} but has no `{key}:` header line")
                content = content.replace(placeholder, "\n".join(f"- {tid}: {desc}" for tid, desc in entries))
        messages.append((role, content))

    all_text = "\n".join(content for _, content in messages)
    unknown = sorted({m.group(0) for m in _PLACEHOLDER.finditer(all_text)} - {DOCUMENT})
    if unknown:
        raise PromptError(f"{path}: unknown placeholder(s) {', '.join(unknown)} "
                          f"(only {DOCUMENT}, {TAXONOMY} and {FORMATS})")
    count = all_text.count(DOCUMENT)
    if count != 1:
        raise PromptError(f"{path}: {DOCUMENT} must appear exactly once, found {count}")
    last_role, last_content = messages[-1]
    if DOCUMENT not in last_content or last_role != "user":
        raise PromptError(f"{path}: {DOCUMENT} must be in the last section, a [user] one (the document goes last)")
    tail = last_content.split(DOCUMENT, 1)[1]
    if len(tail) > MAX_TAIL_CHARS:
        raise PromptError(f"{path}: {len(tail)} characters after {DOCUMENT} (at most {MAX_TAIL_CHARS}): put the "
                          "shared instructions before the document so the prefix cache can reuse them")

    canonical = json.dumps({"task": task, "messages": messages}, ensure_ascii=False, sort_keys=True)
    prompt_hash = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return Prompt(prompt_id=prompt_id, task=task, messages=tuple(messages), prompt_hash=prompt_hash,
                  taxonomy=taxonomy, path=str(path), formats=formats)
