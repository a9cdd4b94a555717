"""Build a tiny random-weight Llama-architecture model folder that vLLM can serve, without any download.

Its answers are noise by design: it exists so the tests and the demo run the real serving stack (vLLM's
OpenAI server, chat template, tokenizer, structured outputs) on a CPU machine with no model hub. Point
the pipeline at a real Llama for real labels (see docs/llm.md).
"""

from __future__ import annotations

import glob
import json
import os
import sysconfig
from pathlib import Path

SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|eot_id|>", "<|pad|>"]

# The Llama 3 instruct chat layout: a header per turn, <|eot_id|> closes each turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

# vLLM's CPU attention supports head sizes 32, 64, 80, 96, ...: hidden 128 / 4 heads = 32.
# 8192 positions: this tokenizer, trained on Python sources, spends ~3 characters per token on English and
# ~1 per byte on CJK, so a 1,500-character page plus the instructions can take 1,000-5,000 tokens.
MODEL_SHAPE = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=8192)


def _training_files(limit: int = 200) -> list[str]:
    """Local text to train the tokenizer on: the standard library's own sources (always installed), plus
    its English language reference (pydoc_data/topics.py) for some prose."""
    stdlib = sysconfig.get_paths()["stdlib"]
    files = sorted(glob.glob(os.path.join(stdlib, "*.py")))[:limit]
    files += glob.glob(os.path.join(stdlib, "pydoc_data", "topics.py"))
    if not files:
        raise RuntimeError("no local text found to train the tokenizer on (the stdlib sources are missing)")
    return files


def build_tokenizer(vocab_size: int = 8192):
    """A byte-level BPE (any byte sequence encodes) trained locally, wrapped as a HF fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train(_training_files(), trainer)
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<|pad|>",
        model_max_length=MODEL_SHAPE["max_position_embeddings"],
    )
    hf_tokenizer.chat_template = CHAT_TEMPLATE
    return hf_tokenizer


def build_tiny_model(out_dir: str | Path, *, vocab_size: int = 8192, seed: int = 0) -> Path:
    """Write tokenizer + config + random bf16 weights to `out_dir` (~3 MB) and return it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab_size)
    tokenizer.save_pretrained(out)
    # vLLM reads the chat template from tokenizer_config.json; newer transformers write it to a separate
    # chat_template.jinja, so put it where every reader finds it.
    config_path = out / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text())
    tokenizer_config["chat_template"] = CHAT_TEMPLATE
    config_path.write_text(json.dumps(tokenizer_config, indent=2))

    config = LlamaConfig(
        vocab_size=len(tokenizer), rms_norm_eps=1e-5, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, dtype="bfloat16", **MODEL_SHAPE,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    return out


def is_model_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / "config.json").exists() and (path / "tokenizer_config.json").exists() and any(
        path.glob("*.safetensors"))
