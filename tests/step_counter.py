"""A logits processor that counts decoding steps, for tests that check when generation stops."""

from __future__ import annotations

import time

import torch
from transformers import LogitsProcessor

from egtlm_core import EgtLM


class Counter(LogitsProcessor):
    """Counts decoding steps (one call per generated token) and bans EOS, so the model never ends
    on its own. `on_call(n)` runs at the n-th call, in the generating thread."""

    def __init__(self, m: EgtLM, on_call=None):
        eos = m.model.generation_config.eos_token_id
        self.eos = sorted({m.tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None})
        self.calls = 0
        self.on_call = on_call
        self.first_at: float | None = None
        self.last_at: float | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.calls += 1
        self.first_at = self.first_at or time.perf_counter()
        if self.on_call is not None:
            self.on_call(self.calls)
        self.last_at = time.perf_counter()
        scores[:, self.eos] = float("-inf")
        return scores
