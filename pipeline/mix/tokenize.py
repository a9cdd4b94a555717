"""The tokenize stage (`curate tokenize`): mix/ -> tokens/, the mix's rows as token ids in a training format,
one token shard per mix/ file, an end-of-document token after every document, and a document index beside
the shards.

Formats (`tokenize.format`):

- `datatrove` (default): `tokens/part-NNNNN/part-NNNNN.ds` (the ids, uint16 when the vocabulary fits, else
  uint32), `.ds.index` (uint64 end of every document) and `.ds.metadata`, the files datatrove's
  `DocumentTokenizer` writes and its `DatatroveFolderDataset` reads (nanotron trains from them directly);
  `tokens/datatrove_paths.json` lists the shards in mix order for its `paths_file`.
- `megatron`: `tokens/part-NNNNN/part-NNNNN.bin` + `.idx`, Megatron's indexed dataset (one sequence per
  document), read by Megatron-Core's `IndexedDataset` (Megatron-LM, NeMo, GPT-NeoX).

`tokens/part-NNNNN.parquet` is the shard's document index (`pipeline.mix.schemas.TOKEN_INDEX`): for each row
of the mix its token file, offset and length, and its doc_id, so any window of tokens traces back to its
page (`trace_window`).

Each shard is a task on the runtime: its token files are made in a staging folder and installed whole by the
runner (`ShardResult.artifacts`), the index written, then the marker: resumable like every stage, and
conserved (rows in = documents written). The plan identity is the mix's fingerprint, the format, the
tokenizer and the end-of-document token: another of any of them redoes every shard, so tokens/ never holds
two mixes. `finish` checks that the tokens written equal mix/_manifest.json's, removes shards of an older
mix, and writes tokens/_manifest.json and tokens/README.md.
"""

from __future__ import annotations

import bisect
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import store
from pipeline.accounting import ConservationError
from pipeline.config import RunConfig
from pipeline.io import RunLayout, file_digest, read_json, write_text
from pipeline.mix import tokenizer as target_tokenizer
from pipeline.mix.allocate import MixError
from pipeline.mix.schemas import TOKEN_INDEX
from pipeline.runtime import Input, Output, Resources, Shard, ShardResult, Stage

STAGE = "tokenize"
TOKENS = "tokens"
MANIFEST = "_manifest.json"
PATHS_FILE = "datatrove_paths.json"
STAGING = ".staging-"
INDEX_COLUMNS = ["position", "doc_id", "synthetic_id", "group", "repeat", "n_tokens", "text"]
MEGATRON_INDEX_HEADER = b"MMIDIDX\x00\x00"
MEGATRON_DTYPE_CODES = {np.uint16: 8, np.int32: 4}


def token_dtype(format: str, vocab: int) -> type[np.integer]:
    """The ids' type: datatrove's rule (2 bytes while the vocabulary fits, else 4) or Megatron's (uint16 below
    65,500 entries, else int32)."""
    if format == "megatron":
        return np.uint16 if vocab < 65500 else np.int32
    return np.uint16 if vocab <= np.iinfo(np.uint16).max + 1 else np.uint32


def token_files(format: str, key: str) -> list[str]:
    """The files of one shard's folder (the token file first)."""
    if format == "megatron":
        return [f"{key}.bin", f"{key}.idx"]
    return [f"{key}.ds", f"{key}.ds.index", f"{key}.ds.metadata"]


def _metric(count: int) -> str:
    for unit, size in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if count >= size:
            return f"{count / size:.1f}{unit}"
    return str(count)


def write_megatron_index(path: Path, lengths: np.ndarray, dtype: type[np.integer]) -> None:
    """Megatron's .idx: header, version 1, dtype code, sequence and document counts, the sequence lengths
    (int32), their byte offsets (int64) and the document indices (int64: one sequence per document)."""
    lengths = np.asarray(lengths, dtype=np.int32)
    pointers = np.zeros(len(lengths), dtype=np.int64)
    if len(lengths):
        pointers[1:] = np.cumsum(lengths[:-1].astype(np.int64)) * np.dtype(dtype).itemsize
    documents = np.arange(len(lengths) + 1, dtype=np.int64)
    with open(path, "wb") as out:
        out.write(MEGATRON_INDEX_HEADER)
        out.write(np.array([1], dtype="<u8").tobytes())
        out.write(np.array([MEGATRON_DTYPE_CODES[dtype]], dtype="<u1").tobytes())
        out.write(np.array([len(lengths), len(documents)], dtype="<u8").tobytes())
        out.write(lengths.tobytes())
        out.write(pointers.tobytes())
        out.write(documents.tobytes())


