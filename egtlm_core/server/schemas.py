"""Request and response bodies, as Pydantic models: FastAPI validates requests with them and writes
the OpenAPI document (which `schemathesis` fuzzes) from them.

The OpenAI routes declare the parameters OpenAI's API has, so a framework that sends one gets an
answer: supported ones act, unsupported ones are accepted at their neutral value and refused
otherwise (docs/guide_server.md has the table). Unknown fields are refused, as OpenAI does.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..generation.options import RECOMPUTE_TOKENS


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- embeddings ---------------------------------------------------------------------------------
class EmbeddingRequest(_Body):
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A text or a list of texts. Token-id arrays are not accepted (this server "
        "tokenizes itself)."
    )
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, description="Matryoshka: the leading dimensions.")
    user: str | None = None
    input_type: Literal["query", "document"] | None = Field(
        default=None,
        description="egtlm: embed with the query or the document instruction (default: document).",
    )


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


# --- chat completions ---------------------------------------------------------------------------
class ContentPart(_Body):
    type: Literal["text"]
    text: str


class FunctionCall(_Body):
    name: str
    arguments: str = "{}"


class ToolCallIn(_Body):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None


class FunctionSpec(_Body):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Body):
    type: Literal["function"] = "function"
    function: FunctionSpec


class NamedFunction(_Body):
    name: str


class NamedToolChoice(_Body):
    type: Literal["function"] = "function"
    function: NamedFunction


class JsonSchemaSpec(_Body):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


class StreamOptions(_Body):
    include_usage: bool = False
    include_obfuscation: bool | None = None


class ChatRequest(_Body):
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    n: int | None = Field(default=None, ge=1, le=1, description="Only one choice is generated.")
    seed: int | None = None
    user: str | None = None
    frequency_penalty: float | None = Field(default=None, ge=0, le=0, description="Not supported: 0 only.")
    presence_penalty: float | None = Field(default=None, ge=0, le=0, description="Not supported: 0 only.")
    logprobs: bool | None = Field(default=None, description="Not supported: false only.")
    top_logprobs: int | None = Field(default=None, ge=0, le=0)
    logit_bias: dict[str, float] | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = None
    modalities: list[Literal["text"]] | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int] | None = None


class ChatResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: Usage
    egtlm: dict[str, Any] | None = None


# --- egtlm: documents, retrieval, answers --------------------------------------------------------
class DocumentIn(_Body):
    text: str = Field(min_length=1)
    id: str | None = Field(default=None, min_length=1, max_length=256)
    metadata: dict[str, Any] | None = None


class DocumentsRequest(_Body):
    documents: list[DocumentIn] = Field(min_length=1)


class DocumentOut(BaseModel):
    id: str
    text: str
    metadata: dict[str, Any]


class DocumentRef(BaseModel):
    id: str
    object: Literal["document"] = "document"
    tokens: int


class DocumentsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[DocumentRef]
    total: int = Field(description="Documents the server holds after this call.")


class DocumentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DocumentOut]
    total: int


class DeletedDocument(BaseModel):
    id: str
    object: Literal["document"] = "document"
    deleted: bool = True


class RetrieveRequest(_Body):
    query: str = Field(min_length=1)
    k: int = Field(default=4, ge=1, le=100)


class ScoredOut(BaseModel):
    id: str
    text: str
    metadata: dict[str, Any]
    score: float


class RetrieveResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[ScoredOut]


class AnswerRequest(_Body):
    question: str = Field(min_length=1)
    k: int = Field(default=4, ge=1, le=20)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0, le=2)
    stop: str | list[str] | None = None
    stream: bool = False
    recompute_tokens: int = Field(default=RECOMPUTE_TOKENS, ge=0, le=256)


class AnswerResponse(BaseModel):
    object: Literal["answer"] = "answer"
    answer: str
    documents: list[ScoredOut]
    finish_reason: str
    usage: Usage
    egtlm: dict[str, Any]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "egtlm"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
