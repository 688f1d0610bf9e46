"""Constants the server tests share (a module on the tests path, not a conftest: several conftest
modules exist, and `from conftest import ...` could pick the wrong one in a full run)."""

from __future__ import annotations

MODEL = "tiny-egtlm"  # the model id the test servers serve
F32 = {"torch_dtype": "float32"}  # embeddings compared to in-process ones within 1e-5
