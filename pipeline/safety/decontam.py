"""Benchmark decontamination: an n-gram index of evaluation sets, and where a document holds their text.

`EvalIndex.build(paths, text_fields, ngram=13)` reads the evaluation sets (JSONL or Parquet files, or
`datasets` folders saved with `save_to_disk`), makes each item's text from `text_fields` (joined with a
space; a list such as `choices` gives each element, a dict such as ARC's `{"text": [...], "label": [...]}`
its `text`), and indexes:

- every n-gram of normalised words of an item of at least n words;
- the whole word sequence of an item shorter than n words (a "short item", matched whole: all its words,
  contiguous, in the document), when it has at least `min_words` (3) words: an item of one or two words
  ("Paris", "yes") would match nearly every page, so such items are counted (`skipped_items`), not indexed.

`find(text)` returns every matched span as a `Hit` (eval set, item id, the matched words, character span
in the document); the matches of one item that overlap or touch are merged into one Hit with the union
span. `cut(text, hits)` removes those spans.

Normalisation (`normalized_words`), the same for eval items and documents: a word is a maximal run of
letters, digits and combining marks of any script (`\\p{L}\\p{N}\\p{M}`), except that each Han, Hiragana
or Katakana character is a word of its own (those scripts write no spaces); each word is NFKC-normalised
and case-folded. Punctuation, symbols and whitespace between words do not matter; numbers are
kept as they are (in a maths benchmark they are the content); diacritics are kept (`résumé` ≠ `resume`).

Index structure, chosen by measurement (`benchmarks/decontam.py`): 64-bit keys in one sorted numpy array
with a parallel uint32 array of item numbers (12 bytes per (n-gram, item) pair; a Python set of the same
ints plus a dict to items costs ~8x the memory for the same lookup speed). A word's hash is xxh64 of its
UTF-8 bytes; the hash of the k words from i is the polynomial `H = ((w_i * P + w_i+1) * P + ...)` mod 2^64
(all positions of a document at once, one numpy pass per length), finalised by murmur3's fmix64 over
`H + k * C` (so a short item of k words cannot collide with an n-gram by construction). A document's keys
are looked up with one `searchsorted`. False matches need a 64-bit collision: about 1 in 10^7 documents
for an index of 10^8 keys and 10^4-word documents.

`save(path)` writes one file (a JSON header: settings, fingerprint, stats, eval sets, item ids; then the
arrays), `load(path)` maps the arrays read-only (workers of one machine share the page cache), so the
driver builds once and every worker loads in its setup.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import regex
import xxhash

from pipeline.io import named_files_digest
from pipeline.safety import SafetyInputError

__all__ = ["EvalIndex", "Hit", "SafetyInputError", "normalized_words"]

NORMALISATION = "words-v1"  # bump when normalized_words changes: saved indexes then no longer load
MAGIC = b"EVALIDX1"
MIN_WORDS = 3
BATCH_WORDS = 1_000_000  # words hashed at once while building (bounds the build's memory: ~100 MB a batch)

_CJK = r"\p{Han}\p{Hiragana}\p{Katakana}"
_WORD = regex.compile(r"[\p{L}\p{N}\p{M}]+")
_HAS_CJK = regex.compile(f"[{_CJK}]")
_CJK_SPLIT = regex.compile(rf"[{_CJK}]\p{{M}}*|[[\p{{L}}\p{{N}}\p{{M}}]--[{_CJK}]]+", regex.V1)
_ASCII_WORD = re.compile(r"[a-z0-9]+")  # the same words on ASCII text (the stdlib's engine is faster at it)

_P = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplication by it is a bijection mod 2^64
_C = np.uint64(0xC2B2AE3D27D4EB4F)
_M1, _M2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
_S33, _S3, _B7 = np.uint64(33), np.uint64(3), np.uint64(7)


def _norm(word: str) -> str:
    return unicodedata.normalize("NFKC", word).casefold()


def normalized_words(text: str) -> list[tuple[str, int, int]]:
    """(word, start, end) of every word of `text`, normalised (see the module docstring); start/end are
    character offsets into `text`: `text[start:end]` is the word as written."""
    out = []
    for match in _WORD.finditer(text):
        word, start = match.group(), match.start()
        if word.isascii():
            out.append((word.lower(), start, match.end()))
        elif _HAS_CJK.search(word):
            out.extend((_norm(part.group()), start + part.start(), start + part.end())
                       for part in _CJK_SPLIT.finditer(word))
        else:
            out.append((_norm(word), start, match.end()))
    return out


def _words(text: str) -> list[str]:
    """The words of `normalized_words(text)`, without offsets (the fast path of `find` and `build`)."""
    if text.isascii():
        return _ASCII_WORD.findall(text.lower())
    out: list[str] = []
    for word in _WORD.findall(text):
        if word.isascii():
            out.append(word.lower())
        elif _HAS_CJK.search(word):
            out.extend(_norm(part) for part in _CJK_SPLIT.findall(word))
        else:
            out.append(_norm(word))
    return out


def _word_hashes(words: list[str]) -> np.ndarray:
    return np.fromiter(map(xxhash.xxh64_intdigest, map(str.encode, words)), dtype=np.uint64, count=len(words))


def _finalise(h: np.ndarray, k: int) -> np.ndarray:
    """murmur3 fmix64 of `h + k * C`, elementwise (uint64 arithmetic wraps mod 2^64)."""
    with np.errstate(over="ignore"):
        x = h + np.uint64(k) * _C
        x ^= x >> _S33
        x *= _M1
        x ^= x >> _S33
        x *= _M2
        x ^= x >> _S33
    return x


def _rolling(w: np.ndarray, lengths: set[int]) -> Iterator[tuple[int, np.ndarray]]:
    """(k, keys of the k words starting at each position 0..len(w)-k) for each k in `lengths`, in order."""
    if not lengths or len(w) == 0:
        return
    top = max(lengths)
    h = w.copy()
    with np.errstate(over="ignore"):
        for k in range(1, min(top, len(w)) + 1):
            if k > 1:
                h = h[:-1] * _P + w[k - 1:]
            if k in lengths:
                yield k, _finalise(h, k)


@dataclass(frozen=True)
class Hit:
    """One matched span of a document: the eval set's name, the item's id (its `id` field, else its line
    number in a JSONL file (from 1) or its row number in a Parquet file or `datasets` split (from 0)), the
    matched words (normalised, space-separated) and the span's character offsets in the document."""

    eval_set: str
    item: str
    words: str
    start: int
    end: int


