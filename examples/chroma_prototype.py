"""A Chroma collection embedded by egtlm, reopened by name, and answered from by the same model.

1. `EgtLMEmbeddingFunction()` (the packaged SmolLM2-135M-Instruct, offline; nothing loads until the
   first embed) embeds documents with the document instruction and queries with the query one.
2. The collection persists the function's config; a fresh client opens the collection *without*
   passing a function and Chroma rebuilds the same one ("egtlm" is registered on import).
3. The model that embedded the documents also answers from the retrieved one (`EgtLM.answer`):
   one copy of the weights, and the document's KV states are reused for the second question.

Run:  python examples/chroma_prototype.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import chromadb_egtlm  # noqa: F401  (installed: pip install 'egtlm[chroma]')
except ImportError:  # a plain checkout: use the repository's packages
    sys.path[:0] = [str(REPO), str(REPO / "integrations")]

import chromadb  # noqa: E402
from chromadb.config import Settings  # noqa: E402
from chromadb_egtlm import EgtLMEmbeddingFunction  # noqa: E402

from egtlm_core.loading.registry import loaded_models  # noqa: E402

DOCUMENTS = {
    "eiffel": "The Eiffel Tower is a wrought-iron lattice tower in Paris, France. It was built from 1887 "
    "to 1889 for the World's Fair and is 330 metres tall.",
    "wall": "The Great Wall of China is a series of fortifications across northern China. The "
    "best-known sections were built by the Ming dynasty.",
    "photosynthesis": "Photosynthesis is the process by which green plants use sunlight to make food "
    "from carbon dioxide and water. It releases oxygen as a by-product.",
    "amazon": "The Amazon River in South America is the largest river in the world by discharge volume. "
    "It flows into the Atlantic Ocean.",
}
QUESTIONS = ["How tall is the Eiffel Tower?", "What gas do plants release during photosynthesis?"]
SETTINGS = Settings(anonymized_telemetry=False)


def main() -> None:
    with tempfile.TemporaryDirectory() as path:
        ef = EgtLMEmbeddingFunction()
        client = chromadb.PersistentClient(path=path, settings=SETTINGS)
        docs = client.create_collection("egtlm-docs", embedding_function=ef)
        docs.add(ids=list(DOCUMENTS), documents=list(DOCUMENTS.values()))
        print(f"Indexed {docs.count()} documents; space {docs.configuration_json['hnsw']['space']}")

        reopened = chromadb.PersistentClient(path=path, settings=SETTINGS).get_collection("egtlm-docs")
        stored = reopened.configuration_json["embedding_function"]
        print(f"Reopened without an embedding function; Chroma rebuilt {stored['name']!r}")
        print(f"  from the stored config {stored['config']}")

        found = reopened.query(query_texts=QUESTIONS, n_results=1)
        lm = ef.client  # the EgtLM that embedded the documents (and the rebuilt function shares it)
        for question, ids, distances in zip(QUESTIONS, found["ids"], found["distances"], strict=True):
            print(f"{question!r} -> {ids[0]} (cosine distance {distances[0]:.3f})")
            for attempt in ("first", "again"):
                result = lm.answer(question, documents=[DOCUMENTS[ids[0]]], max_new_tokens=24)
                print(
                    f"  answer ({attempt}): {result.text.strip()!r}  reused {result.reused_tokens} "
                    f"tokens, prefilled {result.prefilled_tokens}, time to first token {result.ttft_s:.3f} s"
                )
        print(f"Models in memory: {len(loaded_models())} ({lm!r})")


if __name__ == "__main__":
    main()