def mix_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.exists():
        raise MixError(f"tokenize: no mix in {folder} (run `curate mix --out RUN --target-tokens N` first, or set "
                       "tokenize.mix)")
    return read_json(path)


class TokenizeStage(Stage):
    """mix/ -> tokens/: one task per mix/ file."""

    name = STAGE
    section = "tokenize"
    inputs = (Input("mix", config="tokenize.mix"),)
    outputs = (Output(TOKENS, TOKEN_INDEX),)
    role = "side"  # conserved on its own units (mix rows in = documents written), removes nothing
    writes_decisions = False
    unit = "file"

    @classmethod
    def enabled(cls, cfg: RunConfig) -> bool:
        return cfg.mix.target_tokens is not None and cfg.tokenize.enabled

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.layout = RunLayout(cfg.out)
        self._manifest: dict[str, Any] | None = None
        self._target: target_tokenizer.TargetTokenizer | None = None
        self._eos: tuple[str, int] | None = None
        self._vocab: int | None = None

    # ------------------------------------------------------------------------------------------ driver
    @property
    def manifest(self) -> dict[str, Any]:
        if self._manifest is None:
            self._manifest = mix_manifest(self.input_folder("mix"))
        return self._manifest

    @property
    def target(self) -> target_tokenizer.TargetTokenizer:
        """The tokenizer the mix was counted with (mix.tokenizer must still name it)."""
        if self._target is None:
            target = target_tokenizer.resolve(self.cfg)
            counted = self.manifest["tokenizer"]
            if target.sha256 != counted["sha256"]:
                raise MixError(f"tokenize: the mix was counted with the tokenizer {counted['name']} (sha256 "
                               f"{counted['sha256'][:12]}), and mix.tokenizer now gives {target.path} (sha256 "
                               f"{target.sha256[:12]}): run `curate mix` again with this tokenizer first, or point "
                               "mix.tokenizer back at that one")
            tokenizer = target.load()
            self._eos = target_tokenizer.end_of_document(tokenizer, target.path, self.cfg.tokenize.eos_token)
            self._vocab = target_tokenizer.vocab_size(tokenizer)
            self._target = target
        return self._target

    @property
    def eos(self) -> tuple[str, int]:
        self.target  # noqa: B018
        assert self._eos is not None
        return self._eos

    @property
    def dtype(self) -> type[np.integer]:
        self.target  # noqa: B018
        return token_dtype(self.cfg.tokenize.format, self._vocab or 0)

    def check(self) -> None:
        self.manifest  # noqa: B018
        self.target  # noqa: B018

    def plan_identity(self) -> dict[str, Any]:
        return {"mix": self.manifest["fingerprint"], "format": self.cfg.tokenize.format, "eos": self.eos[1],
                "tokenizer": self.target.sha256}

    def plan(self) -> list[Shard]:
        folder = self.input_folder("mix")
        shards, offset = [], 0
        for entry in self.manifest["files"]:
            path = folder / entry["file"]
            if not path.is_file() or path.stat().st_size != entry["bytes"]:
                raise MixError(f"tokenize: {path} is missing or not the file the mix wrote: run `curate mix` again")
            key = Path(entry["file"]).stem
            shards.append(Shard(key=key, source=str(path), payload={"stream_offset": offset, "rows": entry["rows"],
                                                                    "tokens": entry["tokens"]}))
            offset += entry["tokens"]
        return shards

    def resources(self) -> Resources:
        return Resources(kind="task", num_cpus=1)

    # ------------------------------------------------------------------------------------------ worker
    def setup(self) -> Any:
        return self.target.load()

    def process(self, worker, shard: Shard) -> ShardResult:
        fmt, dtype, (_, eos_id) = self.cfg.tokenize.format, self.dtype, self.eos
        folder = self.layout.dataset(TOKENS)
        staging = folder / f"{STAGING}{shard.key}-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        try:
            names = token_files(fmt, shard.key)
            lengths = tokenize_file(worker, shard.source, staging / names[0], dtype, eos_id,
                                    self.cfg.tokenize.batch_size)
            total = int(lengths.sum())
            if fmt == "megatron":
                write_megatron_index(staging / names[1], lengths, dtype)
            else:
                np.cumsum(lengths, dtype=np.uint64).astype("<u8").tofile(staging / names[1])
                (staging / names[2]).write_text(f"{self.target.name}|{np.dtype(dtype).itemsize}\n{total}\n"
                                                f"{_metric(total)}")
            table = pq.read_table(shard.source, columns=INDEX_COLUMNS[:-1])
            starts = np.cumsum(lengths, dtype=np.int64) - lengths
            index = pa.table({
                "position": table.column("position"), "doc_id": table.column("doc_id"),
                "synthetic_id": table.column("synthetic_id"), "group": table.column("group"),
                "repeat": table.column("repeat"),
                "file": pa.array([f"{shard.key}/{names[0]}"] * table.num_rows, pa.string()),
                "offset": pa.array(starts, pa.int64()), "length": pa.array(lengths, pa.int32()),
                "stream_offset": pa.array(starts + shard.payload["stream_offset"], pa.int64()),
            }, schema=TOKEN_INDEX)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        stats = self.new_stats(shard)
        stats.input = table.num_rows
        stats.kept = len(lengths)
        stats.extra["tokens"] = total
        stats.extra["token_file"] = {"file": f"{shard.key}/{names[0]}", **_record(staging / names[0])}
        return ShardResult(rows={TOKENS: index}, decisions=[], stats=stats,
                           artifacts={str(folder / shard.key): staging})

    # ------------------------------------------------------------------------------------------ finish
    def finish(self, summary: dict[str, Any], markers: list[dict[str, Any]]) -> dict[str, Any]:
        folder = self.layout.dataset(TOKENS)
        manifest = self.manifest
        tokens = sum(marker.get("tokens", 0) for marker in markers)
        if summary["complete"] and (tokens != manifest["tokens"] or summary["kept"] != manifest["rows"]):
            raise ConservationError(f"tokenize: wrote {tokens} tokens of {summary['kept']} documents, and "
                                    f"mix/_manifest.json has {manifest['tokens']} tokens in {manifest['rows']} rows")
        keys = {marker["shard"] for marker in markers}
        for path in folder.iterdir() if folder.is_dir() else []:
            if path.is_dir() and (path.name.startswith(STAGING) or path.name not in keys):
                store.removed_tree(path)  # a shard of another mix, or a crashed shard's staging
        fmt = self.cfg.tokenize.format
        files = []
        for marker in sorted(markers, key=lambda m: m["shard"]):
            entry = marker["token_file"]
            files.append({"file": entry["file"], "index": f"{marker['shard']}.parquet", "documents": marker["kept"],
                          "tokens": marker["tokens"], "bytes": entry["bytes"], "sha256": entry["sha256"]})
        token, token_id = self.eos
        out = {"format": fmt, "tokens": tokens, "documents": summary["kept"], "tokenizer":
               {"name": self.target.name, "sha256": self.target.sha256}, "eos": {"token": token, "id": token_id},
               "dtype": np.dtype(self.dtype).name, "token_size": np.dtype(self.dtype).itemsize,
               "mix_fingerprint": manifest["fingerprint"], "files": files}
        from pipeline.cards.mix import tokens_card

        if summary["complete"]:  # (files left as they are when their content is the same: a rerun changes nothing)
            _write_new(json.dumps(out, indent=2, sort_keys=True) + "\n", folder / MANIFEST)
            if fmt == "datatrove":
                _write_new(json.dumps([{"path": f["file"], "size": f["bytes"]} for f in files]), folder / PATHS_FILE)
            else:
                store.removed(folder / PATHS_FILE)
            _write_new(tokens_card(out, TOKEN_INDEX), folder / "README.md")
        return {"tokens": tokens, "documents": summary["kept"], "format": fmt, "files": len(files),
                "mix_tokens": manifest["tokens"], "equal_to_mix": tokens == manifest["tokens"]}

    def format_summary(self, summary: dict[str, Any]) -> str:
        return (f"[{self.name}] {summary['documents']:,} documents, {summary['tokens']:,} tokens "
                f"({'=' if summary['equal_to_mix'] else '!='} the mix's {summary['mix_tokens']:,}) in "
                f"{summary['files']} {summary['format']} shard(s) ({summary['shards_run']} written now) in "
                f"{self.layout.dataset(TOKENS)}")


