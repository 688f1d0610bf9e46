"""One client session against a Chroma store, run as its own process by the tests.

  python chroma_session.py write --path DIR|--http HOST:PORT --name N --model M   # create, add, query
  python chroma_session.py query --path DIR|--http HOST:PORT --name N             # reopen, query

`write` builds the collection with `EgtLMEmbeddingFunction`; `query` opens it without passing one, so
Chroma must rebuild the function from the collection's stored config. Both print one JSON line.
"""

from __future__ import annotations

import argparse
import json

import chromadb
import chromadb_egtlm  # noqa: F401  (registers "egtlm" with Chroma: what a reopening process needs)
import torch
from chromadb.config import Settings

from egtlm_core.loading.registry import loaded_models

DOCS = {
    "fox": "The quick brown fox jumps over the lazy dog.",
    "paris": "Paris is the capital of France. Berlin is the capital of Germany.",
    "cat": "A cat sat on the mat while the dog slept by the fire.",
    "rag": "Retrieval augmented generation reads documents before answering questions.",
}
QUERIES = ["What is the capital of France?", "Which animal jumps over the dog?"]


def client(args: argparse.Namespace) -> chromadb.api.ClientAPI:
    settings = Settings(anonymized_telemetry=False)
    if args.http:
        host, port = args.http.rsplit(":", 1)
        return chromadb.HttpClient(host=host, port=int(port), settings=settings)
    return chromadb.PersistentClient(path=args.path, settings=settings)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["write", "query"])
    parser.add_argument("--path")
    parser.add_argument("--http")
    parser.add_argument("--name", required=True)
    parser.add_argument("--model")
    args = parser.parse_args()
    torch.set_num_threads(1)
    db = client(args)
    if args.action == "write":
        from chromadb_egtlm import EgtLMEmbeddingFunction

        ef = EgtLMEmbeddingFunction(args.model, model_kwargs={"torch_dtype": "float32"})
        collection = db.create_collection(args.name, embedding_function=ef)
        collection.add(ids=list(DOCS), documents=list(DOCS.values()))
    else:
        collection = db.get_collection(args.name)
    found = collection.query(query_texts=QUERIES, n_results=3)
    ef_config = collection.configuration_json["embedding_function"]
    rebuilt = collection.configuration["embedding_function"]  # what Chroma builds from the stored config
    print(
        json.dumps(
            {
                "ids": found["ids"],
                "distances": found["distances"],
                "embedding_function": ef_config,
                "dimension": len(collection.get(ids=["fox"], include=["embeddings"])["embeddings"][0]),
                "rebuilt": type(rebuilt).__name__,
                "rebuilt_source": rebuilt.client.source.path,
                "loaded": sorted(m.source.path for m in loaded_models()),
            }
        )
    )


if __name__ == "__main__":
    main()
