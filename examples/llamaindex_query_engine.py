"""A standard LlamaIndex query engine over Chroma where one model embeds, retrieves and answers, and
the retrieved nodes' KV states (stored at indexing) are spliced instead of prefilled.

    index = VectorStoreIndex.from_documents(docs, storage_context=<Chroma>, embed_model=EgtLMEmbedding())
    engine = index.as_query_engine(llm=llm, similarity_top_k=2, response_synthesizer=EgtLMSynthesizer(llm))

`EgtLMSynthesizer` is the one egtlm class in the engine: it hands the retrieved nodes to the model
and stores their states after the text-QA template's head (so the first node's slot is exact);
`response.metadata["egtlm"]` says what was reused. The same engine with `reuse_cache=False`
prefills the whole prompt, for comparison. Everything runs offline on the packaged default model.

Run:  python examples/llamaindex_query_engine.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import llama_index.llms.egtlm  # noqa: F401  (installed: pip install 'egtlm[llamaindex]')
except ImportError:  # a plain checkout: use the repository's packages
    sys.path[:0] = [str(REPO), str(REPO / "integrations")]

import chromadb  # noqa: E402
from chromadb.config import Settings  # noqa: E402
from llama_index.core import Document, StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.embeddings.egtlm import EgtLMEmbedding  # noqa: E402
from llama_index.llms.egtlm import EgtLMLLM  # noqa: E402
from llama_index.response_synthesizers.egtlm import EgtLMSynthesizer  # noqa: E402
from llama_index.vector_stores.chroma import ChromaVectorStore  # noqa: E402

from egtlm_core.loading.registry import loaded_models  # noqa: E402

DOCUMENTS = [
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, France. It was built from 1887 to 1889 "
    "for the World's Fair and is 330 metres tall.",
    "The Great Wall of China is a series of fortifications across northern China. The best-known "
    "sections were built by the Ming dynasty.",
    "Photosynthesis is the process by which green plants use sunlight to make food from carbon dioxide "
    "and water. It releases oxygen as a by-product.",
    "The Amazon River in South America is the largest river in the world by discharge volume. It flows "
    "into the Atlantic Ocean.",
]
QUESTIONS = ["How tall is the Eiffel Tower?", "What gas do plants release during photosynthesis?"]


def show(label: str, response) -> None:
    report = response.metadata["egtlm"]
    print(
        f"  {label}: {str(response).strip()!r}\n    reused {report['reused_tokens']} tokens, prefilled "
        f"{report['prefilled_tokens']}, exact slots {report.get('exact_slots', 0)}, approximate "
        f"{report.get('approximate_slots', 0)}, time to first token {report['ttft_s']:.3f} s"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as path:
        client = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))
        store = ChromaVectorStore(chroma_collection=client.get_or_create_collection("egtlm-docs"))
        index = VectorStoreIndex.from_documents(
            [Document(text=t) for t in DOCUMENTS],
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=EgtLMEmbedding(),  # the packaged SmolLM2-135M-Instruct, offline
        )
        llm = EgtLMLLM(max_new_tokens=32)
        synth = EgtLMSynthesizer(llm)
        keys = synth.store_states(DOCUMENTS)  # at indexing: states after the text-QA template's head
        print(f"Indexed {len(DOCUMENTS)} documents in Chroma; stored their KV states ({len(keys)} entries)")

        engine = index.as_query_engine(llm=llm, similarity_top_k=2, response_synthesizer=synth)
        full_llm = EgtLMLLM(max_new_tokens=32, reuse_cache=False)
        full = index.as_query_engine(
            llm=full_llm, similarity_top_k=2, response_synthesizer=EgtLMSynthesizer(full_llm)
        )
        for question in QUESTIONS:
            print(f"{question!r}")
            show("reuse", engine.query(question))
            show("full prefill", full.query(question))
        show("aquery", asyncio.run(engine.aquery(QUESTIONS[0])))
        print(f"Models in memory: {len(loaded_models())} (embedder and both LLMs share it)")


if __name__ == "__main__":
    main()
