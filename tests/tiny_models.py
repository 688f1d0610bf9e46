"""Tiny random models with a real (trained-on-the-spot) byte-level BPE tokenizer, saved to disk.

Tests load them through the public API exactly as users load real checkpoints, with no hub.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "A cat sat on the mat while the dog slept by the fire.",
    "Retrieval augmented generation reads documents before answering questions.",
    "<|user|>\nRetrieve passages that answer the question\n<|embed|>\n",
    "Instruct: Given a question, retrieve passages\nQuery: what is a fox?",
    "Numbers like 12345 and words like don't, can't and it's.",
] * 20

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

ARCHITECTURES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
}


def build_tokenizer(add_bos: bool = True, pad_token: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on CORPUS; `pad_token=False` leaves the pad token unset, as many
    decoder checkpoints ship."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
    pad = {"pad_token": "<pad>"} if pad_token else {}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", **pad)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    directory: Path, arch: str = "llama", seed: int = 0, pad_token: bool = True, **overrides
) -> Path:
    """Save a random tiny `arch` model + tokenizer to `directory` and return it."""
    tokenizer = build_tokenizer(pad_token=pad_token)
    config_cls, model_cls = ARCHITECTURES[arch]
    settings = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    settings.update(overrides)
    torch.manual_seed(seed)
    model = model_cls(config_cls(**settings))
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
