"""egtlm as a sentence-transformers model: encode, save a folder, reload it, get the same vectors.

`to_sentence_transformer()` turns the packaged default model (SmolLM2-135M-Instruct, offline) into a
`SentenceTransformer` whose first module is `EgtLMEncoder`: it embeds exactly what `EgtLM.encode`
embeds (no chat-template wrapping, the instruction kept out of pooling), with the query and document
instructions saved as the "query" / "document" prompts. `save()` writes an ordinary
sentence-transformers folder that reloads with `SentenceTransformer(path, trust_remote_code=True)`
(the module class lives in this package, so sentence-transformers asks you to trust it).

Run:  python examples/sentence_transformers_save_load.py
Everything runs in float32 here so the reloaded vectors can be compared exactly (≤ 1e-5); drop the
`model_kwargs` to get the faster dtype egtlm picks for this machine.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import sentence_transformers_egtlm  # noqa: F401  (installed: pip install 'egtlm[st]')
except ImportError:  # a plain checkout: use the repository's packages
    sys.path[:0] = [str(REPO), str(REPO / "integrations")]

import numpy as np  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from sentence_transformers_egtlm import to_sentence_transformer  # noqa: E402

from egtlm_core import EgtLM  # noqa: E402

FLOAT32 = {"torch_dtype": "float32"}
DOCUMENTS = [
    "The Eiffel Tower in Paris is 330 metres tall and was completed in 1889.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.",
    "The Amazon is the largest river in the world by discharge volume.",
]
QUERIES = ["How tall is the Eiffel Tower?", "What does photosynthesis produce?"]


def main() -> None:
    lm = EgtLM(**FLOAT32)
    st = to_sentence_transformer(lm)
    print(st)
    print(f"Prompts: {st.prompts}")

    docs = st.encode_document(DOCUMENTS)
    queries = st.encode_query(QUERIES)
    scores = st.similarity(queries, docs)
    for q, row in zip(QUERIES, scores, strict=True):
        best = int(row.argmax())
        print(f"{q!r} -> {DOCUMENTS[best][:50]!r}... (cosine {float(row[best]):.3f})")
    same = np.abs(queries - lm.encode_queries(QUERIES)).max()
    print(f"encode_query vs EgtLM.encode_queries: max |difference| {same:.2e}")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "egtlm-smollm2-st"
        st.save(str(folder))
        print(f"Saved to {folder.name}/: {', '.join(sorted(p.name for p in folder.iterdir()))}")
        again = SentenceTransformer(str(folder), trust_remote_code=True, model_kwargs=FLOAT32)
        reloaded = {
            "encode": np.abs(again.encode(DOCUMENTS) - lm.encode(DOCUMENTS)).max(),
            "encode_query": np.abs(again.encode_query(QUERIES) - lm.encode_queries(QUERIES)).max(),
            "encode_document": np.abs(
                again.encode_document(DOCUMENTS) - lm.encode_documents(DOCUMENTS)
            ).max(),
        }
        for name, diff in reloaded.items():
            print(f"Reloaded {name} vs EgtLM: max |difference| {diff:.2e}")
        assert max(reloaded.values()) <= 1e-5, reloaded
        cut = again.encode(DOCUMENTS, truncate_dim=64, normalize_embeddings=True)
        print(
            f"truncate_dim=64: shape {cut.shape}, max |difference| vs EgtLM.encode(dim=64) "
            f"{np.abs(cut - lm.encode(DOCUMENTS, dim=64)).max():.2e}"
        )
    print("Reloaded vectors equal EgtLM.encode: True")


if __name__ == "__main__":
    main()
