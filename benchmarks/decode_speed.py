"""Decoding speed against the memory-bandwidth floor, and where each step's milliseconds go.

A decode step of a small model on a CPU reads every weight once: its floor is the weights' bytes
divided by the rate one thread reads memory, both measured here in the same process. Side by side,
one thread, the same greedy answers (48 tokens, end-of-text suppressed so every run decodes as many):

    egtlm        `EgtLM().chat(...)` as a user calls it (the dtype "auto" picks on this CPU)
    hf           transformers `generate` on the same loaded weights
    egtlm-fp32 / egtlm-bf16   the chat call with the dtype pinned (the "auto" choice explained)

ms/token is (time for N tokens - time for 1 token) / (N - 1): the prompt's prefill is not in it.
The profile groups one run's operator self-times (torch.profiler) into matrix products, attention,
and everything else, with the operator count per decode step: a step bound by bytes is mostly
matrix products; a step bound by per-operator overhead is mostly "everything else".

    python benchmarks/decode_speed.py --threads 1
    python benchmarks/decode_speed.py --threads 1 --tokens 32 --rounds 2   # quicker

Writes docs/benchmarks/decode_speed.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    DOCS_BENCH_DIR,
    add_model_option,
    ensure_repo_on_path,
    machine_facts,
    markdown_table,
    model_name,
    write_text,
)

ensure_repo_on_path()

import torch  # noqa: E402

from egtlm_core import EgtLM, GenerationOptions  # noqa: E402

PROMPT = [{"role": "user", "content": "Write a short paragraph about the history of the sea trade."}]
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")
ATTENTION_OPS = ("aten::_scaled_dot_product", "aten::scaled_dot_product")


def read_bandwidth_gbs(mbytes: int = 512, repeats: int = 5) -> float:
    """GB/s one thread reads from memory: the best of a few sums over a buffer far beyond the caches."""
    buffer = torch.ones(mbytes * (1 << 20) // 4, dtype=torch.float32)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        buffer.sum()
        best = min(best, time.perf_counter() - start)
    return buffer.numel() * 4 / best / 1e9


def weight_bytes(model: Any) -> int:
    """Bytes a decode step reads: every parameter and buffer once (tied embeddings counted once).
    With int8 weights (`EgtLM(weights="int8")`) the LM head is an int8 copy of the embedding table,
    and of the table itself a step reads one row: the table is not counted then."""
    seen: set[int] = set()
    total = 0
    for p in [*model.parameters(), *model.buffers()]:
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    table = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    if head is not None and getattr(head, "weight", None) is not table:
        total -= table.numel() * table.element_size()
    return total


def decode_ms(run: Callable[[int], Any], tokens: int) -> float:
    """(t(tokens) - t(1)) / (tokens - 1): decoding alone, the prompt's prefill excluded."""
    start = time.perf_counter()
    run(1)
    one = time.perf_counter() - start
    start = time.perf_counter()
    run(tokens)
    return (time.perf_counter() - start - one) / (tokens - 1) * 1e3


def eos_ids(lm: EgtLM) -> list[int]:
    configured = torch.tensor(lm.model.generation_config.eos_token_id).view(-1).tolist()
    ids = {lm.tokenizer.eos_token_id, *configured}
    return sorted(i for i in ids if i is not None)


def egtlm_runner(lm: EgtLM) -> Callable[[int], Any]:
    from transformers import SuppressTokensLogitsProcessor

    no_eos = [SuppressTokensLogitsProcessor(eos_ids(lm))]  # every run decodes exactly n tokens

    def run(n: int) -> Any:
        result = lm.chat(PROMPT, GenerationOptions(max_new_tokens=n, logits_processor=no_eos))
        assert result.completion_tokens == n, result.completion_tokens
        return result

    return run


def hf_runner(lm: EgtLM) -> Callable[[int], Any]:
    ids = lm.tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if not isinstance(ids, torch.Tensor) else ids

    def run(n: int) -> Any:
        with torch.inference_mode():
            out = lm.model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, do_sample=False
            )
        assert out.shape[1] - ids.shape[1] == n
        return out

    return run


