"""`EgtLMEncoder`: the first module of a SentenceTransformer, embedding exactly as `EgtLM.encode` does.

sentence-transformers' own `Transformer` module wraps plain text in a chat template when the tokenizer
has one (SmolLM2's adds a system prompt: about 3x the tokens) and pools with its own code. This
module instead calls egtlm's core for every step: `EgtLM.embedding_inputs` (encode's tokenization:
the ST prompt is the instruction, its tokens found from offsets and kept out of pooling; the EOS
suffix where `encode` appends one), `pad_batch`, `forward_states` (our own
causal or bidirectional mask) and `pool` (masked by content), so `model.encode_query(q)` equals
`EgtLM.encode_queries(q)`. Normalisation is sentence-transformers' `Normalize` module after it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

try:
    from sentence_transformers.base.modules import InputModule
except ImportError as err:  # pragma: no cover - the extra is missing
    raise ImportError(
        "sentence_transformers_egtlm needs sentence-transformers: pip install 'egtlm[st]'"
    ) from err

from egtlm_core import EgtLM, EgtLMConfig, format_instruction
from egtlm_core.adapter_kit import check_texts, forward_states, pad_batch, pool, shared_lm, warn_truncated

# The EgtLMConfig fields that decide what a text embeds to (`EgtLMConfig.VECTOR_FIELDS`), saved with
# the module so a reloaded folder embeds as the saved one did. max_length is left out: it is ST's own
# `max_seq_length` here, saved under that name.
_SETTINGS = tuple(name for name in EgtLMConfig.VECTOR_FIELDS if name != "max_length")


class EgtLMEncoder(InputModule):
    """Tokenize, run and pool like `EgtLM.encode`: features in, `token_embeddings` and
    `sentence_embedding` out.

    Build a whole SentenceTransformer with `to_sentence_transformer`; use this class directly to
    stack your own modules after it.

    Args:
        model: an `EgtLM` (its settings are used), a local path / hub id, or None for the packaged
            default model. A path loads through egtlm's shared registry: one copy of the weights.
        mode: `EgtLM` mode when loading from a path: "unified" (default; a chat model on the same
            weights shares them) or "embedding" (no LM head).
        model_kwargs: loading arguments for `EgtLM` (torch_dtype, device, attn_implementation, ...).
        max_seq_length: token limit per text, instruction included (None: the model's max_length).
        **settings: the `EgtLMConfig` settings that decide the vectors, `EgtLMConfig.VECTOR_FIELDS`
            but max_length (pooling, attention, normalize, embed_eos, prompt_format,
            prompt_template, query_instruction, document_instruction, document_context; None: the
            model's default), all saved with the module. The instructions are also the
            SentenceTransformer's prompts (`to_sentence_transformer`). With document_context="rag"
            (the shipped default adapter's), the "document" prompt embeds a text after the RAG
            head, as `EgtLM.encode_documents` does.
    """

    config_file_name = "egtlm_encoder.json"
    config_keys = ["mode", *_SETTINGS, "max_seq_length"]
    save_in_root = True

    def __init__(
        self,
        model: EgtLM | str | os.PathLike | None = None,
        *,
        mode: str = "unified",
        model_kwargs: Mapping[str, Any] | None = None,
        max_seq_length: int | None = None,
        **settings: Any,
    ) -> None:
        super().__init__()
        unknown = sorted(set(settings) - set(_SETTINGS))
        if unknown:
            raise TypeError(f"EgtLMEncoder got unknown settings {unknown}; it takes {list(_SETTINGS)}.")
        self.lm = lm = _resolve_lm(
            model, mode, model_kwargs, {k: v for k, v in settings.items() if v is not None}
        )
        self.mode = lm.config.mode
        for name in _SETTINGS:
            setattr(self, name, getattr(lm.config, name))
        self.max_seq_length = lm.config.max_length if max_seq_length is None else int(max_seq_length)
        if self.max_seq_length < 2:
            raise ValueError(f"max_seq_length must be an integer ≥ 2, got {max_seq_length!r}.")
        # The settings object `EgtLM.encode` itself runs with (body, pad id, padding side, pooling,
        # attention), so this module cannot drift from `encode`.
        self._pass = lm.embedding_pass()
        self._document_prompt = instruction_prompts(lm)["document"]
        self.tokenizer = lm.tokenizer
        # Registered, so sentence-transformers sees the weights (device, dtype, training, `.to`).
        self.model = self._pass.body

    # --- sentence-transformers' module API -------------------------------------------------------
    def preprocess(
        self, inputs: Sequence[Any], prompt: str | None = None, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """Texts -> input_ids, attention_mask, content_mask (1 on the pooled, non-prompt tokens).

        The prompt is the embedding instruction: it takes part in attention, not in pooling.
        """
        texts, _ = check_texts(list(inputs))  # the core's check: same messages as EgtLM.encode
        if prompt == self._document_prompt and self.document_context == "rag":
            items = self.lm.document_inputs(texts, self.max_seq_length)  # after the RAG head
        else:
            items = self.lm.embedding_inputs(texts, prompt or "", self.max_seq_length)
        warn_truncated(items, self.max_seq_length)
        ids, attention, content = pad_batch(
            items, self._pass.pad_id, self._pass.padding_side, torch.device("cpu")
        )
        return {"input_ids": ids, "attention_mask": attention, "content_mask": content}

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        attention = features["attention_mask"]
        hidden, _ = forward_states(
            self.model, features["input_ids"], attention, causal=self._pass.causal, use_cache=False
        )
        features["token_embeddings"] = hidden
        features["sentence_embedding"] = pool(hidden, attention, features["content_mask"], self._pass.pooling)
        return features

    def get_embedding_dimension(self) -> int:
        return int(self.model.config.hidden_size)

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        """Weights (the causal LM in unified mode, so the folder also loads as a chat `EgtLM`),
        tokenizer and this module's settings."""
        if self.lm.source.kind == "gguf":
            raise ValueError(
                "A model loaded from a .gguf file cannot be saved by transformers; load the converted "
                "checkpoint (e.g. the default model's cache dir) and save that."
            )
        self.lm.model.save_pretrained(output_path, safe_serialization=safe_serialization)
        self.save_tokenizer(output_path)
        self.save_config(output_path)

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        init_defaults: dict[str, Any] | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> EgtLMEncoder:
        """Rebuild from a saved folder; `SentenceTransformer(path, model_kwargs=...)` passes loading
        arguments (e.g. {"torch_dtype": "float32"}) through to `EgtLM`. As in sentence-transformers'
        own modules, `init_defaults` fills only the settings the saved config leaves out."""
        config = cls.load_config(
            model_name_or_path, subfolder=subfolder, token=token, cache_folder=cache_folder,
            revision=revision, local_files_only=local_files_only,
        )  # fmt: skip
        path = cls.load_dir_path(
            model_name_or_path, subfolder=subfolder, token=token, cache_folder=cache_folder,
            revision=revision, local_files_only=local_files_only,
        )  # fmt: skip
        if path is None or not (Path(path) / "config.json").is_file():
            raise FileNotFoundError(f"No saved EgtLMEncoder weights (config.json) in {model_name_or_path!r}.")
        for key, value in (init_defaults or {}).items():
            config.setdefault(key, value)
        config = {k: v for k, v in config.items() if k in cls.config_keys}
        return cls(path, model_kwargs=dict(model_kwargs or {}), **config)

    def __repr__(self) -> str:
        return f"EgtLMEncoder({self.lm!r}, max_seq_length={self.max_seq_length})"


def instruction_prompts(lm: EgtLM) -> dict[str, str]:
    """The model's query and document instructions, formatted: a SentenceTransformer's prompts."""
    c = lm.config
    return {
        "query": format_instruction(c.query_instruction, c.prompt_format, c.prompt_template),
        "document": format_instruction(c.document_instruction, c.prompt_format, c.prompt_template),
    }


def _resolve_lm(
    model: EgtLM | str | os.PathLike | None, mode: str, model_kwargs: Mapping[str, Any] | None, settings: dict
) -> EgtLM:
    """The given `EgtLM`, or the process-wide one for these settings (one copy of the weights)."""
    if not isinstance(model, EgtLM):
        return shared_lm(model, mode=mode, model_kwargs=model_kwargs, config=settings)
    if settings or model_kwargs:
        raise ValueError(
            "model is an EgtLM instance; set pooling, attention etc. on that EgtLM instead, "
            f"got {sorted(settings) + sorted(model_kwargs or {})}."
        )
    return model
