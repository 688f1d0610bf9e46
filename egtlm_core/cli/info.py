"""`egtlm info`: versions, the device and dtype "auto" picks and why, the default model's status."""

from __future__ import annotations

import argparse
import json
import platform
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..loading import default_model
from .options import (
    load_model,
)

if TYPE_CHECKING:
    import torch

    from ..model import EgtLM


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "info",
        parents=parents,
        help="versions, device, dtype, default model",
        description="Show versions, the device and dtype 'auto' picks, the default model's "
        "cache and, with --model or --load, the loaded model's shape.",
    )
    p.add_argument(
        "--load",
        action="store_true",
        help="load the model (the packaged default without --model; converts it on first use)",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_info)


def auto_dtype_report(device: torch.device) -> tuple[torch.dtype, str]:
    """The dtype "auto" resolves to on `device`, and why."""
    from ..loading import devices

    dtype = devices.resolve_dtype("auto", device)
    if device.type == "cuda":
        return dtype, "bfloat16 is always used on CUDA"
    return dtype, devices.cpu_auto_dtype_and_reason()[1]


def default_model_status() -> dict[str, Any]:
    """Where the packaged default model is cached and whether it is converted (never downloads)."""
    target = default_model.default_model_dir()
    return {
        "name": default_model.DEFAULT_MODEL_NAME,
        "package": f"{default_model.DEFAULT_PACKAGE}=={default_model.DEFAULT_VERSION}",
        "path": str(target),
        "converted": default_model.is_default_model_ready(),
    }


def describe_model(m: EgtLM) -> dict[str, Any]:
    """The loaded model's shape and settings."""
    cfg = m.model.config.get_text_config()
    return {
        "source": m.source.cache_id(),
        "architecture": type(m.model).__name__,
        "model_type": cfg.model_type,
        "layers": cfg.num_hidden_layers,
        "hidden_size": cfg.hidden_size,
        "embedding_dim": m.embedding_dim,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": getattr(cfg, "max_position_embeddings", None),
        "chat_template": bool(getattr(m.tokenizer, "chat_template", None)),
        "parameters": sum(p.numel() for p in m.model.parameters()),
        "dtype": str(m.dtype).removeprefix("torch."),
        "device": str(m.device),
        "pooling": m.config.pooling,
        "attention": m.config.attention,
    }


def gather_info(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import transformers

    from ..loading import devices

    device = devices.resolve_device(args.device)
    dtype, reason = auto_dtype_report(device)
    info: dict[str, Any] = {
        "egtlm": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "auto_dtype": str(dtype).removeprefix("torch."),
        "auto_dtype_reason": reason,
        "default_model": default_model_status(),
    }
    if args.model is not None or args.load:
        info["model"] = describe_model(load_model(args, mode="unified"))
    return info


def format_info(info: dict[str, Any]) -> str:
    d = info["default_model"]
    state = "converted" if d["converted"] else f"not converted yet (the first use fetches {d['package']})"
    lines = [
        f"egtlm {info['egtlm']}, torch {info['torch']}, transformers {info['transformers']}, "
        f"python {info['python']}",
        f"device: {info['device']}",
        f"dtype 'auto': {info['auto_dtype']} ({info['auto_dtype_reason']})",
        f"default model: {d['name']} at {d['path']}: {state}",
    ]
    if "model" in info:
        m = info["model"]
        lines.append(f"model: {m.pop('source')}")
        m["parameters"] = f"{m['parameters']:,}"
        m["chat_template"] = "yes" if m["chat_template"] else "no"
        lines += [f"  {key.replace('_', ' ')}: {value}" for key, value in m.items()]
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    info = gather_info(args)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0