def profile_step(run: Callable[[int], Any], tokens: int) -> dict[str, Any]:
    """Self CPU ms per decode step by kind of operator, and operators per step."""
    from torch.profiler import ProfilerActivity, profile

    run(tokens)  # warm
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run(tokens)
    kinds: dict[str, float] = defaultdict(float)
    count = 0
    for event in prof.key_averages():
        if not event.key.startswith("aten::"):
            continue
        self_ms = event.self_cpu_time_total / 1e3
        if event.key in MATMUL_OPS:
            kinds["matrix products"] += self_ms
        elif event.key.startswith(ATTENTION_OPS):
            kinds["attention"] += self_ms
        else:
            kinds["everything else"] += self_ms
        count += event.count
    steps = tokens  # one forward per generated token (the first is the prompt's prefill)
    return {"ms": {k: v / steps for k, v in kinds.items()}, "ops_per_step": count / steps}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_option(parser)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bandwidth-mb", type=int, default=512, help="buffer read for the bandwidth")
    parser.add_argument("--out", type=Path, default=DOCS_BENCH_DIR / "decode_speed.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine_facts(torch.get_num_threads())
    bandwidth = read_bandwidth_gbs(args.bandwidth_mb)
    print(f"CPU: {info['cpu']}; one thread reads {bandwidth:.1f} GB/s", flush=True)

    name_or_path = model_name(args)
    user = EgtLM(name_or_path)  # what a user gets: dtype "auto"
    pinned = {name: EgtLM(name_or_path, torch_dtype=name) for name in ("float32", "bfloat16")}
    int8 = EgtLM(name_or_path, weights="int8")  # the opt-in: weight-only int8 linears, dtype "auto"
    systems: dict[str, tuple[EgtLM, Callable[[int], Any]]] = {
        "egtlm (auto)": (user, egtlm_runner(user)),
        "transformers generate (same weights)": (user, hf_runner(user)),
        **{f"egtlm {name}": (lm, egtlm_runner(lm)) for name, lm in pinned.items()},
        "egtlm weights='int8' (opt-in)": (int8, egtlm_runner(int8)),
    }
    for _, run in systems.values():
        run(2)  # warm-up: kernel selection, allocations
    timings: dict[str, list[float]] = defaultdict(list)
    for r in range(args.rounds):  # interleaved, the order reversed every other round
        for name in list(systems)[:: 1 if r % 2 == 0 else -1]:
            timings[name].append(decode_ms(systems[name][1], args.tokens))
    rows, results = [], {}
    for name, (lm, _) in systems.items():
        ms = statistics.median(timings[name])
        floor = weight_bytes(lm.model) / (bandwidth * 1e9) * 1e3
        results[name] = (ms, floor)
        dtype = str(lm.dtype).removeprefix("torch.") + (" + int8 weights" if lm.weights == "int8" else "")
        rows.append([name, dtype, f"{ms:.1f}", f"{floor:.1f}", f"{ms / floor:.2f}×"])
        print(f"{name} ({dtype}): {ms:.1f} ms/token, floor {floor:.1f} ms ({ms / floor:.2f}×)", flush=True)
    prof = profile_step(hf_runner(user), args.tokens)  # the same forward per step, on this thread
    prof_rows = [[k, f"{v:.1f}"] for k, v in sorted(prof["ms"].items(), key=lambda kv: -kv[1])]
    print(f"profile (one decode step's forward): {prof}", flush=True)

    auto_ms, auto_floor = results["egtlm (auto)"]
    share = prof["ms"].get("matrix products", 0.0) / sum(prof["ms"].values())
    matmul_gbs = weight_bytes(user.model) / 1e9 / (prof["ms"].get("matrix products", float("nan")) / 1e3)
    hf_ms, _ = results["transformers generate (same weights)"]
    int8_ms, int8_floor = results["egtlm weights='int8' (opt-in)"]
    described = (
        "the packaged default model (SmolLM2-135M-Instruct + the shipped adapter)"
        if name_or_path is None
        else f"the model `{name_or_path}`"
    )
    page = f"""# Decoding speed: egtlm against the memory-bandwidth floor

`python benchmarks/decode_speed.py --threads {args.threads} --tokens {args.tokens} --rounds {args.rounds}`
on **{info["cpu"]}**, {info["torch_threads"]} torch thread(s), torch {info.get("torch", "")},
{described}. One thread reads
**{bandwidth:.1f} GB/s** here (a sum over a {args.bandwidth_mb} MB buffer, best of 5); the floor of a
decode step is the weights' bytes over that rate. ms/token excludes the prompt's prefill
((t(N) − t(1)) / (N − 1), median of {args.rounds} interleaved rounds, greedy, end-of-text suppressed
so that N tokens are decoded).

{markdown_table(["system", "dtype", "ms / token", "floor ms", "× floor"], rows)}

`EgtLM().chat` decodes at **{auto_ms / auto_floor:.2f}× the floor** of its dtype and at
{hf_ms / auto_ms:.2f}× transformers' `generate` speed on the same weights (> 1: egtlm faster).
With the opt-in `EgtLM(weights="int8")` (every linear weight-only int8, torch's `_weight_int8pack_mm`)
it decodes at **{int8_ms:.1f} ms/token**, {auto_ms / int8_ms:.2f}× the default's speed and
{int8_ms / int8_floor:.2f}× its own floor.

## Where a decode step's time goes (dtype auto, torch.profiler self CPU time)

Profiled through transformers' `generate` on the same weights: egtlm decodes in its generation
thread, which the profiler does not follow, and runs the same model forward per token.

{markdown_table(["operators", "ms per step"], prof_rows)}

{prof["ops_per_step"]:.0f} aten calls per step (nested calls counted). Matrix products are
**{share:.0%}** of the step; they read the weights at {matmul_gbs:.1f} GB/s, {matmul_gbs / bandwidth:.0%} of
what one thread reads in a plain sum: the step is bound by reading weights, and the levers are fewer
bytes per weight (bf16 on a CPU that computes in it, int8, 4-bit) and matrix-vector kernels that
stream at the read rate, well before fewer operators (the other {1 - share:.0%}).
Load average when the run started: {info["load_before"][0]:.2f} on {info["cores"]} cores.
"""
    write_text(args.out, page)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
