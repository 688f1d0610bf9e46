"""What the shared cache may keep and serve: no conversation text on disk, honest slot reports, keys that
follow the weights, the kernel and the storage format."""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import torch
from rag_fixtures import DOCS, QUESTION, load
from safetensors.torch import load_file, save_file

from egtlm_core import RECOMPUTE_TOKENS
from egtlm_core.cache import DiskTier, MemoryTier, TieredStore
from egtlm_core.rag.matching import plan_from_prompt

LONG = [d * 2 for d in DOCS]  # at least 16 tokens each, so chat matches them


def _disk_store(path: Path, int8: bool = False) -> tuple[TieredStore, DiskTier]:
    disk = DiskTier(path, int8=int8)
    return TieredStore([MemoryTier(), disk]), disk


def _chat_prompt(head: str, docs: list[str]) -> list[dict[str, str]]:
    return [{"role": "user", "content": head + "\n" + "\n\n".join(docs) + "\n\nQuestion: " + QUESTION}]


def test_a_conversation_head_stays_in_ram_and_a_registered_head_is_persisted(tiny_llama_dir, tmp_path):
    store, disk = _disk_store(tmp_path / "kv")
    m = load(tiny_llama_dir, store)
    m.index(LONG[2:])  # captured after the default head
    m._rag.store_states(LONG[:1], prefix="<|user|>\nRegistered head:\n")  # as a retriever's prompt= does
    m._rag.remember(LONG[:2])  # handed out by a retriever
    secret = "My bank PIN is 4921, and here is what I read:"
    result = m.chat(_chat_prompt(secret, LONG[:2]), max_new_tokens=2, reuse_cache=True)
    assert result.reuse.reused_tokens > 0
    rendered = m._rag.render_prompt(_chat_prompt(secret, LONG[:2]))
    plan = plan_from_prompt(m.tokenizer, rendered, m._rag.known_documents())
    prefix = plan.prefix
    assert prefix is not None and secret in (prefix.text or "")
    assert not disk.contains(m._rag.reuser.key(prefix, None))  # the conversation's head: RAM only
    assert m._rag.reuser.ram.contains(m._rag.reuser.key(prefix, None))
    files = b"".join(p.read_bytes() for p in disk.directory.rglob("*.safetensors"))
    secret_ids = m.tokenizer(" 4921", add_special_tokens=False)["input_ids"]
    assert secret.encode() not in files and torch.tensor(secret_ids).numpy().tobytes() not in files
    registered = m._rag.prefix_segment("<|user|>\nRegistered head:\n")
    assert disk.contains(m._rag.reuser.key(registered, None))  # a registered head is persisted
    assert disk.contains(m._rag.reuser.key(m._rag.default_prefix(), None))  # so is the default one


def test_only_handed_out_documents_are_spliced_in_chat(tiny_llama_dir, tmp_path):
    m = load(shutil.copytree(tiny_llama_dir, tmp_path / "own"))  # its own weights: nothing handed out yet
    m.index(LONG)  # indexed, never handed out
    messages = _chat_prompt("Context:", LONG[:2])
    assert m.chat(messages, max_new_tokens=2, reuse_cache=True).reuse.reused_tokens == 0
    m._rag.remember(LONG[:1])
    again = m.chat(messages, max_new_tokens=2, reuse_cache=True)
    spliced = [d["tokens"] for d in again.reuse.documents[1:]]  # entry 0 is the prompt head
    assert spliced == [len(m.tokenizer(LONG[0], add_special_tokens=False)["input_ids"])]
    assert again.reuse.slots == ["approximate"]  # indexed under the default head, not this one


def test_slots_report_what_is_exact_and_what_is_approximate(tiny_llama_dir):
    m = load(tiny_llama_dir)
    result = m.answer(QUESTION, documents=LONG, max_new_tokens=2, recompute_tokens=0)
    s = result.reuse
    assert (s.exact_slots, s.approximate_slots, s.recomputed_tokens) == (1, 2, 0)
    assert s.misses == 4 and s.hits == 0  # prefix + 3 documents, first call
    again = m.answer(QUESTION, documents=LONG, max_new_tokens=2, recompute_tokens=3)
    s = again.reuse
    assert (s.hits, s.approximate_hits, s.other_prefix_hits) == (4, 2, 0)
    assert (s.exact_slots, s.approximate_slots, s.recomputed_tokens) == (1, 2, 6)  # 3 per approximate slot
    assert s.summary()["approximate_slots"] == 2
    # Captured under the default head, a chain with its own head gets every slot approximate.
    m._rag.remember(LONG)
    chat = m.chat(_chat_prompt("Context:", LONG), max_new_tokens=2, reuse_cache=True).reuse
    assert chat.exact_slots == 0 and chat.approximate_slots == 3 and chat.other_prefix_hits == 3
    # ... and, approximate, each gets its first RECOMPUTE_TOKENS tokens recomputed by default
    heads = [min(RECOMPUTE_TOKENS, len(m.tokenizer(t, add_special_tokens=False)["input_ids"])) for t in LONG]
    assert [d["recomputed"] for d in chat.documents[1:]] == heads


def test_bidirectional_capture_is_never_exact(tiny_llama_dir):
    m = load(tiny_llama_dir, attention="bidirectional", cache_capture="reuse")
    assert m.answer(QUESTION, documents=LONG[:2], max_new_tokens=2).reuse.exact_slots == 0


def test_changed_weights_never_hit_old_entries(tiny_llama_dir, tmp_path):
    model_dir = shutil.copytree(tiny_llama_dir, tmp_path / "model")
    kv = tmp_path / "kv"
    first = load(model_dir, _disk_store(kv)[0])
    first.index(LONG)
    assert first.answer(QUESTION, documents=LONG, max_new_tokens=2).reuse.misses == 0
    del first
    gc.collect()  # the registry holds models weakly: the next load reads the changed file
    weights = model_dir / "model.safetensors"
    tensors = load_file(weights)
    name = next(k for k in tensors if k.endswith("norm.weight"))
    tensors[name] = tensors[name] + 0.5
    save_file(tensors, weights, metadata={"format": "pt"})
    second = load(model_dir, _disk_store(kv)[0])
    result = second.answer(QUESTION, documents=LONG, max_new_tokens=2)
    assert result.reuse.hits == 0 and result.reuse.misses == 4


def test_keys_name_the_kernel_and_the_storage_format(tiny_llama_dir, tmp_path):
    native = load(tiny_llama_dir, _disk_store(tmp_path / "a")[0])
    int8 = load(tiny_llama_dir, _disk_store(tmp_path / "b", int8=True)[0])
    eager = load(tiny_llama_dir, MemoryTier(), attn_implementation="eager")
    keys = [x._rag.cache_keys(LONG[:1])[0] for x in (native, int8, eager)]
    assert (keys[0].storage, keys[1].storage, keys[2].storage) == ("native", "int8", "native")
    assert keys[0].attention != keys[2].attention == "eager"
    assert len({k.to_string() for k in keys}) == 3


def test_plain_chat_never_builds_the_store(tiny_llama_dir, tmp_path, monkeypatch):
    # A read-only home must not break chat without documents: the default store is built lazily.
    monkeypatch.setenv("EGTLM_CACHE_DIR", str(tmp_path / "cache"))
    from egtlm_core import EgtLM

    m = EgtLM(str(tiny_llama_dir), torch_dtype="float32")
    assert m.chat([{"role": "user", "content": "hi"}], max_new_tokens=2, reuse_cache=True).text is not None
    assert not (tmp_path / "cache").exists()
    assert m._rag._store is None and m._rag._reuser is None
