"""A standard LangChain RAG chain over Chroma, where the chat model reuses the documents' KV states.

The chain is the usual LCEL one; only the classes are egtlm's:

    {"context": retriever | format_docs, "question": RunnablePassthrough()} | prompt | ChatEgtLM

`EgtLMCacheRetriever.add_texts` embeds the documents into Chroma and stores their KV states; the
chat model finds the retrieved documents in its prompt and splices those states instead of reading
the documents again. Everything runs offline on the packaged default model (SmolLM2-135M-Instruct),
with Chroma persisted in a temporary directory.

Run:  python examples/langchain_rag_chroma.py            (built-in texts, or XQuAD if it is there)
      python examples/langchain_rag_chroma.py --builtin  (always the built-in texts)
      python examples/langchain_rag_chroma.py --k 4      (four documents per question)

With k = 1 the document's states are exact (captured after this chain's own prompt head), so the
answer equals the one prefilling the whole prompt (in float32 always; in bf16 almost always, as one
long prefill and a split one can round differently). With k > 1 the later documents are approximate:
they never attended to the ones before them (docs/shared_cache.md). Timings on a machine shared with
other jobs jump around; benchmarks/langchain_rag.py measures them properly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import langchain_egtlm  # noqa: F401  (installed: pip install 'egtlm[langchain,chroma]')
except ImportError:  # a plain checkout: use the repository's packages
    sys.path[:0] = [str(REPO), str(REPO / "integrations")]

import chromadb  # noqa: E402
from langchain_chroma import Chroma  # noqa: E402
from langchain_core.output_parsers import StrOutputParser  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.runnables import RunnablePassthrough  # noqa: E402
from langchain_egtlm import ChatEgtLM, EgtLMCacheRetriever, EgtLMEmbeddings  # noqa: E402

BUILTIN = {  # document: a question it answers
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is "
    "named after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to "
    "1889 as the centerpiece of the 1889 World's Fair. It is 330 metres tall.": (
        "How tall is the Eiffel Tower?"
    ),
    "The Great Wall of China is a series of fortifications built across the historical northern borders "
    "of ancient Chinese states. The best-known sections were built by the Ming dynasty (1368-1644).": (
        "Which dynasty built the best-known sections of the Great Wall?"
    ),
    "Photosynthesis is the process by which green plants use sunlight to synthesize foods from carbon "
    "dioxide and water. It generates oxygen as a by-product.": (
        "What does photosynthesis produce as a by-product?"
    ),
    "The Amazon River in South America is the largest river by discharge volume of water in the world. "
    "It flows through Brazil, Peru and Colombia into the Atlantic Ocean.": (
        "Into which ocean does the Amazon flow?"
    ),
}
# XQuAD paragraphs whose first question the 135M model answers (see tests/integrations/langchain).
XQUAD_QUESTIONS = [
    "What year did Tesla die? ",
    "What was the name of the leader ennobled by Henry III",
    "Who lost to the Broncos in the divisional round?",
    "What instrument is used to examine steam engine performance?",
]

PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer the question using only the context. Be brief."),
        ("human", "Context:\n{context}\n\nQuestion: {question}"),
    ]
)


def format_docs(docs) -> str:
    return "\n\n".join(doc.page_content for doc in docs)


def corpus(builtin: bool) -> tuple[list[str], list[str]]:
    """(documents, questions): four XQuAD paragraphs plus two distractors, or the built-in texts."""
    data = Path(os.environ.get("EGTLM_DATA_DIR", REPO.parent / "shared" / "data")) / "xquad" / "xquad.en.json"
    if builtin or not data.is_file():
        return list(BUILTIN), list(BUILTIN.values())
    articles = json.loads(data.read_text(encoding="utf-8"))["data"]
    by_question = {q["question"]: p["context"] for a in articles for p in a["paragraphs"] for q in p["qas"]}
    docs = [by_question[q] for q in XQUAD_QUESTIONS]
    docs += [a["paragraphs"][0]["context"] for a in articles[-2:]]
    return docs, XQUAD_QUESTIONS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--builtin", action="store_true", help="use the built-in texts, not XQuAD")
    parser.add_argument("--k", type=int, default=1, help="documents per question (try 4)")
    args = parser.parse_args()
    documents, questions = corpus(args.builtin)

    with tempfile.TemporaryDirectory() as tmp:
        store = Chroma(
            "egtlm-example",
            embedding_function=EgtLMEmbeddings(),
            client=chromadb.PersistentClient(path=tmp),
        )
        # prompt=PROMPT: capture the states right after this prompt's text before {context}, so the
        # first retrieved document's states are exactly what reading it in this prompt computes.
        retriever = EgtLMCacheRetriever(vectorstore=store, k=args.k, prompt=PROMPT)
        retriever.add_texts(documents)
        print(f"Indexed {len(documents)} documents into Chroma ({tmp}) and stored their KV states.\n")

        setup = {"context": retriever | format_docs, "question": RunnablePassthrough()}
        with_reuse = setup | PROMPT | ChatEgtLM(max_tokens=48)
        without = setup | PROMPT | ChatEgtLM(max_tokens=48, reuse_cache=False)
        answer_only = with_reuse | StrOutputParser()  # the usual chain end: just the text

        for question in questions:
            message = with_reuse.invoke(question)
            baseline = without.invoke(question)
            s, b = message.response_metadata["egtlm"], baseline.response_metadata["egtlm"]
            print(f"Q: {question.strip()}")
            print(f"A: {message.content}")
            print(
                f"   reused {s['reused_tokens']} prompt tokens, prefilled {s['prefilled_tokens']}; "
                f"document slots: {s.get('exact_slots')} exact, {s.get('approximate_slots')} approximate; "
                f"misses {s.get('misses')}"
            )
            print(
                f"   time to first token {s['ttft_s'] * 1e3:.0f} ms with reuse vs "
                f"{b['ttft_s'] * 1e3:.0f} ms prefilling all {b['prefilled_tokens']} tokens; "
                f"same answer: {message.content == baseline.content}\n"
            )
        print("StrOutputParser chain:", answer_only.invoke(questions[0]))


if __name__ == "__main__":
    main()
