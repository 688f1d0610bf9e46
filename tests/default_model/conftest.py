from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def default_lm():
    """The packaged default model (SmolLM2-135M-Instruct), converted once into the user cache."""
    from egtlm_core import EgtLM

    return EgtLM()