def _write_new(text: str, path: Path) -> None:
    if not path.is_file() or path.read_text() != text:
        write_text(text, path)


def _record(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": file_digest(path).hexdigest()}


def tokenize_file(tokenizer, source: str | Path, out: Path, dtype: type[np.integer], eos_id: int,
                  batch_size: int = 1000) -> np.ndarray:
    """The texts of a mix/ file as ids to `out`, `eos_id` after each, one batch at a time; returns each
    document's length (its end-of-document token included). A document whose count differs from the mix's
    stops the shard (the tokenizer is not the one the mix was counted with)."""
    parquet = pq.ParquetFile(source)
    lengths: list[np.ndarray] = []
    with open(out, "wb") as sink:
        for batch in parquet.iter_batches(batch_size=batch_size, columns=["n_tokens", "text"]):
            encoded = target_tokenizer.encode(tokenizer, batch.column("text").to_pylist())
            flat: list[int] = []
            for ids in encoded:
                flat += ids
                flat.append(eos_id)
            sizes = np.fromiter((len(ids) for ids in encoded), dtype=np.int64, count=len(encoded))
            expected = batch.column("n_tokens").to_numpy(zero_copy_only=False)
            if not np.array_equal(sizes, expected):
                at = int(np.flatnonzero(sizes != expected)[0])
                raise MixError(f"tokenize: a document of {source} has {sizes[at]} tokens, the mix counted "
                               f"{expected[at]}: the tokenizer is not the one the mix was counted with; run `curate "
                               "mix` again")
            np.asarray(flat, dtype=dtype).astype(np.dtype(dtype).newbyteorder("<"), copy=False).tofile(sink)
            lengths.append(sizes + 1)
    return np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)


