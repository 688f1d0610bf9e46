"""Small helpers shared by the benchmarks: data, timing, machine description, results files, plots.

Importing it imports no egtlm module (the data helpers import `egtlm_core.evaluation` when called),
so any benchmark, and any system it compares, can use it. Like every benchmark it uses public egtlm
names only (tests/unit/test_layout.py). Timings on the shared CI/dev machines are noisy, so the
helpers favour comparing systems *in the same run*: `interleave` runs them A, B, A, B, ...
(reversing the order every other round) and the caller reports medians and per-round ratios beside
the absolute numbers.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS_BENCH_DIR = REPO_ROOT / "docs" / "benchmarks"


def ensure_repo_on_path() -> None:
    """Let `python benchmarks/x.py` import the repo's packages without installing them."""
    for p in (REPO_ROOT, REPO_ROOT / "integrations"):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))


# --- command line -------------------------------------------------------------------------------
def add_model_option(parser: Any) -> None:
    """`--model`: a model directory or hub id; "default" (the default) is the packaged `EgtLM()` model.
    Smoke tests pass a tiny random model so every benchmark runs in seconds in CI."""
    parser.add_argument("--model", default="default", help="model path or hub id (default: EgtLM()'s)")


def model_name(args: Any) -> str | None:
    """`EgtLM(model_name(args))`: None for the packaged default."""
    return None if args.model in (None, "default") else args.model


# --- data ---------------------------------------------------------------------------------------
def xquad_paragraphs(path: str | os.PathLike | None = None) -> list[tuple[str, Any]]:
    """(paragraph, its first question) of every XQuAD paragraph in file order, read by
    `egtlm_core.evaluation.read_xquad` (the shared data folder unless `path`); the question is a
    `QAItem` (`.question`, `.answers`)."""
    from egtlm_core.evaluation import read_xquad

    qa = read_xquad(path)
    first: dict[int, Any] = {}
    for item in qa.questions:
        first.setdefault(item.paragraph, item)
    return [(text, first[i]) for i, text in enumerate(qa.paragraphs) if i in first]


def spread_subset(items: Sequence[Any], n: int | None) -> list[Any]:
    """`n` items evenly spread over `items` (keeps the mix of a file ordered by source/genre)."""
    if n is None or n >= len(items):
        return list(items)
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}.")
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


# --- machine --------------------------------------------------------------------------------------
def cpu_model() -> str:
    """CPU model name from lscpu (falls back to platform.processor())."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields = dict(ln.split(":", 1) for ln in out.splitlines() if ":" in ln)
        name = fields.get("Model name", "").strip()
        if name:
            family, model = fields.get("CPU family", "").strip(), fields.get("Model", "").strip()
            return f"{name} (family {family}, model {model})" if family and model else name
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def cpu_flags_of_interest() -> list[str]:
    """The matmul-relevant ISA extensions this CPU reports (AVX512-BF16, AMX, ...)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_tile")
    return [f for f in wanted if f in flags]


