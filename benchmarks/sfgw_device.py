"""Sliced FGW forward+backward on an accelerator against sorting both projected sets.

    python benchmarks/sfgw_device.py --device cuda            # writes benchmarks/results/
    python benchmarks/sfgw_device.py --device cpu --quick     # smoke run

For N = 1e2 .. 1e6 points in d = 8 and 64 dimensions with L = 50 directions:
``sliced_fgw(x, y, beta=0.1, projections=theta).backward()`` (under
``input_checks(False)``, as in the training step), the same under
``torch.compile(fullgraph=True)`` (inductor) at the sizes of ``--compile-sizes``, and
the floor any sliced method pays: projecting both sets and ``torch.sort`` of both
``(N, L)`` arrays. Times are medians of synchronised repetitions after warm-up
(the targets of docs/performance.md: SFGW <= 1.5x the sort at N >= 1e5, <= 0.3 ms at N <= 1e4).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine, machine_markdown, write_results  # noqa: E402

from otae.checks import input_checks  # noqa: E402
from otae.discrepancies import sliced_fgw  # noqa: E402

L = 50


def median_time(fn, device: torch.device, repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in seconds, synchronising the device around each call."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def case(n: int, d: int, device: torch.device, compiled: bool) -> dict:
    g = torch.Generator(device=device).manual_seed(n + d)
    x = torch.randn(n, d, generator=g, device=device).requires_grad_()
    y = (torch.randn(n, d, generator=g, device=device) * 1.5 + 0.5).requires_grad_()
    theta = torch.randn(d, L, generator=g, device=device)
    theta = theta / theta.norm(dim=0)
    repeats = 30 if n <= 10**4 else (10 if n <= 10**5 else 5)

    def loss(a, b, directions):
        return sliced_fgw(a, b, beta=0.1, projections=directions)

    def step(fn):
        def run():
            x.grad = y.grad = None
            with input_checks(False):
                fn(x, y, theta).backward()

        return run

    def sort_both():
        with torch.no_grad():
            torch.sort(x @ theta, dim=0)
            torch.sort(y @ theta, dim=0)

    row = {"n": n, "d": d, "L": L}
    row["sfgw_ms"] = 1e3 * median_time(step(loss), device, repeats)
    row["sort_ms"] = 1e3 * median_time(sort_both, device, repeats)
    row["ratio"] = row["sfgw_ms"] / row["sort_ms"]
    if compiled:
        fn = torch.compile(loss, fullgraph=True, dynamic=False)
        start = time.perf_counter()
        step(fn)()
        row["compile_s"] = time.perf_counter() - start
        row["sfgw_compiled_ms"] = 1e3 * median_time(step(fn), device, repeats)
        row["ratio_compiled"] = row["sfgw_compiled_ms"] / row["sort_ms"]
    print(row, flush=True)
    return row


def markdown(info: dict, rows: list[dict], device: str) -> str:
    lines = [
        f"# Sliced FGW forward+backward on {device} (L = {L}, beta = 0.1)",
        "",
        machine_markdown(info),
        "",
        "Median of synchronised repetitions after 3 warm-ups. `sort both`: projecting and "
        "sorting both sets (the floor of any sliced method); `compiled`: "
        "`torch.compile(fullgraph=True)`, inductor (compile time in seconds).",
        "",
        "| N | d | SFGW fwd+bwd (ms) | sort both (ms) | ratio | compiled (ms) | ratio | "
        "compile (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        comp = (
            f"{r['sfgw_compiled_ms']:.3f} | {r['ratio_compiled']:.2f} | {r['compile_s']:.1f}"
            if "sfgw_compiled_ms" in r
            else "— | — | —"
        )
        lines.append(
            f"| {r['n']:.0e} | {r['d']} | {r['sfgw_ms']:.3f} | {r['sort_ms']:.3f} | "
            f"{r['ratio']:.2f} | {comp} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="N <= 1e4 only")
    parser.add_argument("--dims", type=int, nargs="+", default=[8, 64])
    parser.add_argument(
        "--compile-sizes", type=int, nargs="*", default=[100, 10**4],
        help="sizes also timed compiled (d = the first of --dims)",
    )  # fmt: skip
    parser.add_argument("--name", default=None, help="results file name")
    args = parser.parse_args()
    device = torch.device(args.device)
    sizes = [100, 1000, 10**4] if args.quick else [100, 1000, 10**4, 10**5, 10**6]
    rows = [
        case(n, d, device, compiled=d == args.dims[0] and n in args.compile_sizes)
        for d in args.dims
        for n in sizes
    ]
    info = machine()
    name = args.name or f"sfgw_{device.type}"
    paths = write_results(name, {"machine": info, "device": str(device), "rows": rows},
                          markdown(info, rows, str(device)))  # fmt: skip
    print("wrote", *paths)


if __name__ == "__main__":
    main()
