"""Indexing on a local Ray cluster (2 CPUs, 2 actors) equals `EgtLM.index` in-process: the same
vectors and the same stored states; a stopped run resumes without duplicates."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import torch

from egtlm_core import EgtLM, MemoryTier, RedisTier
from egtlm_core.scale import RayIndexOptions, index_on_ray

ray = pytest.importorskip("ray")
pytest.importorskip("redis")

WORDS = "capital river mountain city harbour museum bridge forest island valley desert lake".split()
DOCS = [
    {"id": f"p{i}", "text": f"Passage {i}: the {WORDS[i % 12]} near {WORDS[(i * 7) % 12]} number {i}.",
     "metadata": {"n": i}}
    for i in range(200)
]  # fmt: skip


def test_ray_indexing_equals_in_process_indexing(ray_cluster, redis_url, tiny_llama_dir):
    prefix = f"test:{uuid.uuid4().hex}:"
    options = RayIndexOptions(
        model=str(tiny_llama_dir), settings={"torch_dtype": "float32"}, redis_url=redis_url,
        redis_prefix=prefix, actors=2, batch_size=16,
    )  # fmt: skip
    got = {}
    for batch in index_on_ray(DOCS, options):
        for doc_id, vector, meta in zip(batch.ids, batch.vectors, batch.metadatas, strict=True):
            assert doc_id not in got
            got[doc_id] = (vector, meta)
    assert set(got) == {d["id"] for d in DOCS}
    local_store = MemoryTier()
    local = EgtLM(str(tiny_llama_dir), torch_dtype="float32", cache_store=local_store)
    local.index([d["text"] for d in DOCS], [d["id"] for d in DOCS])
    want = dict(zip(local.documents.ids, local.documents.vectors, strict=True))
    for doc_id, (vector, meta) in got.items():
        np.testing.assert_allclose(vector, want[doc_id], atol=1e-5)
        assert meta == {"n": int(doc_id[1:])}
    # the states the actors stored in Redis are the ones the in-process index stored
    shared = RedisTier(redis_url, prefix=prefix)
    keys = local.document_cache.capture([d["text"] for d in DOCS[:20]])  # already stored: just keys
    for key in keys:
        remote, mine = shared.get(key), local_store.get(key)
        assert remote is not None and mine is not None
        assert torch.equal(remote.token_ids, mine.token_ids)
        for a, b in zip([*remote.keys, *remote.values], [*mine.keys, *mine.values], strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_a_stopped_run_resumes_without_duplicates(ray_cluster, tiny_llama_dir):
    options = RayIndexOptions(model=str(tiny_llama_dir), settings={"torch_dtype": "float32"}, batch_size=25)
    done: dict[str, np.ndarray] = {}
    for batch in index_on_ray(DOCS[:120], options):  # "killed" after the first 120 were stored
        done.update(zip(batch.ids, batch.vectors, strict=True))
    resumed = [i for b in index_on_ray(DOCS, options, done=done) for i in b.ids]
    assert sorted(resumed) == sorted(d["id"] for d in DOCS[120:])  # only the rest, each once
    with pytest.raises(ValueError, match="non-empty string 'text'"):
        next(index_on_ray([{"id": "x", "text": " "}], options))


def test_egtlm_index_on_ray_then_ask_reuses_the_states_from_redis(tiny_llama_dir, redis_url, tmp_path):
    """The CLI: `egtlm index PATH --ray --redis URL` (a local cluster), then `egtlm ask --redis URL`
    in another process answers from the states the actors stored; indexing again adds nothing."""
    import os
    import subprocess
    import sys

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "france.md").write_text(
        "# France\n\nParis is the capital of France.\n\nLyon is on the Rhone.\n"
    )
    (corpus / "germany.txt").write_text("Berlin is the capital of Germany.")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--model", str(tiny_llama_dir), "--dtype", "float32", "--index-file", str(tmp_path / "i.json")]
    common += ["--redis", redis_url]

    def egtlm(*args: str) -> subprocess.CompletedProcess:
        cli = [sys.executable, "-m", "egtlm_core.cli.main"]
        return subprocess.run([*cli, *args], env=env, capture_output=True, text=True, timeout=300)

    indexed = egtlm("index", str(corpus), "--ray", "--actors", "1", *common)
    assert indexed.returncode == 0, indexed.stderr[-2000:]
    assert "Indexed 2 new chunks on Ray (2 in" in indexed.stderr
    asked = egtlm("ask", "What is the capital of France?", "-k", "1", "--max-new-tokens", "4", *common)
    assert asked.returncode == 0, asked.stderr[-2000:]
    assert int(asked.stderr.split("Documents used (")[1].split(" ")[0]) > 0  # reused from Redis
    again = egtlm("index", str(corpus), "--ray", "--actors", "1", *common)
    assert again.returncode == 0 and "Indexed 0 new chunks on Ray (2 in" in again.stderr
