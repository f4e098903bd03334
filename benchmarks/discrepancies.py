"""Speed and memory benchmark of the OT discrepancies.

    python benchmarks/discrepancies.py            # full run, writes benchmarks/results/
    python benchmarks/discrepancies.py --quick    # small sizes only (smoke run)

Sections:
1. Sliced FGW forward+backward (d = 8 and 64, L = 50) at N = 1e2 .. 1e6, against
   (i) the O(N^2 L) pairwise formulation of the RAE authors' code (where it fits in
   memory; same directions, values compared) and (ii) the time of just sorting the
   two projected sets (torch.sort of both (L, N) arrays). Each case runs in a fresh
   subprocess so that its peak resident memory can be reported.
2. Hierarchical FGW (proximal point) at (N, K) = (100, 10) and (1000, 50) against
   POT's entropic FGW with the PPA solver on the same cost matrices.
3. SSFG / MSSFG / PSSFG / max-SFG time per call at d = 8 and 64.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import best_time, machine, machine_markdown, write_results  # noqa: E402

from otae.discrepancies import fgw_1d_dense, sliced_fgw  # noqa: E402
from otae.discrepancies.sliced import project  # noqa: E402

L = 50
DENSE_MAX_N = 1000  # N^2 L float32 matrices: 1000 -> 200 MB each; 1e4 would need 20 GB each


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def sfgw_case(n: int, d: int) -> dict:
    """One SFGW size in this process: times, values, peak memory above the baseline."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(n + d)
    x = torch.randn(n, d, generator=g).requires_grad_()
    y = (torch.randn(n, d, generator=g) * 1.5 + 0.5).requires_grad_()
    theta = torch.randn(d, L, generator=g)
    theta /= theta.norm(dim=0)
    repeats = 15 if n <= 10**4 else (3 if n <= 10**5 else 2)
    baseline_mib = _rss_mib()

    def ours():
        x.grad = y.grad = None
        sliced_fgw(x, y, beta=0.1, projections=theta).backward()

    t_ours = best_time(ours, repeats)
    peak_ours_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline_mib
    value = float(sliced_fgw(x.detach(), y.detach(), beta=0.1, projections=theta))

    px, py = project(x.detach(), theta), project(y.detach(), theta)

    def sort_only():
        torch.sort(px, dim=-1)
        torch.sort(py, dim=-1)

    t_sort = best_time(sort_only, repeats)

    def projection_only():
        x.grad = y.grad = None
        (project(x, theta).sum() + project(y, theta).sum()).backward()

    t_proj = best_time(projection_only, repeats)
    out = {
        "n": n, "d": d, "L": L, "ours_s": t_ours, "sort_s": t_sort, "projection_s": t_proj,
        "ours_over_sort": t_ours / t_sort, "one_d_part_over_sort": (t_ours - t_proj) / t_sort,
        "value": value,
        "peak_mib_above_inputs": peak_ours_mib,
        "input_mib": 2 * n * d * 4 / 2**20,
    }
    if n <= DENSE_MAX_N:

        def dense():
            x.grad = y.grad = None
            fgw_1d_dense(x @ theta, y @ theta, 0.1).mean().backward()

        out["dense_s"] = best_time(dense, max(1, repeats // 2))
        out["dense_value"] = float(fgw_1d_dense(x @ theta, y @ theta, 0.1).mean())
        out["speedup_vs_dense"] = out["dense_s"] / t_ours
        out["value_rel_diff"] = abs(out["dense_value"] - value) / abs(out["dense_value"])
    return out


def run_sfgw(sizes, dims) -> list[dict]:
    rows = []
    for d in dims:
        for n in sizes:
            proc = subprocess.run(
                [sys.executable, __file__, "--sfgw-case", str(n), str(d)],
                check=True, capture_output=True, text=True,
            )
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def run_hfgw(cases) -> list[dict]:
    import ot

    from otae.discrepancies import fgw_objective, hierarchical_fgw
    from otae.discrepancies.gaussian import pairwise_gaussian_w2_squared

    rows = []
    for n, k in cases:
        g = torch.Generator().manual_seed(n * k)
        d = 8
        mu_p = torch.randn(n, d, generator=g, dtype=torch.float64)
        sd_p = torch.rand(n, d, generator=g, dtype=torch.float64) * 0.5
        mu_q = torch.randn(k, d, generator=g, dtype=torch.float64) * 2
        sd_q = torch.rand(k, d, generator=g, dtype=torch.float64)
        beta = 0.1
        t_ours = best_time(lambda: hierarchical_fgw(mu_p, sd_p, mu_q, sd_q, beta=beta), 5)
        value = hierarchical_fgw(mu_p, sd_p, mu_q, sd_q, beta=beta)
        t_ours_auto = best_time(
            lambda: hierarchical_fgw(mu_p, sd_p, mu_q, sd_q, beta=beta, tau="auto"), 5)
        value_auto = hierarchical_fgw(mu_p, sd_p, mu_q, sd_q, beta=beta, tau="auto")
        t_ours_500 = best_time(
            lambda: hierarchical_fgw(mu_p, sd_p, mu_q, sd_q, beta=beta, n_outer=500), 2)
        value_500 = hierarchical_fgw(mu_p, sd_p, mu_q, sd_q, beta=beta, n_outer=500)
        c_st = pairwise_gaussian_w2_squared(mu_p, sd_p, mu_q, sd_q)
        c_s = pairwise_gaussian_w2_squared(mu_p, sd_p, mu_p, sd_p)
        c_t = pairwise_gaussian_w2_squared(mu_q, sd_q, mu_q, sd_q)
        args = (c_st.numpy(), c_s.numpy(), c_t.numpy())
        pot_ppa = {}

        def ppa():
            pot_ppa["plan"] = ot.gromov.entropic_fused_gromov_wasserstein(
                *args, alpha=beta, epsilon=float(c_st.abs().max()) * 0.05, solver="PPA",
                max_iter=ppa_iters, tol=1e-9,
            )

        ppa_iters = 1000 if n <= 100 else 100  # POT's PPA takes ~10 s per call at N = 100
        t_ppa = best_time(ppa, 1)
        t_cg = best_time(lambda: pot_ppa.__setitem__(
            "cg", ot.gromov.fused_gromov_wasserstein(*args, alpha=beta)), 3)
        obj = lambda p: float(fgw_objective(c_st, c_s, c_t, torch.as_tensor(p), beta))  # noqa: E731
        row = {
            "n": n, "k": k, "d": d, "beta": beta,
            "ours_s": t_ours, "ours_objective": float(value),
            "ours_auto_s": t_ours_auto, "ours_auto_objective": float(value_auto),
            "ours_500_s": t_ours_500, "ours_500_objective": float(value_500),
            "pot_ppa_max_iter": ppa_iters,
            "pot_ppa_s": t_ppa, "pot_ppa_objective": obj(pot_ppa["plan"]),
            "pot_cg_s": t_cg, "pot_cg_objective": obj(pot_ppa["cg"]),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def run_spherical(dims, n=100, n_projections=10, n_iters=100) -> list[dict]:
    from otae.discrepancies import max_sliced_fgw, spherical_sliced_fgw

    rows = []
    for d in dims:
        g = torch.Generator().manual_seed(d)
        x = torch.randn(n, d, generator=g).requires_grad_()
        y = torch.randn(n, d, generator=g).requires_grad_()
        variants = {
            "SFG": lambda: sliced_fgw(x, y, n_projections=n_projections, generator=g),
            "SSFG": lambda: spherical_sliced_fgw(
                x, y, kappa=50.0, n_projections=n_projections, n_iters=n_iters, generator=g),
            "MSSFG (k=5)": lambda: spherical_sliced_fgw(
                x, y, kappa=50.0, n_projections=n_projections, n_iters=n_iters, n_components=5,
                generator=g),
            "PSSFG": lambda: spherical_sliced_fgw(
                x, y, kappa=50.0, n_projections=n_projections, n_iters=n_iters,
                distribution="power", generator=g),
            "max-SFG": lambda: max_sliced_fgw(x, y, n_iters=n_iters, generator=g),
        }
        for name, fn in variants.items():
            t = best_time(lambda fn=fn: fn().backward(), 5)
            row = {"variant": name, "d": d, "n": n, "L": n_projections, "iters": n_iters,
                   "seconds_per_call": t}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def markdown(info, sfgw, hfgw, spherical) -> str:
    lines = ["# Discrepancy benchmarks", "", machine_markdown(info), ""]
    lines += [
        "## Sliced FGW, forward + backward, L = 50 (float32)", "",
        "`ours / sort` is our full forward+backward time over the time of just "
        "`torch.sort`-ing the two projected (L, N) sets; `1-D / sort` leaves out the "
        "projection matmuls (forward+backward, timed separately), i.e. it is the cost of "
        "the sorted 1-D FGW part alone. Best of several runs. `dense` is the O(N^2 L) pairwise "
        "formulation of the RAE authors' code on the same directions. Peak memory is the "
        "resident-set growth of a fresh process during our forward+backward.", "",
        "| d | N | ours (s) | sort only (s) | ours / sort | 1-D / sort | dense (s) "
        "| speed-up vs dense | rel. value diff | peak MiB (inputs MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sfgw:
        dense = f"{r['dense_s']:.4f}" if "dense_s" in r else "n/a (O(N²L) memory)"
        speed = f"{r['speedup_vs_dense']:.0f}×" if "speedup_vs_dense" in r else "—"
        diff = f"{r['value_rel_diff']:.1e}" if "value_rel_diff" in r else "—"
        lines.append(
            f"| {r['d']} | {r['n']:.0e} | {r['ours_s']:.4f} | {r['sort_s']:.4f} | "
            f"{r['ours_over_sort']:.2f} | {r['one_d_part_over_sort']:.2f} | {dense} | "
            f"{speed} | {diff} | "
            f"{r['peak_mib_above_inputs']:.0f} ({r['input_mib']:.0f}) |"
        )
    if hfgw:
        lines += [
            "", "## Hierarchical FGW (d = 8, beta = 0.1, float64)", "",
            "Objectives are all evaluated with `fgw_objective` on each solver's plan "
            "(lower is better). Ours: 20 proximal steps (the paper's count) with our default "
            "`tau='centred'` and with the authors' `tau='auto'` (max|G|), and 500 centred "
            "steps. POT PPA: `entropic_fused_gromov_wasserstein(solver='PPA')`, "
            "epsilon = 0.05 max|C_st|, tol 1e-9, max_iter as listed; POT CG: "
            "`fused_gromov_wasserstein`.", "",
            "| N | K | ours 20 (s) | objective | ours 20 'auto' (s) | objective | ours 500 (s) "
            "| objective | POT PPA (s) [max_iter] | objective | POT CG (s) | objective |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in hfgw:
            lines.append(
                f"| {r['n']} | {r['k']} | {r['ours_s']:.4f} | {r['ours_objective']:.5g} | "
                f"{r['ours_auto_s']:.4f} | {r['ours_auto_objective']:.5g} | "
                f"{r['ours_500_s']:.4f} | {r['ours_500_objective']:.5g} | "
                f"{r['pot_ppa_s']:.3f} [{r['pot_ppa_max_iter']}] | "
                f"{r['pot_ppa_objective']:.5g} | {r['pot_cg_s']:.4f} | "
                f"{r['pot_cg_objective']:.5g} |"
            )
    if spherical:
        lines += [
            "", "## Spherical sliced FGW family, forward + backward per call (float32)", "",
            "N = 100 (a batch), L = 10 directions, 100 location-search iterations, kappa = 50.",
            "", "| variant | d | seconds per call |", "|---|---|---|",
        ]
        for r in spherical:
            lines.append(f"| {r['variant']} | {r['d']} | {r['seconds_per_call']:.4f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--sfgw-case", nargs=2, type=int, metavar=("N", "D"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=["sfgw", "hfgw", "spherical"], default=None)
    args = parser.parse_args()
    if args.sfgw_case:
        print(json.dumps(sfgw_case(*args.sfgw_case)))
        return
    sizes = [100, 1000, 10**4] if args.quick else [100, 1000, 10**4, 10**5, 10**6]
    hf_cases = [(100, 10)] if args.quick else [(100, 10), (1000, 50)]
    info = machine()
    sfgw = run_sfgw(sizes, (8, 64)) if args.only in (None, "sfgw") else []
    hfgw = run_hfgw(hf_cases) if args.only in (None, "hfgw") else []
    spherical = run_spherical((8, 64)) if args.only in (None, "spherical") else []
    payload = {"machine": info, "sliced_fgw": sfgw, "hierarchical_fgw": hfgw,
               "spherical": spherical}
    name = "discrepancies_quick" if args.quick else "discrepancies"
    if args.only:
        name += f"_{args.only}"
    paths = write_results(name, payload, markdown(info, sfgw, hfgw, spherical))
    print("wrote", *paths)


if __name__ == "__main__":
    main()
