"""How far a trained prior and the test codes are from a rotation-invariant law.

GWAE's relational GW term depends on latent distances only, so it is unchanged by any
rotation of the codes; so is an isotropic Gaussian prior. The factorised meta-prior
can prefer axis-aligned (disentangled) codes only once its learnt 1-D marginals leave
the Gaussian family. For each run directory this draws 50,000 prior samples (fixed
seed) and reads the saved test codes, and reports per code dimension the standard
deviation and the excess kurtosis (0 for a Gaussian, -1.2 for a uniform law: the
`shapes` positions are uniform over 8 values) and skewness, averaged over dimensions
(with the extremes), and the largest |correlation| between two code dimensions.

    python benchmarks/prior_marginals.py RUN_DIR [RUN_DIR ...] [--name NAME]

Writes ``benchmarks/results/prior_marginals[_NAME].{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine, write_results  # noqa: E402

PRIOR_SAMPLES = 50_000


def shape_statistics(z: np.ndarray) -> dict[str, float]:
    """Per-dimension std, excess kurtosis, skewness (mean / min / max over dimensions) and
    the largest |correlation| between two dimensions of ``z`` ``(N, d)``."""
    z = np.asarray(z, dtype=np.float64)
    std = z.std(0)
    standardised = (z - z.mean(0)) / np.maximum(std, 1e-12)
    kurtosis = (standardised**4).mean(0) - 3.0
    skew = (standardised**3).mean(0)
    corr = np.corrcoef(z, rowvar=False)
    off = np.abs(corr[~np.eye(corr.shape[0], dtype=bool)]) if z.shape[1] > 1 else np.zeros(1)
    return {
        "excess_kurtosis": [round(float(k), 4) for k in kurtosis],
        "skew": [round(float(v), 4) for v in skew],
        "std_mean": float(std.mean()),
        "excess_kurtosis_mean": float(kurtosis.mean()),
        "excess_kurtosis_min": float(kurtosis.min()),
        "excess_kurtosis_max": float(kurtosis.max()),
        "skew_abs_max": float(np.abs(skew).max()),
        "max_abs_correlation": float(off.max()),
    }


def measure(run_dir: Path) -> dict:
    from otae.experiment import load_run

    _, model, _ = load_run(run_dir)
    with torch.no_grad():
        prior = model.prior.sample(PRIOR_SAMPLES, torch.Generator().manual_seed(0))
    codes = np.load(run_dir / "test_codes.npz")["codes"]
    prior_stats, code_stats = shape_statistics(prior.double().numpy()), shape_statistics(codes)
    return {
        "run": str(run_dir),
        "prior": prior_stats,
        "codes": code_stats,
        "skew_signs_shared": skew_signs_shared(prior_stats["skew"], code_stats["skew"]),
        "factorised": factorised_parameters(model.prior),
    }


#: a marginal this skewed (|skew| >= 0.1) has a side for the codes to follow
SKEWED = 0.1


def skew_signs_shared(prior_skew, code_skew) -> list[int]:
    """``[shared, skewed]``: of the prior's dimensions with |skew| >= :data:`SKEWED`, how
    many the codes skew the same way in. A prior whose marginals are not Gaussian singles
    out its axes (a rotation changes them); codes that follow its skew dimension by
    dimension are being pulled onto those axes."""
    pairs = [(p, c) for p, c in zip(prior_skew, code_skew, strict=True) if abs(p) >= SKEWED]
    return [sum((p > 0) == (c > 0) for p, c in pairs), len(pairs)]


def factorised_parameters(prior) -> dict[str, float] | None:
    """A :class:`~otae.priors.meta.FactorisedQuantilePrior`'s learnt parameters, averaged over
    coordinates: linear scale ``a_k``, shift ``b_k`` and tanh output weights ``v_kh`` (at
    construction 1, 0 and softplus(-4 + 0.1 N(0, 1)) ~ 0.018); None for other priors."""
    from otae.priors.meta import FactorisedQuantilePrior

    if not isinstance(prior, FactorisedQuantilePrior):
        return None
    with torch.no_grad():
        scale = torch.nn.functional.softplus(prior.raw_scale)
        _, out_weight = prior._weights()
        return {
            "scale_mean": float(scale.mean()),
            "shift_abs_mean": float(prior.shift.abs().mean()),
            "tanh_weight_mean": float(out_weight.mean()),
            "tanh_weight_max": float(out_weight.max()),
        }


def markdown(rows: list[dict], info: dict) -> str:
    lines = [
        "# Prior marginals and test codes: distance from a rotation-invariant law",
        "",
        f"{PRIOR_SAMPLES} prior samples (seed 0) and the saved test codes of each run. "
        "Excess kurtosis per dimension (mean [min, max] over dimensions): 0 for a "
        "Gaussian, -1.2 for a uniform law. Written by `benchmarks/prior_marginals.py` on "
        f"{info['cpu']} ({info['torch_threads']} threads), torch {info['torch']}, "
        f"{info['date']}.",
        "",
        "| run | prior std | prior excess kurtosis | prior max |skew| | codes excess kurtosis "
        "| codes max |corr| |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        p, c = r["prior"], r["codes"]
        lines.append(
            f"| {r['run']} | {p['std_mean']:.2f} | {p['excess_kurtosis_mean']:.2f} "
            f"[{p['excess_kurtosis_min']:.2f}, {p['excess_kurtosis_max']:.2f}] "
            f"| {p['skew_abs_max']:.2f} | {c['excess_kurtosis_mean']:.2f} "
            f"[{c['excess_kurtosis_min']:.2f}, {c['excess_kurtosis_max']:.2f}] "
            f"| {c['max_abs_correlation']:.2f} |"
        )
    for r in rows:
        p, c = r["prior"], r["codes"]
        shared, skewed = r["skew_signs_shared"]
        lines += [
            "",
            f"{r['run']}, per dimension: excess kurtosis and skew of the prior's samples and "
            f"of the test codes (the codes skew the prior's way in {shared} of its {skewed} "
            f"dimensions with |skew| >= {SKEWED}).",
            "",
            "| dim | prior kurtosis | prior skew | codes kurtosis | codes skew |",
            "|---|---|---|---|---|",
            *(f"| z{k} | {pk:.2f} | {ps:.2f} | {ck:.2f} | {cs:.2f} |"
              for k, (pk, ps, ck, cs) in enumerate(zip(p["excess_kurtosis"], p["skew"],
                                                       c["excess_kurtosis"], c["skew"],
                                                       strict=True))),
        ]  # fmt: skip
    factorised = [r for r in rows if r.get("factorised")]
    if factorised:
        lines += [
            "",
            "Factorised meta-prior parameters (means over coordinates; at construction: "
            "scale 1, shift 0, tanh weights ~0.018):",
            "",
            "| run | scale a | abs(shift b) | tanh weight v (mean) | tanh weight v (max) |",
            "|---|---|---|---|---|",
        ]
        for r in factorised:
            f = r["factorised"]
            lines.append(
                f"| {r['run']} | {f['scale_mean']:.3f} | {f['shift_abs_mean']:.3f} "
                f"| {f['tanh_weight_mean']:.4f} | {f['tanh_weight_max']:.4f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--name", default="", help="suffix of the result files")
    args = parser.parse_args()
    info = machine()
    rows = [measure(run) for run in args.runs]
    md = markdown(rows, info)
    stem = "prior_marginals" + (f"_{args.name}" if args.name else "")
    write_results(stem, {"machine": info, "runs": rows}, md)
    print(md)


if __name__ == "__main__":
    main()
