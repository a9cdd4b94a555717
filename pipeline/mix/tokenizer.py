"""The target tokenizer of the mix: which file it is, its fingerprint, its end-of-document token, counting.

`mix.tokenizer` is a `tokenizer.json` (Hugging Face `tokenizers` format) or a folder holding one; unset, the
served model's tokenizer (`pipeline.llm.tokens.resolve_tokenizer`: the demo's tiny model). Its sha256 is the
fingerprint the counts are cached under. Texts are encoded with no special token added; the mix adds exactly
one end-of-document token per document.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import RunConfig
from pipeline.io import RunLayout, file_digest
from pipeline.llm.tokens import token_ids
from pipeline.mix.allocate import MixError

# end-of-document tokens looked for, after <|end_of_text|> (Llama 3's) and the tokenizer's own eos_token
EOS_CANDIDATES = ("</s>", "<|endoftext|>", "<eos>", "<|eot_id|>")


@dataclass(frozen=True)
class TargetTokenizer:
    """A tokenizer file and its sha256."""

    path: str
    sha256: str

    @property
    def name(self) -> str:
        file = Path(self.path)
        return file.parent.name if file.name == "tokenizer.json" else file.name

    def load(self):
        from tokenizers import Tokenizer

        return Tokenizer.from_file(self.path)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "name": self.name}


def tokenizer_file(source: str | Path, key: str = "mix.tokenizer") -> Path:
    """The tokenizer.json a path names (the file, or a folder holding one); MixError when it names none."""
    path = Path(source)
    if path.is_dir():
        if not (path / "tokenizer.json").is_file():
            raise MixError(f"{key}: {path} is a folder without tokenizer.json: not a tokenizer (give a tokenizer.json "
                           "or a model folder holding one)")
        return path / "tokenizer.json"
    if not path.is_file():
        raise MixError(f"{key}: {path} does not exist (give a tokenizer.json or a model folder holding one)")
    return path


def resolve(cfg: RunConfig) -> TargetTokenizer:
    """The mix's tokenizer, checked to load."""
    source = cfg.mix.tokenizer
    if source is None:
        from pipeline.llm.tokens import resolve_tokenizer

        source = resolve_tokenizer(cfg)
        demo_model = Path(cfg.llm.tiny_model_dir or RunLayout(cfg.out).root / "tiny-llama")
        if source is None and (demo_model / "tokenizer.json").is_file():
            source = str(demo_model)  # the run's own model: the demo's tiny one (`curate mix --out runs/demo`)
        if source is None and (cfg.llm.serve_tiny_model or cfg.llm.model == "tiny-llama"):
            # the demo's model, built where the demo builds it (a run that reuses a classifier has not built it,
            # nor one pointed at another server of the tiny model with --llm-url)
            from pipeline.llm.tiny_model import build_tiny_model

            source = str(build_tiny_model(demo_model))
        if source is None:
            raise MixError("mix.tokenizer is not set and the run has no local model tokenizer to fall back on: set "
                           "mix.tokenizer to the tokenizer.json (or the model folder) of the model you will train")
    file = tokenizer_file(source)
    target = TargetTokenizer(str(file.resolve()), file_digest(file).hexdigest())
    try:
        target.load()
    except Exception as exc:  # noqa: BLE001 (tokenizers raises plain Exception on a file it cannot parse)
        raise MixError(f"mix.tokenizer: {file} is not a tokenizer ({type(exc).__name__}: {str(exc)[:200]})") from None
    return target


encode = token_ids  # the project's one encoding (pipeline.llm.tokens)


def count(tokenizer, texts: list[str], batch_size: int = 1000) -> np.ndarray:
    """Tokens of each text (no special token), as int32, a batch at a time."""
    out = np.zeros(len(texts), dtype=np.int32)
    for start in range(0, len(texts), batch_size):
        batch = texts[start:start + batch_size]
        out[start:start + len(batch)] = [len(ids) for ids in token_ids(tokenizer, batch)]
    return out


def _configured_eos(file: Path) -> str | None:
    config = file.with_name("tokenizer_config.json")
    if file.name != "tokenizer.json" or not config.is_file():
        return None
    try:
        value = json.loads(config.read_text()).get("eos_token")
    except (OSError, ValueError):
        return None
    return value.get("content") if isinstance(value, dict) else value


def end_of_document(tokenizer, file: str | Path, configured: str | None = None) -> tuple[str, int]:
    """(token, id) put after every document: `configured` (tokenize.eos_token), else <|end_of_text|> (the
    Llama 3 pretraining convention), else the tokenizer's own eos_token, else a usual one the vocabulary has."""
    if configured is not None:
        token_id = tokenizer.token_to_id(configured)
        if token_id is None:
            raise MixError(f"tokenize.eos_token: {configured!r} is not in the vocabulary of {file}")
        return configured, token_id
    candidates = ["<|end_of_text|>", _configured_eos(Path(file)), *EOS_CANDIDATES]
    for token in candidates:
        if token and tokenizer.token_to_id(token) is not None:
            return token, tokenizer.token_to_id(token)
    raise MixError(f"the tokenizer {file} has none of the usual end-of-document tokens ({', '.join(EOS_CANDIDATES)}): "
                   "set tokenize.eos_token to the one the model was trained with")


def vocab_size(tokenizer) -> int:
    return tokenizer.get_vocab_size(with_added_tokens=True)
