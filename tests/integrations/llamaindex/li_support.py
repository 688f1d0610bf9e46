"""What the LlamaIndex tests share: float32 loading and a Chroma-backed `VectorStoreIndex`."""

from __future__ import annotations

from pathlib import Path

import chromadb
from chromadb.config import Settings
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.vector_stores.chroma import ChromaVectorStore

FLOAT32 = {"torch_dtype": "float32"}


def chroma_index(path: Path, texts: list[str], embed_model, name: str = "docs") -> VectorStoreIndex:
    """A `VectorStoreIndex` over a Chroma `PersistentClient` collection at `path`, as users build one."""
    client = chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))
    store = ChromaVectorStore(chroma_collection=client.get_or_create_collection(name))
    context = StorageContext.from_defaults(vector_store=store)
    return VectorStoreIndex.from_documents(
        [Document(text=t) for t in texts], storage_context=context, embed_model=embed_model
    )
