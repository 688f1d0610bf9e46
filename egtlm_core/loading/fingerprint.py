"""Model fingerprints: a short id that changes whenever the weights do, for cache keys.

Small files are hashed whole. Large ones are hashed by size, 256 evenly spaced samples and their
modification time: samples catch a fine-tune or a merged LoRA (which change every layer) at ~1 MiB
of reads even for a 14 GB file, and the mtime catches a rewrite that samples could miss (one small
tensor). A hub model is fingerprinted by its resolved revision (the commit of the cached snapshot)
plus that snapshot's files, so states of an older revision are never served after the repo changes.
Copies made with their times kept (`cp -p`, `shutil.copytree`) keep the id; other copies only miss.
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
    """Feed name, size and content (whole, or samples plus the mtime for large files) into `h`."""
    stat = path.stat()
    size = stat.st_size
    h.update(f"{path.name}\0{size}\0".encode())
    with path.open("rb") as f:
        if size <= _FULL_HASH_LIMIT:
            h.update(f.read())
            return
        h.update(f"{stat.st_mtime_ns}\0".encode())
        for i in range(_SAMPLES):
            f.seek(i * (size - _SAMPLE_SIZE) // (_SAMPLES - 1))
            h.update(f.read(_SAMPLE_SIZE))


def fingerprint(source: ModelSource) -> str:
    """Short stable hex id of a source's weights (config, weight files, and the base for adapters)."""
    h = hashlib.sha256()
    root = Path(source.path)
    if source.kind == "hub":
        h.update(f"hub\0{source.path}".encode())
        snapshot = hub_snapshot(source.path)
        if snapshot is None:  # not downloaded (yet): the name is all there is
            return h.hexdigest()[:16]
        h.update(f"\0{snapshot.name}".encode())  # the commit hash
        root = snapshot
    if source.kind == "gguf":
        _hash_file(h, root / str(source.gguf_file))
        return h.hexdigest()[:16]
    _hash_dir(h, root)
    if source.base is not None:
        h.update(fingerprint(source.base).encode())
    return h.hexdigest()[:16]


def _hash_dir(h: hashlib._Hash, root: Path) -> None:
    for name in ("config.json", "adapter_config.json"):
        if (root / name).is_file():
            _hash_file(h, root / name)
    for p in sorted(root.iterdir()):
        if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES) and p.name != "training_args.bin":
            _hash_file(h, p)


def hub_snapshot(repo_id: str) -> Path | None:
    """The local snapshot directory (named by its commit) of a cached hub model, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found).parent if isinstance(found, str) else None
