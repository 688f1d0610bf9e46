"""The core's asyncio bridge (`egtlm_core.generation.async_bridge`), under the name this package used."""

from __future__ import annotations

from egtlm_core.adapter_kit import iterate_in_thread, run_in_thread

__all__ = ["iterate_in_thread", "run_in_thread"]