# --- reading eval sets -------------------------------------------------------------------------------------

def _pieces(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return _pieces(value["text"]) if "text" in value else [p for v in value.values() for p in _pieces(v)]
    if isinstance(value, list | tuple):
        if all(isinstance(v, str) for v in value):
            return list(value)
        return [p for v in value for p in _pieces(v)]
    if hasattr(value, "tolist"):  # numpy arrays and scalars from Parquet
        return _pieces(value.tolist())
    return [str(value)]




def _is_datasets_folder(path: Path) -> bool:
    return any((path / name).is_file() for name in ("dataset_info.json", "state.json", "dataset_dict.json"))


class _EvalSet:
    """One evaluation set on disk: its format, fields, sha256 and (id, text) items."""

    def __init__(self, entry: str, text_fields: list[str]):
        self.entry, self.path, self.text_fields = entry, Path(entry), list(text_fields)
        if not self.path.exists():
            raise SafetyInputError(f"eval set {entry}: does not exist")
        if self.path.is_dir():
            if not _is_datasets_folder(self.path):
                raise SafetyInputError(f"eval set {entry}: a folder that is not a `datasets` folder (no "
                                       "dataset_info.json, state.json or dataset_dict.json); give JSONL or "
                                       "Parquet files, or a folder written by Dataset.save_to_disk")
            self.format = "datasets"
            files = sorted(p for p in self.path.rglob("*") if p.is_file())
            self.sha256 = named_files_digest([(str(p.relative_to(self.path)), p) for p in files])
        else:
            with open(self.path, "rb") as fh:
                head = fh.read(4096)
            if head[:4] == b"PAR1":
                self.format = "parquet"
            elif head[:2] == b"\x1f\x8b" or self._looks_like_jsonl(head):
                self.format = "jsonl"
            else:
                raise SafetyInputError(f"eval set {entry}: neither JSONL (one JSON object a line), Parquet nor a "
                                       "`datasets` folder")
            self.sha256 = named_files_digest([("", self.path)])
        self.fields: list[str] = []

    @staticmethod
    def _looks_like_jsonl(head: bytes) -> bool:
        if b"\x00" in head:
            return False
        first = head.removeprefix(b"\xef\xbb\xbf").lstrip().split(b"\n", 1)[0].strip()
        return first.startswith(b"{") or not first  # an empty file is JSONL (and then an empty eval set)

    def _check_fields(self, available: list[str]) -> list[str]:
        present = [f for f in self.text_fields if f in available]
        if not present:
            shown = ", ".join(available[:30]) + (" ..." if len(available) > 30 else "")
            raise SafetyInputError(f"eval set {self.entry}: none of the text fields {self.text_fields} is in it; "
                                   f"its fields: {shown or '(none)'}")
        self.fields = present
        return present

    def items(self) -> Iterator[tuple[str, str]]:
        """(item id, text) of every item, in order; SafetyInputError when the set is empty or bad."""
        reader = {"jsonl": self._jsonl, "parquet": self._parquet, "datasets": self._datasets}[self.format]
        count = 0
        for item_id, record in reader():
            count += 1
            yield item_id, " ".join(p for f in self.fields for p in _pieces(record.get(f)))
        if count == 0:
            raise SafetyInputError(f"eval set {self.entry}: empty (no items)")

    def _jsonl(self) -> Iterator[tuple[str, dict]]:
        records: list[tuple[int, dict]] = []  # only the text fields and `id` are kept
        keys: dict[str, None] = {}
        wanted = [*self.text_fields, "id"]
        raw = self.path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError) as exc:
                raise SafetyInputError(f"eval set {self.entry}: a damaged gzip file ({exc})") from None
        try:
            lines = io.StringIO(raw.decode("utf-8-sig"))
        except UnicodeDecodeError as exc:
            raise SafetyInputError(f"eval set {self.entry}: not UTF-8 text (byte {exc.start})") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SafetyInputError(f"eval set {self.entry}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise SafetyInputError(f"eval set {self.entry}:{number}: a JSON {type(record).__name__}, "
                                       "not an object")
            keys.update(dict.fromkeys(record))
            records.append((number, {k: record[k] for k in wanted if k in record}))
        if records:
            self._check_fields(list(keys))
        for number, record in records:
            yield str(record["id"]) if record.get("id") is not None else str(number), record

    def _parquet(self) -> Iterator[tuple[str, dict]]:
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(self.path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
            raise SafetyInputError(f"eval set {self.entry}: not a readable Parquet file ({exc})") from None
        names = parquet.schema_arrow.names
        if parquet.metadata.num_rows == 0:
            return
        columns = self._check_fields(names) + (["id"] if "id" in names else [])
        row = 0
        for batch in parquet.iter_batches(batch_size=8192, columns=list(dict.fromkeys(columns))):
            for record in batch.to_pylist():
                yield (str(record["id"]) if record.get("id") is not None else str(row)), record
                row += 1

    def _datasets(self) -> Iterator[tuple[str, dict]]:
        import datasets

        try:
            loaded = datasets.load_from_disk(str(self.path))
        except Exception as exc:  # noqa: BLE001 - datasets raises several types for a bad folder
            raise SafetyInputError(f"eval set {self.entry}: not a readable `datasets` folder ({exc})") from None
        splits = sorted(loaded.items()) if isinstance(loaded, datasets.DatasetDict) else [(None, loaded)]
        if sum(len(split) for _, split in splits) == 0:
            return
        names = list(dict.fromkeys(n for _, split in splits for n in split.column_names))
        self._check_fields(names)
        for name, split in splits:
            columns = [c for c in [*self.fields, "id"] if c in split.column_names]
            for row, record in enumerate(split.select_columns(list(dict.fromkeys(columns)))):
                default = str(row) if name is None else f"{name}/{row}"
                yield (str(record["id"]) if record.get("id") is not None else default), record


# --- the index ---------------------------------------------------------------------------------------------

class EvalIndex:
    """The n-gram index of evaluation sets; see the module docstring."""

    def __init__(self, *, ngram: int, text_fields: list[str], min_words: int, keys: np.ndarray,
                 items: np.ndarray, item_set: np.ndarray, item_ids: list[str], sets: list[dict],
                 short_lengths: list[int], stats: dict, fingerprint: str, bitmap: np.ndarray | None = None):
        self.ngram, self.text_fields, self.min_words = ngram, list(text_fields), min_words
        self.keys, self.items, self.item_set = keys, items, item_set
        self.filter_bits = _filter_bits(len(keys))
        self.bitmap = bitmap if bitmap is not None else _bitmap(keys, self.filter_bits)
        self._shift = np.uint64(64 - self.filter_bits)
        self.item_ids, self.sets = item_ids, sets
        self.short_lengths = sorted(short_lengths)
        self._lengths = {*self.short_lengths, ngram}
        self.stats, self.fingerprint = stats, fingerprint

    # -- building

    @classmethod
    def build(cls, paths: list[str], text_fields: list[str] = ("text",), ngram: int = 13,
              min_words: int = MIN_WORDS) -> EvalIndex:
        """Read every eval set and index it (SafetyInputError naming the path and the problem)."""
        started = time.perf_counter()
        text_fields = [text_fields] if isinstance(text_fields, str) else list(text_fields)
        if not paths:
            raise SafetyInputError("decontamination needs at least one eval set")
        if not text_fields:
            raise SafetyInputError("decontamination needs at least one text field")
        if ngram < 1 or not 1 <= min_words <= ngram:
            raise SafetyInputError(f"decontamination: ngram ({ngram}) must be >= 1 and min_words ({min_words}) "
                                   "between 1 and ngram")
        eval_sets = [_EvalSet(entry, text_fields) for entry in paths]
        names = _set_names([s.path for s in eval_sets], paths)
        item_ids: list[str] = []
        item_set: list[int] = []
        keys_parts: list[np.ndarray] = []
        items_parts: list[np.ndarray] = []
        short_lengths: set[int] = set()
        sets: list[dict] = []
        batch: list[tuple[int, list[str]]] = []
        batch_words = 0

        def flush() -> None:
            nonlocal batch, batch_words
            if batch:
                k, it = _batch_keys(batch, ngram)
                keys_parts.append(k)
                items_parts.append(it)
            batch, batch_words = [], 0

        for set_number, (eval_set, name) in enumerate(zip(eval_sets, names)):
            counts = {"items": 0, "short_items": 0, "skipped_items": 0}
            first_item = len(item_ids)
            for item_id, text in eval_set.items():
                counts["items"] += 1
                words = _words(text)
                if len(words) < min_words:
                    counts["skipped_items"] += 1
                    continue
                if len(words) < ngram:
                    counts["short_items"] += 1
                    short_lengths.add(len(words))
                batch.append((len(item_ids), words))
                batch_words += len(words)
                item_ids.append(item_id)
                item_set.append(set_number)
                if batch_words >= BATCH_WORDS:
                    flush()
            if len(item_ids) == first_item:
                raise SafetyInputError(f"eval set {eval_set.entry}: none of its {counts['items']} items has "
                                       f"{min_words} words or more in {eval_set.fields}")
            sets.append({"eval_set": name, "path": eval_set.entry, "format": eval_set.format,
                         "fields": eval_set.fields, **counts, "sha256": eval_set.sha256})
        flush()
        keys = np.concatenate(keys_parts) if keys_parts else np.zeros(0, np.uint64)
        items = np.concatenate(items_parts) if items_parts else np.zeros(0, np.uint32)
        order = np.lexsort((items, keys))
        keys, items = keys[order], items[order]
        if len(keys):  # one row per (key, item): an n-gram repeated inside an item counts once
            keep = np.ones(len(keys), bool)
            keep[1:] = (keys[1:] != keys[:-1]) | (items[1:] != items[:-1])
            keys, items = np.ascontiguousarray(keys[keep]), np.ascontiguousarray(items[keep])
        item_set_arr = np.asarray(item_set, dtype=np.uint32)
        distinct = int(np.count_nonzero(keys[1:] != keys[:-1]) + 1) if len(keys) else 0
        per_set_ngrams = np.bincount(item_set_arr[items], minlength=len(sets)) if len(items) else [0] * len(sets)
        for described, count in zip(sets, per_set_ngrams):
            described["ngrams"] = int(count)
        stats = {"items": sum(s["items"] for s in sets), "short_items": sum(s["short_items"] for s in sets),
                 "skipped_items": sum(s["skipped_items"] for s in sets), "ngrams": distinct,
                 "entries": len(keys), "bytes": int(keys.nbytes + items.nbytes + item_set_arr.nbytes
                                                           + (1 << _filter_bits(len(keys))) // 8),
                 "build_seconds": round(time.perf_counter() - started, 3),
                 "eval_sets": {s["eval_set"]: {k: s[k] for k in ("items", "short_items", "skipped_items", "ngrams")}
                               for s in sets}}
        fingerprint = _fingerprint(ngram, text_fields, min_words, [s["sha256"] for s in sets])
        return cls(ngram=ngram, text_fields=text_fields, min_words=min_words, keys=keys, items=items,
                   item_set=item_set_arr, item_ids=item_ids, sets=sets, short_lengths=sorted(short_lengths),
                   stats=stats, fingerprint=fingerprint)

    # -- matching

    def find(self, text: str) -> list[Hit]:
        """Every span of `text` holding an indexed n-gram (or a whole short item), one Hit per item and
        merged span, ordered by start."""
        words = _words(text)
        if len(words) < (self.short_lengths[0] if self.short_lengths else self.ngram) or not len(self.keys):
            return []
        w = _word_hashes(words)
        spans: list[tuple[int, int, int]] = []  # (item, first word, end word)
        keys = self.keys
        for k, queries in _rolling(w, self._lengths):
            found, first = self._lookup(queries)
            for start, low in zip(found.tolist(), first.tolist()):
                high = int(np.searchsorted(keys, queries[start], side="right"))
                spans.extend((int(item), start, start + k) for item in self.items[low:high])
        if not spans:
            return []
        offsets = normalized_words(text)
        hits = []
        spans.sort()
        current = spans[0]
        for span in spans[1:] + [(-1, 0, 0)]:
            if span[0] == current[0] and span[1] <= current[2]:
                current = (current[0], current[1], max(current[2], span[2]))
                continue
            item, first, end = current
            hits.append(Hit(self.sets[int(self.item_set[item])]["eval_set"], self.item_ids[item],
                            " ".join(o[0] for o in offsets[first:end]), offsets[first][1], offsets[end - 1][2]))
            current = span
        hits.sort(key=lambda h: (h.start, h.end, h.eval_set, h.item))
        return hits

    def _lookup(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in `queries` of the keys in the index, the index of each one's first row). The bitmap
        first (one random access a query, where a binary search over the keys misses the cache ~10 times):
        only its survivors, the keys and about 1 in 8 of the others, are searched in the sorted keys."""
        top = queries >> self._shift
        maybe = np.flatnonzero((self.bitmap[(top >> _S3).astype(np.intp)] >> (top & _B7).astype(np.uint8)) & 1)
        if not len(maybe):
            return maybe, maybe
        candidates = queries[maybe]
        pos = np.searchsorted(self.keys, candidates)
        inside = pos < len(self.keys)
        hit = np.zeros(len(maybe), bool)
        hit[inside] = self.keys[pos[inside]] == candidates[inside]
        return maybe[hit], pos[hit]

    @staticmethod
    def cut(text: str, hits: list[Hit]) -> str:
        """`text` without the characters of the hits' spans (their union: hits of several items overlap)."""
        if not hits:
            return text
        parts, position = [], 0
        for start, end in sorted((h.start, h.end) for h in hits):
            if start > position:
                parts.append(text[position:start])
            position = max(position, end)
        parts.append(text[position:])
        return "".join(parts)

    # -- describing

    def describe(self) -> list[dict]:
        """Per eval set: name, path, format, fields used, items (short, skipped), n-gram rows, sha256."""
        return [dict(s) for s in self.sets]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EvalIndex):
            return NotImplemented
        return (self.fingerprint == other.fingerprint and self.ngram == other.ngram
                and self.text_fields == other.text_fields and self.min_words == other.min_words
                and self.item_ids == other.item_ids and self.sets == other.sets
                and self.short_lengths == other.short_lengths and self.stats == other.stats
                and np.array_equal(self.keys, other.keys) and np.array_equal(self.items, other.items)
                and np.array_equal(self.item_set, other.item_set) and np.array_equal(self.bitmap, other.bitmap))

    __hash__ = None  # type: ignore[assignment]

    # -- saving and loading

    def save(self, path: str | Path) -> None:
        """One file: 8-byte magic, 8-byte header length, the JSON header, then the arrays (8-byte aligned)."""
        arrays = {"keys": self.keys, "items": self.items, "item_set": self.item_set, "bitmap": self.bitmap}
        header: dict[str, Any] = {
            "normalisation": NORMALISATION, "ngram": self.ngram, "text_fields": self.text_fields,
            "min_words": self.min_words, "fingerprint": self.fingerprint, "stats": self.stats, "sets": self.sets,
            "short_lengths": self.short_lengths, "item_ids": self.item_ids, "arrays": {}}
        # offsets depend on the header's length: lay the arrays out after a header padded to 8 bytes
        layout, offset = {}, 0
        for name, array in arrays.items():
            layout[name] = {"dtype": array.dtype.str, "count": int(array.size), "offset": offset}
            offset += (array.nbytes + 7) // 8 * 8
        header["arrays"] = layout
        blob = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode()
        blob += b" " * (-(len(blob) + 16) % 8)
        with open(path, "wb") as fh:
            fh.write(MAGIC + len(blob).to_bytes(8, "little") + blob)
            for array in arrays.values():
                data = np.ascontiguousarray(array).tobytes()
                fh.write(data + b"\x00" * (-len(data) % 8))

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True) -> EvalIndex:
        """An index written by `save` (its arrays mapped read-only unless `mmap=False`)."""
        path = Path(path)
        try:
            with open(path, "rb") as fh:
                magic, size = fh.read(8), int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(size)) if magic == MAGIC else None
        except (OSError, ValueError) as exc:
            raise SafetyInputError(f"decontamination index {path}: cannot be read ({exc})") from None
        if header is None:
            raise SafetyInputError(f"decontamination index {path}: not an index written by EvalIndex.save")
        if header.get("normalisation") != NORMALISATION:
            raise SafetyInputError(f"decontamination index {path}: built with normalisation "
                                   f"{header.get('normalisation')}, this code uses {NORMALISATION}: build it again")
        base = 16 + size
        arrays = {}
        for name, spec in header["arrays"].items():
            dtype = np.dtype(spec["dtype"])
            if spec["count"] == 0:
                arrays[name] = np.zeros(0, dtype)
            elif mmap:
                arrays[name] = np.memmap(path, dtype=dtype, mode="r", offset=base + spec["offset"],
                                         shape=(spec["count"],))
            else:
                arrays[name] = np.fromfile(path, dtype=dtype, count=spec["count"], offset=base + spec["offset"])
        return cls(ngram=header["ngram"], text_fields=header["text_fields"], min_words=header["min_words"],
                   keys=arrays["keys"], items=arrays["items"], item_set=arrays["item_set"],
                   item_ids=header["item_ids"], sets=header["sets"], short_lengths=header["short_lengths"],
                   stats=header["stats"], fingerprint=header["fingerprint"], bitmap=arrays.get("bitmap"))


