"""What a user typed -> a `ModelSource`: the packaged default, a directory, a .gguf, a hub id, an adapter.

Resolving loads nothing (cheap, so framework adapters can build objects eagerly); `loader.py` loads
and `fingerprint.py` identifies the weights for cache keys.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .default_model import ensure_default_model
from .fingerprint import fingerprint

PACKAGED_ADAPTER = Path(__file__).resolve().parents[1] / "adapters" / "smollm2-grit"
BASE_MODEL_NAMES = ("egtlm:base", "SmolLM2-135M-Instruct")  # the untrained default, by name
DEFAULT_BASE = "egtlm:default"  # an adapter's base_model_name_or_path meaning the packaged default
SETTINGS_FILE = "egtlm_config.json"  # EgtLM settings saved beside trained weights
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


@dataclass(frozen=True)
class ModelSource:
    """A resolved model location; nothing is loaded until `loader.load_model_and_tokenizer`."""

    kind: Literal["default", "local", "gguf", "hub", "peft"]
    path: str  # local directory (default/local/gguf/peft) or hub id
    gguf_file: str | None = None  # file name inside `path` for kind "gguf"
    base: ModelSource | None = None  # for "peft": the base model's source

    def fingerprint(self) -> str:
        """Short stable hex id of the weights: equal files give an equal id, in any process or copy."""
        return fingerprint(self)

    def cache_id(self) -> str:
        """Stable key for registries: kind plus absolute path or hub id (plus the base, for adapters)."""
        cid = f"{self.kind}:{self.path}" + (f"/{self.gguf_file}" if self.gguf_file else "")
        return cid + (f"+{self.base.cache_id()}" if self.base is not None else "")


def default_source(cache_dir: str | os.PathLike | None = None) -> ModelSource:
    """What `EgtLM()` loads: the base with the packaged adapter (if shipped), else the base."""
    base = ModelSource("default", str(ensure_default_model(cache_dir)))
    if (PACKAGED_ADAPTER / "adapter_config.json").is_file() and not os.environ.get("EGTLM_BASE_DEFAULT"):
        return ModelSource("peft", str(PACKAGED_ADAPTER), base=base)
    return base


def _looks_like_hub_id(s: str) -> bool:
    return bool(_HUB_ID.match(s)) and ".." not in s and not s.endswith(".gguf")


def resolve_source(
    name_or_path: str | os.PathLike | None,
    *,
    base: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> ModelSource:
    """Classify `name_or_path`; None means the packaged default (converted on first use, ~20 s once).

    The packaged default is SmolLM2-135M-Instruct with egtlm's trained adapter when the package ships
    one (`egtlm_core/adapters/`); `BASE_MODEL_NAMES` name the untrained base. `base` overrides the
    base model named in an adapter's adapter_config.json.
    """
    if name_or_path is None:
        return default_source(cache_dir)
    text = os.fspath(name_or_path)
    if text in BASE_MODEL_NAMES:
        return ModelSource("default", str(ensure_default_model(cache_dir)))
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
        if base == DEFAULT_BASE:  # trained on the packaged default model: portable across machines
            return ModelSource("default", str(ensure_default_model(cache_dir)))
        if not Path(base).expanduser().exists() and (adapter / base).exists():
            base = str(adapter / base)  # a base path saved relative to the adapter
    return resolve_source(base, cache_dir=cache_dir)


def saved_settings(source: ModelSource) -> dict[str, Any]:
    """The EgtLM settings a trained model was saved with (`egtlm_config.json`), or {}.

    `egtlm train` writes them beside the weights so that `EgtLM(output_dir)` embeds exactly as
    training did (pooling, attention, instructions); arguments given to `EgtLM` still win.
    """
    if source.kind == "hub":
        return {}
    path = Path(source.path) / SETTINGS_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object of EgtLM settings.")
    return {k: v for k, v in data.items() if k != "trained_with"}
