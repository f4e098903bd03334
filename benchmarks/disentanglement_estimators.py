"""Known-answer checks of the disentanglement metrics at the sizes of the `shapes` test sets.

The metrics of :mod:`otae.evaluation.disentanglement` are estimates from ``N`` codes;
this script scores codes whose answer is known, built from factor rows of the
`shapes` grids (coarse 3 x 4 x 8 x 8 x 8, fine 3 x 7 x 16 x 15 x 15), each factor
index standardised (mean 0, variance 1 over its uniform law), 10 code dimensions:

* ``aligned s``: the 5 standardised factors plus Gaussian noise of std ``s``, and 5
  nuisance N(0, 1) dimensions, columns in a fixed random order. Disentangled: MIG, DCI D
  and the FactorVAE score should be near 1 (exactly 1 as N grows and s -> 0);
* ``partly rotated``: the factors turned by ``expm(0.4 A)`` (``A`` a fixed random
  antisymmetric matrix of norm 1), plus the 5 nuisance dimensions: intermediate scores;
* ``rotated``: a fixed random rotation of the factors (every dimension mixes all of
  them), plus the nuisance dimensions: MIG and DCI D low (not 0: a random rotation stays
  partly aligned); the FactorVAE score stays high by its definition;
* ``noise``: 10 N(0, 1) dimensions: MIG and D near 0, the FactorVAE score at chance.

Sections: (1) each metric at N = 614 (the `shapes` test split), 5000 and 50,000 factor
rows drawn uniformly from the grid (mean and std over draws), MIG with 10 / 20 (the
default) / 50 bins, DCI with its cross-validated leaf size (the default) and with the
fixed leaves of 5 it had before (DCI at 50,000 for two kinds only: ~2 min a code);
(2) the spread over random test subsets of the size of each grid's test split (614 and
7560 rows without replacement), and the value on the split itself; (3) MIG with a few
outlying codes (rows scaled 10x), to which equal-width bins are sensitive; (4) rendering
time and memory of `shapes_fine`, each in a fresh process.

    python benchmarks/disentanglement_estimators.py           # ~20 min on 2 shared cores
    python benchmarks/disentanglement_estimators.py --quick   # smoke run, not saved

Writes ``benchmarks/results/disentanglement-estimators/estimators.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy.linalg import expm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import RESULTS, machine, machine_markdown, write_results  # noqa: E402

from otae.data.factors import SHAPES_GRIDS, shapes_grid, shapes_split_indices  # noqa: E402
from otae.evaluation.disentanglement import (  # noqa: E402
    dci,
    factorvae_score,
    mutual_information_gap,
)

KINDS = ("aligned 0.01", "aligned 0.1", "aligned 0.3", "partly rotated", "rotated", "noise")
#: DCI at the largest N costs ~2 min a code (the leaf-size cross-validation): these kinds only
DCI_LARGE_KINDS = ("aligned 0.3", "rotated")
DCI_LARGE_N = 20_000
BINS = (10, 20, 50)
NUISANCE = 5
CODE_SEED = 100  # the rotations and the column order: the same codes at every N


def standardised(factors: np.ndarray, grid: str) -> np.ndarray:
    """Factor indices -> mean 0, variance 1 under the grid's uniform law (not the sample's),
    so that the codes are a fixed function of the factors."""
    sizes = np.asarray(SHAPES_GRIDS[grid].factor_sizes, dtype=np.float64)
    return (factors - (sizes - 1) / 2) / np.sqrt((sizes**2 - 1) / 12)


def known_codes(kind: str, factors: np.ndarray, grid: str, rng: np.random.Generator) -> np.ndarray:
    """``(N, 10)`` codes of ``kind`` for ``factors`` ``(N, 5)`` (module docstring)."""
    n, k = factors.shape
    fixed = np.random.default_rng(CODE_SEED)
    q, _ = np.linalg.qr(fixed.standard_normal((k, k)))
    a = fixed.standard_normal((k, k))
    a = (a - a.T) / 2
    a /= np.linalg.norm(a, 2)
    order = fixed.permutation(k + NUISANCE)
    if kind == "noise":
        return rng.standard_normal((n, k + NUISANCE))
    u = standardised(factors, grid)
    if kind.startswith("aligned"):
        u = u + float(kind.split()[1]) * rng.standard_normal(u.shape)
    elif kind == "partly rotated":
        u = u @ expm(0.4 * a)
    elif kind == "rotated":
        u = u @ q
    else:
        raise ValueError(kind)
    return np.concatenate([u, rng.standard_normal((n, NUISANCE))], axis=1)[:, order]


def scores(codes: np.ndarray, factors: np.ndarray, seed: int, with_dci: bool = True) -> dict:
    out = {f"mig_{b}": mutual_information_gap(codes, factors, n_bins=b)["mig"] for b in BINS}
    nan = float("nan")
    if with_dci:
        d = dci(codes, factors, random_state=seed)
        fixed = dci(codes, factors, random_state=seed, leaf_fractions=(0,))  # leaves of 5
        out.update(dci_d=d["disentanglement"], dci_c=d["completeness"],
                   dci_i=d["informativeness"], dci_d_leaf5=fixed["disentanglement"],
                   dci_i_leaf5=fixed["informativeness"])
    else:
        out.update(dci_d=nan, dci_c=nan, dci_i=nan, dci_d_leaf5=nan, dci_i_leaf5=nan)
    out["factorvae"] = factorvae_score(codes, factors, random_state=seed)["score"]
    return out


def summary(rows: list[dict[str, float]]) -> dict[str, dict[str, float] | None]:
    """Mean, std, min, max over the draws of each score (None: not computed)."""
    out: dict[str, dict[str, float] | None] = {}
    for key in rows[0]:
        values = np.array([r[key] for r in rows])
        out[key] = None if np.isnan(values).any() else {
            "mean": float(values.mean()), "std": float(values.std()),
            "min": float(values.min()), "max": float(values.max()), "draws": len(rows),
        }
    return out


def sample_sizes(sizes: list[int], draws: dict[int, int]) -> list[dict]:
    """Section 1: iid uniform factor rows (the grid's law) at each N."""
    out = []
    for grid in SHAPES_GRIDS:
        factor_sizes = SHAPES_GRIDS[grid].factor_sizes
        for kind in KINDS:
            for n in sizes:
                start = time.perf_counter()
                rows = []
                for seed in range(draws[n]):
                    rng = np.random.default_rng(seed)
                    f = np.stack([rng.integers(0, s, n) for s in factor_sizes], axis=1)
                    with_dci = n <= DCI_LARGE_N or kind in DCI_LARGE_KINDS
                    rows.append(scores(known_codes(kind, f, grid, rng), f, seed, with_dci))
                out.append({"grid": grid, "kind": kind, "n": n, **summary(rows),
                            "seconds_per_draw": (time.perf_counter() - start) / draws[n]})
                print(f"{grid:6s} {kind:15s} n={n:6d} " + " ".join(
                    f"{k}={v['mean']:.3f}" for k, v in out[-1].items() if isinstance(v, dict)
                ), f"{out[-1]['seconds_per_draw']:.1f} s", flush=True)
    return out


def split_spread(subsets: dict[str, int]) -> list[dict]:
    """Section 2: random subsets of the test split's size, and the split itself."""
    out = []
    for grid in SHAPES_GRIDS:
        all_rows = shapes_grid(grid)
        test = all_rows[shapes_split_indices("test", grid)]
        for kind in ("aligned 0.3", "partly rotated", "rotated"):
            rows = []
            for seed in range(subsets[grid]):
                rng = np.random.default_rng(1000 + seed)
                f = all_rows[rng.choice(len(all_rows), len(test), replace=False)]
                rows.append(scores(known_codes(kind, f, grid, rng), f, seed))
            split = scores(known_codes(kind, test, grid, np.random.default_rng(0)), test, 0)
            out.append({"grid": grid, "kind": kind, "n": len(test), "subsets": summary(rows),
                        "test_split": split})
            print(f"spread {grid:6s} {kind:15s} n={len(test)} " + " ".join(
                f"{k}={v['mean']:.3f}±{v['std']:.3f}" for k, v in out[-1]["subsets"].items()
            ), flush=True)
    return out


def outliers() -> list[dict]:
    """Section 3: MIG of aligned codes (noise 0.01) with a fraction of rows scaled 10x."""
    out = []
    for grid in SHAPES_GRIDS:
        all_rows = shapes_grid(grid)
        test = all_rows[shapes_split_indices("test", grid)]
        rng = np.random.default_rng(0)
        codes = known_codes("aligned 0.01", test, grid, rng)
        for fraction in (0.0, 0.001, 0.01):
            scaled = codes.copy()
            hit = rng.permutation(len(test))[: int(round(fraction * len(test)))]
            scaled[hit] *= 10
            out.append({"grid": grid, "n": len(test), "fraction": fraction, "rows": len(hit),
                        "mig": mutual_information_gap(scaled, test)["mig"]})
    return out


RENDER_CHILD = """
import json, resource, time
import torch  # loaded before the baseline: otae imports it anyway
from otae.data.factors import load_shapes
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
base = rss()
cpu, wall = time.process_time(), time.perf_counter()
d = load_shapes({split!r}, {size}, grid="fine")
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"images": len(d), "cpu_s": cpu, "wall_s": wall,
                  "image_mib": d.images.numel() / 2**20, "peak_above_baseline_mib": peak - base}}))
"""


def rendering() -> list[dict]:
    """Section 4: load_shapes(split, size, grid='fine') in a fresh process each."""
    out = []
    for split in ("test", "train", "all"):
        for size in (32, 64):
            child = RENDER_CHILD.format(split=split, size=size)
            line = subprocess.run([sys.executable, "-c", child], check=True,
                                  capture_output=True, text=True).stdout.strip().splitlines()[-1]
            out.append({"split": split, "image_size": size, **json.loads(line)})
            print("render", out[-1], flush=True)
    return out


KEYS = ("mig_10", "mig_20", "mig_50", "dci_d", "dci_c", "dci_i", "dci_d_leaf5", "dci_i_leaf5",
        "factorvae")
HEAD = ("MIG (10 bins) | MIG (20) | MIG (50) | DCI D | DCI C | DCI I | DCI D, leaves of 5 "
        "| DCI I, leaves of 5 | FactorVAE")
KEYS2 = ("mig_20", "dci_d", "dci_c", "dci_i", "dci_d_leaf5", "factorvae")
HEAD2 = "MIG | DCI D | DCI C | DCI I | DCI D, leaves of 5 | FactorVAE"


def markdown(info: dict, section1: list, section2: list, section3: list, section4: list) -> str:
    lines = [
        "# Disentanglement metrics on codes with known answers", "",
        machine_markdown(info), "",
        "Codes (10 dimensions) built from `shapes` factor rows, each factor index "
        "standardised: `aligned s` = the 5 factors + noise of std s, and 5 nuisance N(0, 1) "
        "dimensions, columns permuted (disentangled: scores near 1); `partly rotated` = the "
        "factors turned by expm(0.4 A) (intermediate); `rotated` = a random rotation of the "
        "factors (entangled); `noise` = 10 N(0, 1) dimensions. Rows drawn uniformly from the "
        "grid (coarse `shapes` 3 x 4 x 8 x 8 x 8, fine `shapes_fine` 3 x 7 x 16 x 15 x 15). "
        "DCI: random forests on a seeded 80 %, scored on 20 %, each factor's leaf size chosen "
        "by 3-fold cross-validation (the default), and with the fixed leaves of 5 of the "
        "earlier default; FactorVAE: default settings (batch 64, 5000 / 2500 votes), chance "
        "0.2. "
        "Script: `benchmarks/disentanglement_estimators.py`.", "",
        "## 1. Each metric against the number of codes N", "",
        "Mean over draws of the factor rows (± std where more than one draw).", "",
        f"| grid | codes | N | draws | {HEAD} |",
        "|---|---|---|---|" + "---|" * len(KEYS),
    ]
    for r in section1:
        cells = " | ".join(
            "—" if r[k] is None else
            f"{r[k]['mean']:.3f}" + (f" ± {r[k]['std']:.3f}" if r[k]["draws"] > 1 else "")
            for k in KEYS
        )
        lines.append(f"| {r['grid']} | {r['kind']} | {r['n']} | {r[KEYS[0]]['draws']} | {cells} |")
    lines += [
        "", "## 2. Spread over random test subsets of the test split's size", "",
        "Mean ± std over random subsets of the grid (without replacement) of the test "
        "split's size, then the value on the test split itself; min and max in the JSON.", "",
        f"| grid | codes | N | subsets | {HEAD2} |", "|---|---|---|---|" + "---|" * len(KEYS2),
    ]
    for r in section2:
        s = r["subsets"]
        cells = " | ".join(
            f"{s[k]['mean']:.3f} ± {s[k]['std']:.3f}; {r['test_split'][k]:.3f}" for k in KEYS2
        )
        lines.append(f"| {r['grid']} | {r['kind']} | {r['n']} | {s[KEYS2[0]]['draws']} "
                     f"| {cells} |")
    lines += [
        "", "## 3. MIG (20 equal-width bins) with outlying codes", "",
        "`aligned 0.01` codes of the test split with a fraction of the rows scaled 10x: the "
        "bins span the outliers, the other codes crowd into a few of them.", "",
        "| grid | N | rows scaled 10x | MIG |", "|---|---|---|---|",
    ]
    lines += [f"| {r['grid']} | {r['n']} | {r['rows']} ({100 * r['fraction']:.1f} %) | "
              f"{r['mig']:.3f} |" for r in section3]
    if section4:
        lines += [
            "", "## 4. Rendering `shapes_fine`", "",
            "`load_shapes(split, size, grid='fine')` in a fresh process: CPU and wall time, the "
            "uint8 images' size and the peak resident memory above the process's baseline "
            "(torch imported).", "",
            "| split | size | images | CPU (s) | wall (s) | images (MiB) "
            "| peak above baseline (MiB) |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [f"| {r['split']} | {r['image_size']} | {r['images']} | {r['cpu_s']:.2f} | "
                  f"{r['wall_s']:.2f} | {r['image_mib']:.0f} | {r['peak_above_baseline_mib']:.0f} |"
                  for r in section4]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, nothing written")
    args = parser.parse_args()
    info = machine()
    start = time.perf_counter()
    if args.quick:
        section1 = sample_sizes([614], {614: 2})
        section2, section4 = split_spread({"coarse": 2, "fine": 1}), []
    else:
        section1 = sample_sizes([614, 5000, 50000], {614: 5, 5000: 3, 50000: 1})
        section2, section4 = split_spread({"coarse": 10, "fine": 5}), rendering()
    section3 = outliers()
    info["total_s"] = round(time.perf_counter() - start, 1)
    md = markdown(info, section1, section2, section3, section4)
    print(md)
    if not args.quick:
        (RESULTS / "disentanglement-estimators").mkdir(parents=True, exist_ok=True)
        payload = {"machine": info, "sample_sizes": section1, "test_split_spread": section2,
                   "outliers": section3, "fine_rendering": section4}
        for path in write_results("disentanglement-estimators/estimators", payload, md):
            print(path)


if __name__ == "__main__":
    main()