def _filter_bits(count: int) -> int:
    """Bits of a key that index the bitmap: 8 to 16 bitmap bits per key (at most 1/8 of absent keys pass)."""
    return min(40, max(6, int(count - 1).bit_length() + 3)) if count > 1 else 6


def _bitmap(keys: np.ndarray, bits: int) -> np.ndarray:
    """A bit for each value of the top `bits` bits of a key, set when some key has them (keys are sorted,
    so their top bits are too, and each byte's bits are OR-ed over one run)."""
    bitmap = np.zeros(1 << (bits - 3), np.uint8)
    if len(keys):
        top = keys >> np.uint64(64 - bits)
        byte = (top >> _S3).astype(np.intp)
        bit = np.left_shift(np.uint8(1), (top & _B7).astype(np.uint8))
        starts = np.flatnonzero(np.concatenate(([True], byte[1:] != byte[:-1])))
        bitmap[byte[starts]] = np.bitwise_or.reduceat(bit, starts)
    return bitmap


def _batch_keys(batch: list[tuple[int, list[str]]], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """(keys, item numbers) of a batch of items: every n-gram of the long ones, the whole of the short ones.
    All items' word hashes are laid end to end and hashed in one pass per length; windows that cross from
    one item into the next are dropped."""
    lengths = np.fromiter((len(words) for _, words in batch), dtype=np.int64, count=len(batch))
    numbers = np.fromiter((number for number, _ in batch), dtype=np.uint32, count=len(batch))
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    w = _word_hashes([word for _, words in batch for word in words])
    owner = np.repeat(np.arange(len(batch)), lengths)
    short = lengths < ngram
    wanted = set(lengths[short].tolist()) | {ngram}
    keys, items = [], []
    for k, h in _rolling(w, wanted):
        if k == ngram:
            valid = owner[: len(h)] == owner[k - 1:]
            valid &= ~short[owner[: len(h)]]
            keys.append(h[valid])
            items.append(numbers[owner[: len(h)][valid]])
        else:
            which = np.flatnonzero(lengths == k)
            keys.append(h[starts[which]])
            items.append(numbers[which])
    return np.concatenate(keys), np.concatenate(items)


def _set_names(paths: list[Path], entries: list[str]) -> list[str]:
    """Each eval set's name in hits and stats: its file or folder name without the extension, or the path
    as given when two sets would share a name."""
    stems = []
    for path in paths:
        name = path.name
        for suffix in (".gz", ".jsonl", ".json", ".parquet"):
            name = name.removesuffix(suffix)
        stems.append(name or str(path))
    return [stem if stems.count(stem) == 1 else entry for stem, entry in zip(stems, entries)]


def _fingerprint(ngram: int, text_fields: list[str], min_words: int, digests: list[str]) -> str:
    payload = json.dumps({"normalisation": NORMALISATION, "ngram": ngram, "text_fields": text_fields,
                          "min_words": min_words, "sets": digests})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
