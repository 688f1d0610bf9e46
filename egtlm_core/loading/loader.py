"""Load a resolved `ModelSource`: weights in eval mode on a device and dtype, plus the tokenizer.

LoRA adapters are merged into their base, so the rest of egtlm sees one plain transformers model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .sources import ModelSource

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


def load_model_and_tokenizer(
    source: ModelSource,
    *,
    with_lm_head: bool,
    dtype: torch.dtype | str,
    device: str | torch.device,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    local_files_only: bool | None = None,
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """Load weights (eval mode, on `device`, in `dtype`) and the tokenizer; pad token falls back to eos.

    `with_lm_head=False` gives the bare transformer (embedding only), which saves the LM head's memory.
    """
    kw: dict = {"trust_remote_code": trust_remote_code}
    if local_files_only is not None:
        kw["local_files_only"] = local_files_only
    if source.kind == "peft":
        model, tok = _load_peft(source, with_lm_head, dtype, attn_implementation, kw)
    else:
        model, tok = _load_plain(source, with_lm_head, dtype, attn_implementation, kw)
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.pad_token_id is None and tok.pad_token_id is not None:
        gen.pad_token_id = tok.pad_token_id  # silences generate()'s "Setting pad_token_id" warning
    if attn_implementation is None:  # our default kernel; an explicit choice is kept as given
        from ..modeling.kernels import use_egtlm_kernel

        use_egtlm_kernel(model)
    model.eval()
    return model.to(device), tok


def _load_plain(
    source: ModelSource, with_lm_head: bool, dtype: torch.dtype | str, attn: str | None, kw: dict
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    if source.gguf_file:
        kw = {**kw, "gguf_file": source.gguf_file}
    model_kw: dict[str, Any] = {"dtype": dtype} | ({"attn_implementation": attn} if attn else {})
    cls = AutoModelForCausalLM if with_lm_head else AutoModel
    if source.kind != "hub":
        tok = AutoTokenizer.from_pretrained(source.path, **kw)
        return cls.from_pretrained(source.path, **kw, **model_kw), tok
    # Cache first: an online check while offline retries for ~45 s before falling back to the cache.
    tries = [kw] if "local_files_only" in kw else [{**kw, "local_files_only": True}, kw]
    for i, tkw in enumerate(tries):
        # transformers 5.24 drops local_files_only when it probes for an adapter_config.json
        offline = bool(tkw.get("local_files_only"))
        ad: dict[str, Any] = {"adapter_kwargs": {"local_files_only": True}} if offline else {}
        try:
            tok = AutoTokenizer.from_pretrained(source.path, **tkw)
            return cls.from_pretrained(source.path, **tkw, **model_kw, **ad), tok
        except OSError as e:  # huggingface_hub errors (offline, not found, HTTP) are OSErrors too
            if i + 1 == len(tries):
                why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise OSError(
                    f"Cannot download '{source.path}' (offline or not cached): {why}"
                    " Pass a local model directory or a .gguf file, or call EgtLM() for the packaged default."
                ) from e
            logger.info("'%s' is not in the local hub cache; downloading it", source.path)
    raise AssertionError("unreachable")


MERGED_MARKER = "egtlm_merged.json"  # written last: a merged folder without it is incomplete


def _merged_dir(source: ModelSource, dtype: torch.dtype | str) -> Path | None:
    """Where base + adapter, merged in `dtype`, are kept so later loads skip peft and the merge
    (~1.4 s of a ~1.8 s load of the default model); None when `EGTLM_MERGED_CACHE=0`."""
    if os.environ.get("EGTLM_MERGED_CACHE", "1") == "0":
        return None
    from .default_model import cache_root

    return cache_root() / "merged" / f"{source.fingerprint()}-{str(dtype).removeprefix('torch.')}"


def _load_merged(
    folder: Path, with_lm_head: bool, dtype: torch.dtype | str, attn: str | None, kw: dict
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase] | None:
    """The merged copy if it is complete (every file at its recorded size), else None; a copy that
    fails to load is deleted, so the caller merges again instead of serving damaged weights."""
    marker = folder / MERGED_MARKER
    if not marker.is_file():
        return None
    try:
        sizes = json.loads(marker.read_text(encoding="utf-8"))["sizes"]
        if any((folder / name).stat().st_size != size for name, size in sizes.items()):
            raise ValueError("a file's size differs from the one recorded")
        return _load_plain(ModelSource("local", str(folder)), with_lm_head, dtype, attn, kw)
    except Exception as e:  # noqa: BLE001 - any damage means: merge again
        logger.warning("The merged copy in %s is damaged (%s); merging the adapter again.", folder, e)
        shutil.rmtree(folder, ignore_errors=True)
        return None


def _save_merged(model: Any, tok: Any, folder: Path) -> None:
    """Write the merged model beside the final folder and rename it into place (readers of the
    folder see a complete copy or none); a failure to write only costs the next load the merge."""
    tmp = folder.with_name(f"{folder.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        sizes = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
        (tmp / MERGED_MARKER).write_text(json.dumps({"sizes": sizes}), encoding="utf-8")
        os.replace(tmp, folder)
    except OSError as e:  # no space, read-only cache, or another process renamed first
        logger.info("Merged copy not kept in %s: %s", folder, e)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_peft(
    source: ModelSource, with_lm_head: bool, dtype: torch.dtype | str, attn: str | None, kw: dict
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """Base model + LoRA adapter, merged, so the rest of egtlm sees one plain transformers model.
    The merged weights are kept in the cache (`_merged_dir`) and read from there next time."""
    folder = _merged_dir(source, dtype)
    if folder is not None and (merged := _load_merged(folder, with_lm_head, dtype, attn, kw)) is not None:
        return merged
    try:
        from peft import PeftModel
    except ImportError as e:
        raise ImportError(f"Loading the adapter '{source.path}' needs peft: pip install 'egtlm[peft]'") from e
    from transformers import AutoTokenizer

    assert source.base is not None, "a peft ModelSource needs its base"
    model: Any  # a transformers PreTrainedModel (has .base_model)
    model, tok = load_model_and_tokenizer(
        source.base, with_lm_head=True, dtype=dtype, device="cpu", attn_implementation=attn, **kw
    )
    target = model.base_model if _adapter_fits_body(Path(source.path), model) else model
    PeftModel.from_pretrained(target, source.path).merge_and_unload()
    if (Path(source.path) / "tokenizer_config.json").is_file():  # an adapter saved with its tokenizer wins
        tok = AutoTokenizer.from_pretrained(source.path, **kw)
    if folder is not None:
        _save_merged(model, tok, folder)
    return (model if with_lm_head else model.base_model), tok


def _adapter_fits_body(adapter: Path, model: Any) -> bool:
    """Whether the adapter was made on the bare transformer (e.g. FEATURE_EXTRACTION), not the causal LM.

    Applied to the wrong one, peft only warns and the adapter silently does nothing; so read its keys.
    """
    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():
        cfg = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
        return cfg.get("task_type") == "FEATURE_EXTRACTION"
    from safetensors import safe_open

    with safe_open(weights, "pt") as f:
        heads = {k.removeprefix("base_model.model.").split(".")[0] for k in f.keys()}
    outer = {n for n, _ in model.named_children()}
    inner = {n for n, _ in model.base_model.named_children()}
    return bool(heads) and heads <= inner and not heads & outer
