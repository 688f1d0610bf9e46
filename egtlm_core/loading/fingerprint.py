"""Model fingerprints: a short id that changes whenever the weights do, for cache keys.

Equal files give an equal id in any process or copy; a fine-tune, a merged LoRA or a changed
adapter gives another, so stored KV states of old weights are never served for new ones.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sources import ModelSource

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
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


def fingerprint(source: ModelSource) -> str:
    """Short stable hex id of a source's weights (config, weight files, and the base for adapters)."""
    h = hashlib.sha256()
    if source.kind == "hub":
        h.update(f"hub\0{source.path}".encode())
        return h.hexdigest()[:16]
    root = Path(source.path)
    if source.kind == "gguf":
        _hash_file(h, root / str(source.gguf_file))
        return h.hexdigest()[:16]
    for name in ("config.json", "adapter_config.json"):
        if (root / name).is_file():
            _hash_file(h, root / name)
    for p in sorted(root.iterdir()):
        if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES) and p.name != "training_args.bin":
            _hash_file(h, p)
    if source.base is not None:
        h.update(fingerprint(source.base).encode())
    return h.hexdigest()[:16]
