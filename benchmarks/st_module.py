#!/usr/bin/env python
"""sentence-transformers through `EgtLMEncoder` vs `EgtLM.encode` vs stock `SentenceTransformer(dir)`.

    python benchmarks/st_module.py [--n 512] [--repeats 3] [--threads 1]

On an evenly spread subset of the STS-B test sentences, one process, the systems interleaved round by
round (order reversed every other round), medians reported:

1. `EgtLM().encode(texts)` (the "auto" dtype, its own length-sorted token-budget batches);
2. `to_sentence_transformer(EgtLM()).encode(texts)` (sentence-transformers' loop, batch size 32,
   our module: same tokens, same mask, same pooling);
3. `SentenceTransformer(default_model_dir())` as it loads (its dtype, chat-template wrapping with the
   default system prompt, last-token pooling): what a user gets pointing ST at the weights.

Also prints the largest difference between (1) and (2) in the auto dtype and in float32, and tokens
per sentence for (2) and (3).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

C.ensure_repo_on_path()

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    C.add_model_option(parser)
    parser.add_argument("--n", type=int, default=512, help="sentences (evenly spread over STS-B test)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--wait-quiet", type=float, default=60, metavar="S", help="wait up to S s for idle CPUs"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from sentence_transformers import SentenceTransformer
    from sentence_transformers_egtlm import to_sentence_transformer

    from egtlm_core import EgtLM, default_model_dir
    from egtlm_core.evaluation import read_stsb

    rows = read_stsb("test")
    texts = C.spread_subset(list(dict.fromkeys(t for p in rows for t in (p.text1, p.text2))), args.n)
    name = C.model_name(args)
    lm = EgtLM(name)
    st = to_sentence_transformer(lm)
    stock = SentenceTransformer(name or str(default_model_dir()), device="cpu")
    systems = {
        "EgtLM.encode": lambda: lm.encode(texts),
        "ST + EgtLMEncoder": lambda: st.encode(texts, batch_size=32),
        "SentenceTransformer(dir)": lambda: stock.encode(texts, batch_size=32),
    }
    if args.wait_quiet:
        C.wait_for_quiet(args.wait_quiet, log=print)
    timings = C.interleave(systems, args.repeats)

    lm32 = EgtLM(name, torch_dtype="float32")
    st32 = to_sentence_transformer(lm32)
    check = texts[:128]
    diff_auto = float(np.abs(timings["ST + EgtLMEncoder"].last - timings["EgtLM.encode"].last).max())
    diff_fp32 = float(np.abs(st32.encode(check) - lm32.encode(check)).max())
    ours_tokens = int(st.preprocess(texts)["attention_mask"].sum())
    stock_tokens = int(stock.preprocess(texts)["attention_mask"].sum())

    info = C.machine_info(("torch", "transformers", "sentence-transformers"))
    print("\n" + ", ".join(f"{k}: {v}" for k, v in info.items()))
    print(f"{len(texts)} STS-B test sentences, {args.repeats} rounds, {args.threads} torch thread(s)\n")
    print("| system | dtype | tokens/sentence | median s | sentences/s | vs EgtLM.encode |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    base = timings["EgtLM.encode"].median
    dtypes = {"SentenceTransformer(dir)": stock.dtype}
    tokens = {"SentenceTransformer(dir)": stock_tokens}
    for name, t in timings.items():
        dtype = str(dtypes.get(name, lm.dtype)).removeprefix("torch.")
        per = tokens.get(name, ours_tokens) / len(texts)
        rate, ratio = len(texts) / t.median, base / t.median
        print(f"| {name} | {dtype} | {per:.1f} | {t.median:.2f} | {rate:.1f} | {ratio:.2f}x |")
    print(f"\nmax |ST + EgtLMEncoder - EgtLM.encode|: {diff_auto:.2e} ({lm.dtype}), {diff_fp32:.2e} (fp32)")
    speedups = C.paired_ratios(timings["SentenceTransformer(dir)"], timings["ST + EgtLMEncoder"])
    print(f"per-round speed-up of the module over stock ST: {', '.join(f'{r:.2f}x' for r in speedups)}")


if __name__ == "__main__":
    main()