def cpu_pressure() -> str | None:
    """Linux PSI CPU pressure ("some avg10/avg60"): how often runnable tasks waited for a CPU, i.e.
    how much other load shared the machine while we measured. None where unavailable."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    parts = dict(p.split("=") for p in line.split()[1:] if "=" in p)
    return f"{parts.get('avg10', '?')}% (10 s) / {parts.get('avg60', '?')}% (60 s)"


def cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies over all CPUs from /proc/stat; None where unavailable."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, IndexError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def wait_for_quiet(
    max_wait_s: float,
    busy_threshold: float = 0.15,
    log: Callable[[str], None] | None = print,
    settle_s: float = 20.0,
    step_s: float = 2.5,
) -> bool:
    """Wait (up to `max_wait_s`) until the machine's CPUs have been idle, other than a `busy_threshold`
    share, for `settle_s` (other jobs' load, which CPU pressure misses when they use fewer cores than
    there are). -> True if it got quiet. Returns at once where /proc/stat is unavailable."""
    deadline = time.monotonic() + max_wait_s
    quiet_for = 0.0
    prev = cpu_times()
    if prev is None:
        return True
    busy = 1.0
    while time.monotonic() < deadline:
        time.sleep(step_s)
        cur = cpu_times()
        if cur is None:
            return True
        busy = (cur[0] - prev[0]) / max(cur[1] - prev[1], 1)
        prev = cur
        quiet_for = quiet_for + step_s if busy < busy_threshold else 0.0
        if quiet_for >= settle_s:
            return True
    if log:
        log(f"CPUs still {busy:.0%} busy with other work after {max_wait_s:.0f} s; measuring anyway")
    return False


def egtlm_auto_dtype(device: str = "cpu") -> tuple[str, str]:
    """(dtype, why) that `EgtLM(torch_dtype="auto")` picks on `device`, from `egtlm info --json` in a
    child process: learning it loads no weights into this one (which some benchmarks measure)."""
    import json

    paths = [str(REPO_ROOT), str(REPO_ROOT / "integrations"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    command = [sys.executable, "-m", "egtlm_core.cli.main", "info", "--json", "--device", device]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env, timeout=600)
    info = json.loads(out.stdout)
    return info["auto_dtype"], info["auto_dtype_reason"]


def machine_info(extra_packages: Iterable[str] = ("torch", "transformers")) -> dict[str, str]:
    """A description of this machine and software for a results file."""
    import importlib.metadata as md

    info = {
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu_model(),
        "logical cpus": str(os.cpu_count()),
        "isa": " ".join(cpu_flags_of_interest()) or "n/a",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch threads"] = str(torch.get_num_threads())
    except ImportError:
        pass
    for pkg in extra_packages:
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            info[pkg] = "not installed"
    return info


# --- timing ---------------------------------------------------------------------------------------
def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


@dataclass
class Timings:
    """Wall times of one system over the rounds of `interleave`, plus its last result."""

    seconds: list[float] = field(default_factory=list)
    last: Any = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def worst(self) -> float:
        return max(self.seconds)


def interleave(
    systems: dict[str, Callable[[], Any]],
    repeats: int,
    *,
    before_round: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Timings]:
    """Run every system once per round, `repeats` rounds, reversing the order every other round so
    slow phases of a shared machine hit all systems alike. -> name: Timings (last result kept)."""
    out = {name: Timings() for name in systems}
    names = list(systems)
    for r in range(repeats):
        if before_round:
            before_round(r)
        for name in names if r % 2 == 0 else names[::-1]:
            seconds, result = timed(systems[name])
            out[name].seconds.append(seconds)
            out[name].last = result
            if log:
                log(f"  round {r + 1}/{repeats}  {name:<40s} {seconds:8.2f} s")
    return out


def paired_ratios(slow: Timings, fast: Timings) -> list[float]:
    """slow/fast time per round (>1: `fast` is faster); rounds pair runs taken close in time."""
    return [a / b for a, b in zip(slow.seconds, fast.seconds, strict=True)]


def med(xs: Iterable[float]) -> float:
    """The median (the benchmarks report medians: robust to bursts of other jobs' load)."""
    return statistics.median(xs)


def median_ms(seconds: Iterable[float]) -> float:
    """The median of durations in seconds, in milliseconds."""
    return statistics.median(seconds) * 1e3


def iqr(xs: Sequence[float]) -> tuple[float, float]:
    """(first, third) quartile; the value itself for a single run."""
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def ratio(slow: Sequence[float], fast: Sequence[float]) -> float:
    """Median of per-run slow/fast ratios (>1: `fast` is faster); runs at the same index pair
    measurements taken close in time, e.g. the same question in the same round."""
    return med(a / b for a, b in zip(slow, fast, strict=True))


@dataclass
class ChunkTimings:
    """Wall times of one system over `interleave_chunks`: seconds[round][chunk], last round's results."""

    seconds: list[list[float]] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)

    def chunk_medians(self) -> list[float]:
        return [statistics.median(col) for col in zip(*self.seconds, strict=True)]

    @property
    def total_median(self) -> float:
        """The whole set's time built from each chunk's median over rounds (robust to bursts of load)."""
        return sum(self.chunk_medians())

    @property
    def total_best(self) -> float:
        """The whole set's time from each chunk's fastest round (the least disturbed estimate)."""
        return sum(min(col) for col in zip(*self.seconds, strict=True))

    @property
    def round_totals(self) -> list[float]:
        return [sum(r) for r in self.seconds]


def interleave_chunks(
    systems: dict[str, Callable[[Any], Any]],
    chunks: Sequence[Any],
    repeats: int,
    *,
    before_chunk: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, ChunkTimings]:
    """Fine-grained interleaving for shared, noisy machines: for every round and every chunk of the
    work, run each system on that chunk back to back (order alternating), so a burst of load from
    another job hits the systems alike. Whole-set times are rebuilt per chunk (`total_median`)."""
    names = list(systems)
    out = {n: ChunkTimings() for n in names}
    for r in range(repeats):
        for n in names:
            out[n].seconds.append([0.0] * len(chunks))
            out[n].results = [None] * len(chunks)
        for ci, chunk in enumerate(chunks):
            if before_chunk:
                before_chunk(r, ci)
            for n in names if (r + ci) % 2 == 0 else names[::-1]:
                seconds, result = timed(functools.partial(systems[n], chunk))
                out[n].seconds[r][ci] = seconds
                out[n].results[ci] = result
        if log:
            log(
                f"  round {r + 1}/{repeats}: "
                + ", ".join(f"{n} {out[n].round_totals[r]:.2f} s" for n in names)
            )
    return out


