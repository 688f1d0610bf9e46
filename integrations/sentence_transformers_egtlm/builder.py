"""`to_sentence_transformer`: an `EgtLM` as a `SentenceTransformer` with its query/document prompts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Normalize

from egtlm_core import EgtLM
from egtlm_core.adapter_kit import shared_lm

from .encoder import EgtLMEncoder, instruction_prompts


def to_sentence_transformer(
    model: EgtLM | str | os.PathLike | None = None,
    *,
    mode: str = "unified",
    model_kwargs: Mapping[str, Any] | None = None,
    truncate_dim: int | None = None,
    **config: Any,
) -> SentenceTransformer:
    """A `SentenceTransformer` that embeds what `EgtLM.encode` embeds, on the same (shared) weights.

    `encode_query` / `encode_document` use the model's query and document sides, saved as the
    "query" / "document" prompts; plain `encode` uses the "document" prompt by default
    (`default_prompt_name`), so it equals `EgtLM.encode`: the model's symmetric side. `save()` writes a
    folder that reloads with `SentenceTransformer(path, trust_remote_code=True)`.

    Args:
        model: an `EgtLM`, a path / hub id, or None for the packaged default model.
        mode: `EgtLM` mode when loading ("unified" shares the weights with a chat model).
        model_kwargs: loading arguments for `EgtLM` (torch_dtype, device, ...).
        truncate_dim: Matryoshka dimension for every encode (sentence-transformers truncates after
            normalising; pass `normalize_embeddings=True` for unit vectors).
        **config: `EgtLMConfig` settings (pooling, attention, query_instruction, prompt_format, ...).

    Example:
        >>> from sentence_transformers_egtlm import to_sentence_transformer
        >>> st = to_sentence_transformer()  # the packaged SmolLM2-135M-Instruct, offline
        >>> st.encode_query(["What is the capital of France?"]).shape
        (1, 576)
        >>> st.save("egtlm-st")  # SentenceTransformer("egtlm-st", trust_remote_code=True)
    """
    if isinstance(model, EgtLM):
        if config or model_kwargs:
            raise ValueError("model is an EgtLM instance; set its settings on that EgtLM instead.")
        lm = model
    else:
        lm = shared_lm(model, mode=mode, model_kwargs=model_kwargs, config=config)
    prompts = instruction_prompts(lm)
    modules: list[Any] = [EgtLMEncoder(lm)]
    if lm.config.normalize:
        modules.append(Normalize())
    return SentenceTransformer(
        modules=modules,
        prompts=prompts,
        default_prompt_name="document",  # plain `encode` is `EgtLM.encode`: the symmetric side
        similarity_fn_name="cosine",
        device=str(lm.device),  # where the shared weights already are: never move them for other users
        truncate_dim=truncate_dim,
    )
