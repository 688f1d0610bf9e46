"""The value types of the KV cache store: a frozen key and the per-document entry.

A key names everything that changes the stored states (model, tokenizer, dtype, attention mode at
capture, RoPE settings, the prompt prefix, the text), so a hit can never return states computed
under different conditions. Its string form is a content hash, stable across processes, which the
disk tier uses as the file name.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

CAPTURES: tuple[str, ...] = ("causal", "bidirectional")


def sha256_text(text: str) -> str:
    """Hex sha256 of `text` encoded as UTF-8 (the `CacheKey.text` field)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """Identifies one document's captured KV states.

    Attributes:
        model: Fingerprint of the model weights/config.
        tokenizer: Fingerprint of the tokenizer.
        dtype: Compute dtype the states were captured in, e.g. "float32" or "bfloat16".
        capture: Attention mode of the capturing pass: "causal" or "bidirectional".
        rope: Fingerprint of the RoPE configuration (theta, scaling).
        prefix: Hash of the fixed prompt prefix the document was captured after.
        text: Hex sha256 of the document text.
        attention: The attention kernel the states were computed with (e.g. "sdpa", "eager").
        storage: How the store keeps them: "native" or "int8" (a store that quantizes never shares
            entries with one that does not).

    Example:
        >>> key = CacheKey.for_text("Paris is in France.", model="m", tokenizer="t", dtype="float32",
        ...                         capture="causal", rope="r", prefix="p")
        >>> len(key.to_string())
        64
    """

    model: str
    tokenizer: str
    dtype: str
    capture: str
    rope: str
    prefix: str
    text: str
    attention: str = "default"
    storage: str = "native"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, str):
                raise TypeError(f"CacheKey.{f.name} must be a str, got {type(value).__name__}: {value!r}.")
        if self.capture not in CAPTURES:
            raise ValueError(f"Unknown capture {self.capture!r}; expected one of {CAPTURES}.")

    def to_dict(self) -> dict[str, str]:
        """The fields as a plain dict (what the disk tier writes into file metadata)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CacheKey:
        """Inverse of `to_dict`; raises on missing or extra fields."""
        return cls(**data)

    def to_string(self) -> str:
        """A stable, filename-safe identifier: hex sha256 over all fields.

        Fields are serialised as sorted JSON, so field boundaries are unambiguous and the result is
        the same in every process and Python version (no reliance on `hash()`).
        """
        payload = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    @classmethod
    def for_text(cls, text: str, **fields: str) -> CacheKey:
        """Build a key for the document `text`, hashing it; `fields` gives the other attributes."""
        return cls(text=sha256_text(text), **fields)


@dataclass
class KVEntry:
    """The KV states of one document, one tensor pair per layer, without a batch dimension.

    Entries held by a store are shared and read-only by contract: copy (`clone`) before changing
    them, e.g. before handing them to `generate`, which mutates its cache in place.

    Attributes:
        keys: One tensor per layer, shaped [kv_heads, seq, head_dim].
        values: Same shapes as `keys`.
        token_ids: [seq] int64, the tokens the states belong to.
        position_offset: Position of `token_ids[0]` when the states were captured (for RoPE
            re-rotation).
        meta: Free-form small strings.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    token_ids: torch.Tensor
    position_offset: int = 0
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return int(self.token_ids.shape[0])

    @property
    def num_layers(self) -> int:
        return len(self.keys)

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the stored states (all layers share it; see `validate`)."""
        return self.keys[0].dtype

    @property
    def nbytes(self) -> int:
        """Bytes of keys + values as held in memory (token ids not counted)."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def clone(self) -> KVEntry:
        """A deep copy whose tensors share no storage with this entry."""
        return KVEntry(
            keys=[k.detach().clone() for k in self.keys],
            values=[v.detach().clone() for v in self.values],
            token_ids=self.token_ids.detach().clone(),
            position_offset=self.position_offset,
            meta=dict(self.meta),
        )

    def validate(self) -> None:
        """Check shapes and types agree; raises ValueError naming the first inconsistency."""
        if not isinstance(self.token_ids, torch.Tensor) or self.token_ids.dim() != 1:
            raise ValueError(f"token_ids must be a 1-D tensor, got {_describe(self.token_ids)}.")
        if self.token_ids.dtype != torch.int64:
            raise ValueError(f"token_ids must be int64, got {self.token_ids.dtype}.")
        if len(self.keys) != len(self.values):
            raise ValueError(f"{len(self.keys)} key layers but {len(self.values)} value layers.")
        if not self.keys:
            raise ValueError("An entry needs at least one layer.")
        if isinstance(self.position_offset, bool) or not isinstance(self.position_offset, int):
            raise ValueError(f"position_offset must be an int, got {self.position_offset!r}.")
        if self.position_offset < 0:
            raise ValueError(f"position_offset must be >= 0, got {self.position_offset}.")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.meta.items()):
            raise ValueError(f"meta must map str to str, got {self.meta!r}.")
        dtype = self.keys[0].dtype if isinstance(self.keys[0], torch.Tensor) else None
        for i, (k, v) in enumerate(zip(self.keys, self.values, strict=True)):
            self._validate_layer(i, k, v, dtype)

    def _validate_layer(self, i: int, k: Any, v: Any, dtype: torch.dtype | None) -> None:
        for name, t in (("keys", k), ("values", v)):
            if not isinstance(t, torch.Tensor) or t.dim() != 3:
                raise ValueError(f"{name}[{i}] must be [kv_heads, seq, head_dim], got {_describe(t)}.")
            if not t.is_floating_point():
                raise ValueError(f"{name}[{i}] must be floating point, got {t.dtype}.")
            if t.dtype != dtype:
                raise ValueError(f"{name}[{i}] has dtype {t.dtype}; all layers must share {dtype}.")
        if k.shape != v.shape:
            raise ValueError(f"Layer {i}: keys {tuple(k.shape)} and values {tuple(v.shape)} differ.")
        if k.shape[1] != self.num_tokens:
            raise ValueError(f"Layer {i} holds {k.shape[1]} positions but token_ids has {self.num_tokens}.")


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)}"
    return type(value).__name__