class MatmulPeak:
    """Best FLOP/s of square matmuls (2·n³ FLOPs each) in `dtype` (default bf16) on torch's current
    threads. Operands are allocated once, so it can be called between measured runs cheaply."""

    def __init__(self, dtype: Any = None, sizes: Sequence[int] = (2048, 3072, 4096)) -> None:
        import torch

        self.dtype = torch.bfloat16 if dtype is None else dtype
        self.operands = [
            (torch.randn(n, n, dtype=self.dtype), torch.randn(n, n, dtype=self.dtype)) for n in sizes
        ]
        self.warmed = False

    def __call__(self, tries: int = 2) -> tuple[float, int]:
        """-> (best FLOP/s, size that reached it)."""
        import torch

        best, best_n = 0.0, 0
        with torch.inference_mode():
            for a, b in self.operands:
                if not self.warmed:
                    a @ b  # kernel selection, page faults
                n = a.shape[0]
                for _ in range(tries):
                    seconds, _ = timed(functools.partial(torch.matmul, a, b))
                    if 2 * n**3 / seconds > best:
                        best, best_n = 2 * n**3 / seconds, n
        self.warmed = True
        return best, best_n


def matmul_flops_peak(
    dtype: Any = None, sizes: Sequence[int] = (2048, 3072, 4096), tries: int = 2
) -> tuple[float, int]:
    """Best FLOP/s of square matmuls in `dtype` (default bf16) on all of torch's threads
    -> (FLOP/s, size that reached it)."""
    return MatmulPeak(dtype, sizes)(tries)


# --- results files --------------------------------------------------------------------------------
def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; right-aligns columns whose cells are all numbers."""
    rows = [[str(c) for c in r] for r in rows]

    def numeric(col: int) -> bool:
        def is_num(s: str) -> bool:
            try:
                float(s.replace("×", "").replace("%", "").replace(",", ""))
                return True
            except ValueError:
                return False

        return bool(rows) and all(is_num(r[col]) for r in rows)

    align = ["---:" if numeric(i) else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def text_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A fixed-width table for the terminal."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([fmt.format(*headers), sep, *(fmt.format(*r) for r in rows)])


def machine_markdown(info: dict[str, str]) -> str:
    return "\n".join(f"- **{k}**: {v}" for k, v in info.items())


def write_text(path: str | os.PathLike, text: str) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text if text.endswith("\n") else text + "\n", encoding="utf8")
    return p


@dataclass
class BarGroup:
    """One panel of `bar_plot`: bars with optional error ranges (low, high) and a reference line."""

    title: str
    labels: list[str]
    values: list[float]
    ylabel: str
    ranges: list[tuple[float, float]] | None = None
    reference: tuple[float, str] | None = None  # (y, label), e.g. a target
    notes: list[str] | None = None  # text above each bar, e.g. a ratio
    colors: list[str] | None = None


def bar_plot(path: str | os.PathLike, groups: Sequence[BarGroup], suptitle: str = "") -> Path:
    """Side-by-side bar panels written to a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = len(groups) if len(groups) <= 3 else (len(groups) + 1) // 2
    nrows = (len(groups) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.4 * nrows), squeeze=False)
    for ax in axes.flat[len(groups) :]:
        ax.set_visible(False)
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    for ax, g in zip(axes.flat, groups, strict=False):
        x = range(len(g.values))
        colors = g.colors or [palette[i % len(palette)] for i in x]
        err = None
        if g.ranges:
            err = [
                [max(v - lo, 0) for v, (lo, _) in zip(g.values, g.ranges, strict=True)],
                [max(hi - v, 0) for v, (_, hi) in zip(g.values, g.ranges, strict=True)],
            ]
        ax.bar(x, g.values, color=colors, yerr=err, capsize=4 if err else 0)
        ax.set_xticks(list(x))
        ax.set_xticklabels(g.labels, fontsize=8)
        ax.set_ylabel(g.ylabel)
        ax.set_title(g.title, fontsize=10)
        top = max([*g.values, *(hi for _, hi in g.ranges or [])] + [g.reference[0] if g.reference else 0])
        ax.set_ylim(0, top * 1.22)
        if g.reference:
            ax.axhline(g.reference[0], color="gray", linestyle="--", linewidth=1, label=g.reference[1])
            ax.legend(loc="upper right", fontsize=8, frameon=False)
        for i, v in enumerate(g.values):
            note = g.notes[i] if g.notes else ""
            label = f"{v:,.3g}" + (f"\n{note}" if note else "")
            y = max(v, g.ranges[i][1]) if g.ranges else v  # above the whisker
            ax.text(i + 0.06 if g.ranges else i, y + top * 0.02, label, ha="center", va="bottom", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def machine_facts(threads: int) -> dict[str, Any]:
    """The machine and library facts a benchmark page states beside its numbers."""
    import datetime as dt

    import torch
    import transformers

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "load_before": os.getloadavg(),
    }
