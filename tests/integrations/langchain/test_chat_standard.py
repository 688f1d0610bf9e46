"""LangChain's standard chat-model suites for `ChatEgtLM`.

The unit suite needs no weights (construction is lazy). The integration suite runs the packaged
SmolLM2-135M-Instruct on CPU; tool calls and structured output pass because decoding is
grammar-constrained. xfails are limited to what the 135M model itself cannot do, each with the
measured rate (also in docs/guide_langchain.md).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_egtlm import ChatEgtLM
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

DOCUMENT = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is "
    "named after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889."
)


@functools.cache
def tiny_model_path() -> str:
    """A tiny random model on disk: the per-call `model=` override target (any loadable model)."""
    from tiny_models import build_tiny_model  # tests/ is on sys.path (tests/conftest.py)

    root = Path(tempfile.mkdtemp(prefix="egtlm-tiny-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return str(build_tiny_model(root / "llama"))


class _Capabilities:
    @property
    def chat_model_class(self) -> type[ChatEgtLM]:
        return ChatEgtLM

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supported_usage_metadata_details(self) -> dict[str, list[str]]:  # type: ignore[override]
        return {"invoke": ["cache_read_input"], "stream": ["cache_read_input"]}


class TestChatEgtLMUnit(_Capabilities, ChatModelUnitTests):
    pass


@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore:.*marked with '@pytest.mark.asyncio' but it is not an async function")
class TestChatEgtLMIntegration(_Capabilities, ChatModelIntegrationTests):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"max_tokens": 64}

    @property
    def model_override_value(self) -> str:
        return tiny_model_path()

    @pytest.mark.xfail(
        reason=(
            "Model ability: with tool_choice='auto' SmolLM2-135M answers in prose instead of calling "
            "the tool (0/8 prompts called a tool, 0/10 sampled runs of this test's prompt at "
            "temperature 0.7; benchmarks/langchain_tool_calling.py). Forced tool_choice always calls."
        ),
        strict=False,
    )
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_agent_loop(self, model: Any) -> None:
        super().test_agent_loop(model)

    def invoke_with_cache_read_input(self, *, stream: bool = False) -> AIMessage:
        """A prompt holding a document the model indexed: its KV states are read from the store."""
        chat = ChatEgtLM(**self.chat_model_params)
        chat.client.index([DOCUMENT])
        messages = [HumanMessage(f"Documents:\n{DOCUMENT}\n\nQuestion: Who is the tower named after?")]
        if not stream:
            return chat.invoke(messages)  # type: ignore[return-value]
        full = None
        for chunk in chat.stream(messages):
            full = chunk if full is None else full + chunk
        assert full is not None
        return full  # type: ignore[return-value]
