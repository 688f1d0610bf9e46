"""The GPU check: TTFT full prefill vs reuse at k = 5 / 10 / 20, decode tokens/s and encode throughput.

Timing needs no trained weights: the model is random, shaped like a 7B Llama (32 layers, hidden
4096, 32 heads, MLP 11008) with the packaged default model's tokenizer, built on the device and
saved once to a temporary folder, then loaded through the public API (`EgtLM(path, device=...)`).
Every number comes from `EgtLM.answer` (reuse on / off), `EgtLM.chat` and `EgtLM.encode`, the calls
a user makes. Meant to run in <= 8 minutes on one GPU:

    python benchmarks/gpu_check.py                       # CUDA, 7B shape, bf16
    python benchmarks/gpu_check.py --size tiny --device cpu --repeats 1   # a smoke run anywhere

Prints one table and writes JSON (`--json`); docs/benchmarks/gpu_check.md records the runs made.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ensure_repo_on_path, machine_facts, text_table  # noqa: E402

ensure_repo_on_path()

import torch  # noqa: E402

from egtlm_core import EgtLM, default_model_dir  # noqa: E402

SHAPES = {
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
}
WORDS = (
    "river mountain station engine protein library voltage harbour festival theorem orchard copper "
    "senate glacier algorithm cathedral vaccine lantern satellite meadow"
).split()


def passage(i: int, words: int = 220) -> str:
    """A deterministic ~300-token paragraph (timing only: the model is random)."""
    return " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(words)) + "."


def build_model(
    folder: Path, size: str, device: str, dtype: torch.dtype, tokenizer_from: str | None = None
) -> Path:
    """A random model of `size` with the default model's tokenizer (or `tokenizer_from`'s), saved as a
    checkpoint."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from or default_model_dir())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=8192,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **SHAPES[size],
    )
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(before)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    return folder


def median_s(fn: Any, repeats: int) -> float:
    """Median wall time of `fn` (after one untimed warm-up call), synchronising the GPU."""
    fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(args: argparse.Namespace) -> dict[str, Any]:
    dtype = getattr(torch, args.dtype)
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = build_model(Path(tmp) / "model", args.size, args.device, dtype, args.tokenizer)
        lm = EgtLM(str(path), device=args.device, torch_dtype=args.dtype)
        rows["build_and_load_s"] = time.perf_counter() - start
        docs = [passage(i) for i in range(max(args.ks))]
        start = time.perf_counter()
        lm.index(docs, ids=[f"d{i}" for i in range(len(docs))])
        rows["index_s"] = time.perf_counter() - start
        question = "Which station is closest to the river?"
        for k in args.ks:
            chosen = docs[:k]

            def ask(reuse: bool, recompute: int | None = None, chosen: list[str] = chosen) -> Any:
                extra = {} if recompute is None else {"recompute_tokens": recompute}
                return lm.answer(question, documents=chosen, reuse_cache=reuse, max_new_tokens=1, **extra)

            full = median_s(lambda: ask(False), args.repeats)
            reuse = median_s(lambda: ask(True), args.repeats)
            splice = median_s(lambda: ask(True, 0), args.repeats)
            rows[f"k={k}"] = {
                "full_s": full,
                "reuse_s": reuse,
                "reuse_recompute0_s": splice,
                "ratio_default": full / reuse,
                "ratio_recompute0": full / splice,
            }
        messages = [{"role": "user", "content": "Write a long story about a river."}]
        lm.chat(messages, max_new_tokens=8)  # warm-up
        out = lm.chat(messages, max_new_tokens=args.new_tokens)
        decode_s = out.total_s - (out.ttft_s or 0.0)  # after the first token: decoding only
        rows["decode_tokens_per_s"] = max(out.completion_tokens - 1, 1) / max(decode_s, 1e-9)
        rows["decode_tokens"] = out.completion_tokens
        texts = [passage(i, 40) for i in range(args.encode_texts)]
        rows["encode_texts_per_s"] = args.encode_texts / median_s(lambda: lm.encode(texts), 1)
    return {
        "args": vars(args),
        "rows": rows,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
        "machine": machine_facts(torch.get_num_threads()),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SHAPES), default="7b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--ks", type=int, nargs="+", default=[5, 10, 20])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--encode-texts", type=int, default=256)
    p.add_argument("--json", default=None)
    p.add_argument(
        "--tokenizer", default=None, help="take the tokenizer from here (default: the packaged model's)"
    )
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("No CUDA device here; run with --size tiny --device cpu for a smoke run.")
    result = run(args)
    r = result["rows"]
    body = [
        [k, f"{v['full_s'] * 1000:.1f}", f"{v['reuse_s'] * 1000:.1f}", f"{v['ratio_default']:.1f}x",
         f"{v['reuse_recompute0_s'] * 1000:.1f}", f"{v['ratio_recompute0']:.1f}x"]
        for k, v in r.items() if k.startswith("k=")
    ]  # fmt: skip
    print(text_table(["k", "full ms", "reuse ms", "ratio", "recompute 0 ms", "ratio"], body))
    print(f"decode {r['decode_tokens_per_s']:.1f} tokens/s, encode {r['encode_texts_per_s']:.1f} texts/s")
    print(
        f"device: {result['device']}; build + load {r['build_and_load_s']:.0f} s, index {r['index_s']:.1f} s"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