def trace_window(tokens_dir: str | Path, seq_len: int, item: int) -> list[dict[str, Any]]:
    """The documents of item `item` of `DatatroveFolderDataset(tokens_dir, seq_len, paths_file=...)` (the
    shards in mix order, each cut into windows of seq_len + 1 tokens, a shard's rest left out, as datatrove
    reads them): each document's index row (doc_id, group, repeat, file, offset, length, ...) with the part of
    the window it fills (`window_start`, `window_end`) and where in the document that part starts (`doc_start`)."""
    folder = Path(tokens_dir)
    manifest = read_json(folder / MANIFEST)
    window = seq_len + 1
    counts = [f["tokens"] // window for f in manifest["files"]]
    starts = np.cumsum([0, *counts]).tolist()
    if not 0 <= item < starts[-1]:
        raise IndexError(f"item {item} is outside the dataset's {starts[-1]} windows")
    at = bisect.bisect_right(starts, item) - 1
    entry = manifest["files"][at]
    begin = (item - starts[at]) * window
    end = begin + window
    index = pq.read_table(folder / entry["index"])
    offsets = index.column("offset").to_numpy()
    lengths = index.column("length").to_numpy().astype(np.int64)
    hit = np.flatnonzero((offsets < end) & (offsets + lengths > begin))
    rows = index.take(pa.array(hit, pa.int64())).to_pylist()
    for row in rows:
        row["window_start"] = max(row["offset"], begin) - begin  # the part of the window it fills
        row["window_end"] = min(row["offset"] + row["length"], end) - begin
        row["doc_start"] = max(row["offset"], begin) - row["offset"]  # where in the document that part starts
    return rows
