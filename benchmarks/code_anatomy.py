"""What a trained code carries, dimension by dimension, and how visible each factor is.

A low MIG says that factors are not each in one dimension; it does not say which
factors the code carries, in how many dimensions, or whether the data makes a factor
worth encoding. For each run directory trained on a `shapes` grid this reads the best
model, encodes the test split and reports per code dimension

* the standard deviation of the posterior means and, for probabilistic encoders, the
  mean KL divergence to N(0, 1) (a dimension with KL ~ 0 transmits nothing),
* the excess kurtosis of each dimension's posterior means and of the aggregate
  posterior's marginal (one draw z ~ q(z|x) per test image, seed 0): 0 for a Gaussian,
  -1.2 for a uniform law. A code whose marginals are Gaussian is rotation invariant in
  law, so its total correlation cannot prefer one rotation (`benchmarks/tc_rotation.py`),
* the correlation ratio eta^2 of each factor (the share of the dimension's variance
  that the factor explains alone, `otae.evaluation.disentanglement.correlation_ratio`),
* each factor's MIG gap with its best and runner-up dimensions.

For the data it reports how much one step of each factor changes an image: the mean
sum of squared pixel differences between images one grid step apart (2000 random grid
points, seed 0), at 32 x 32 and 64 x 64, next to the mean ink (sum of pixel values).
That is the reconstruction error a model accepts by not encoding the factor at all.

    python benchmarks/code_anatomy.py RUN_DIR [RUN_DIR ...] --name NAME [--checkpoint last]

Writes ``benchmarks/results/NAME.{json,md}`` (NAME may contain a folder).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import scipy.stats
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import RESULTS, machine, machine_markdown, write_results  # noqa: E402

PIXEL_POINTS = 2000


def pixel_effects(grid: str, sizes=(32, 64), points: int = PIXEL_POINTS) -> dict:
    """Mean squared pixel change of one grid step of each factor (shape: the next
    shape; others: the next value, or the previous one at the top of the range)."""
    from otae.data.factors import SHAPES_FACTORS, shapes_grid, shapes_images

    factor_sizes = shapes_grid(grid).max(axis=0) + 1
    rng = np.random.default_rng(0)
    base = np.stack([rng.integers(0, s, points) for s in factor_sizes], axis=1)
    out: dict = {"grid": grid, "points": points, "sizes": {}}
    for size in sizes:
        images = shapes_images(base, size, grid).reshape(points, -1).astype(np.float64) / 255
        row = {"ink": float(images.sum(axis=1).mean()), "step_sse": {}}
        for k, (name, count) in enumerate(zip(SHAPES_FACTORS, factor_sizes, strict=True)):
            other = base.copy()
            up = other[:, k] + 1
            other[:, k] = up % count if k == 0 else np.where(up < count, up, other[:, k] - 1)
            moved = shapes_images(other, size, grid).reshape(points, -1).astype(np.float64) / 255
            row["step_sse"][name] = float(((moved - images) ** 2).sum(axis=1).mean())
        out["sizes"][str(size)] = row
    return out


def anatomy(run_dir: Path, checkpoint: str | None = None) -> dict:
    from otae.data import build_dataset
    from otae.evaluation.disentanglement import (
        correlation_ratio,
        mutual_information_gap,
        posterior_mutual_information_gap,
    )
    from otae.training import load_run

    # None: the checkpoint the run was scored on (best.pt with early stopping)
    config, model, state = load_run(run_dir, checkpoint)
    test = build_dataset(config.data.name, "test", image_size=config.data.image_size)
    model.eval()
    means, logvars = [], []
    with torch.no_grad():
        for start in range(0, len(test), 500):
            x, _ = test.get_batch(torch.arange(start, min(start + 500, len(test))))
            mean, logvar = model.encode(x)
            means.append(mean)
            if logvar is not None:
                logvars.append(logvar)
    mean = torch.cat(means).double().numpy()
    factors = test.factors.numpy()
    names = list(test.factor_names)
    kl = posterior = kurtosis_aggregate = None
    if logvars:
        logvar = torch.cat(logvars).double().numpy()
        kl = (0.5 * (mean**2 + np.exp(logvar) - logvar - 1)).mean(axis=0).tolist()
        posterior = posterior_mutual_information_gap(mean, logvar, factors)
        draw = mean + np.exp(0.5 * logvar) * np.random.default_rng(0).standard_normal(mean.shape)
        kurtosis_aggregate = scipy.stats.kurtosis(draw, axis=0).tolist()
    eta = correlation_ratio(mean, factors)
    mig = mutual_information_gap(mean, factors)
    mi = mig["mutual_information"] / mig["factor_entropy"]
    order = np.argsort(-mi, axis=0)
    return {
        "run": str(run_dir),
        "model": config.model.name,
        "epoch": int(state.get("epoch", 0)),
        "factors": names,
        "std": mean.std(axis=0).tolist(),
        "kl": kl,
        "kurtosis_means": scipy.stats.kurtosis(mean, axis=0).tolist(),
        "kurtosis_aggregate": kurtosis_aggregate,
        "eta2": eta.tolist(),
        "mig": mig["mig"],
        "mig_per_factor": dict(zip(names, mig["per_factor"].tolist(), strict=True)),
        "best_dimension": dict(zip(names, order[0].tolist(), strict=True)),
        "runner_up_dimension": dict(zip(names, order[1].tolist(), strict=True)),
        "normalised_mi": mi.tolist(),
        "mig_posterior": None if posterior is None else posterior["mig"],
        "mig_posterior_per_factor": None if posterior is None else dict(
            zip(names, posterior["per_factor"].tolist(), strict=True)),
        "normalised_mi_posterior": None if posterior is None else (
            posterior["mutual_information"] / posterior["factor_entropy"]).tolist(),
    }


def markdown(effects: dict, rows: list[dict], info: dict) -> str:
    names = list(next(iter(effects["sizes"].values()))["step_sse"])
    lines = [
        "# What the codes carry, and how visible each factor is",
        "",
        "Written by `benchmarks/code_anatomy.py`. " + machine_markdown(info),
        "",
        f"## One grid step of each factor (`{effects['grid']}` grid, {effects['points']} "
        "random points)",
        "",
        "Mean per-image sum of squared pixel differences (pixels in [0, 1]) between an "
        "image and the one a grid step away in one factor; ink: the mean sum of pixel "
        "values. Compare with a model's reconstruction loss: a factor whose step costs "
        "less than the model's error is cheap to leave out of the code.",
        "",
        "| size | ink | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for size, row in effects["sizes"].items():
        cells = [f"{row['step_sse'][n]:.2f} ({row['step_sse'][n] / row['ink']:.0%})"
                 for n in names]  # fmt: skip
        lines.append(f"| {size} x {size} | {row['ink']:.1f} | " + " | ".join(cells) + " |")
    for r in rows:
        factors = r["factors"]
        lines += [
            "",
            f"## {r['run']} ({r['model']}, epoch {r['epoch']}): MIG {r['mig']:.3f}"
            + ("" if r["mig_posterior"] is None else f", MIG (q) {r['mig_posterior']:.3f}"),
            "",
            "Per code dimension (rows by decreasing std of the posterior means): std, mean "
            "KL to N(0, 1) (probabilistic encoders), excess kurtosis of the posterior means "
            "and of the aggregate posterior's marginal (0: Gaussian, -1.2: uniform), and "
            "eta^2 of each factor (the share of the dimension's variance the factor explains "
            "alone; a dimension that is an additive function of the factors sums to 1 across "
            "its row).",
            "",
            "| dim | std | KL | kurt. means | kurt. q(z_k) | " + " | ".join(factors) + " | sum |",
            "|---|---|---|---|---|" + "---|" * (len(factors) + 1),
        ]
        for j in np.argsort(-np.asarray(r["std"])):
            eta = r["eta2"][j]
            kl = "—" if r["kl"] is None else f"{r['kl'][j]:.3f}"
            k_means = r.get("kurtosis_means")
            k_agg = r.get("kurtosis_aggregate")
            kurt = (("—" if k_means is None else f"{k_means[j]:.2f}") + " | "
                    + ("—" if k_agg is None else f"{k_agg[j]:.2f}"))  # fmt: skip
            lines.append(
                f"| z{j} | {r['std'][j]:.3f} | {kl} | {kurt} | "
                + " | ".join(f"{e:.2f}" for e in eta) + f" | {sum(eta):.2f} |"
            )
        lines += [
            "",
            "Each factor's gap with the binned posterior means (best and runner-up dimension, "
            "I / H(factor)) and with the posteriors (MIG (q), Chen et al.'s estimator: a "
            "dimension that transmits nothing has I = 0 there).",
            "",
            "| factor | MIG gap | best dim (I / H) | runner-up dim (I / H) | MIG (q) gap "
            "| best (q) | runner-up (q) |",
            "|---|---|---|---|---|---|---|",
        ]
        for k, name in enumerate(factors):
            best, second = r["best_dimension"][name], r["runner_up_dimension"][name]
            mi = r["normalised_mi"]
            q_cells = "— | — | —"
            if r["mig_posterior"] is not None:
                mq = np.asarray(r["normalised_mi_posterior"])[:, k]
                b, s2 = np.argsort(-mq)[:2]
                q_cells = (f"{r['mig_posterior_per_factor'][name]:.3f} | z{b} ({mq[b]:.3f}) "
                           f"| z{s2} ({mq[s2]:.3f})")  # fmt: skip
            lines.append(
                f"| {name} | {r['mig_per_factor'][name]:.3f} | z{best} ({mi[best][k]:.3f}) "
                f"| z{second} ({mi[second][k]:.3f}) | {q_cells} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--name", required=True, help="result file stem under benchmarks/results")
    parser.add_argument("--grid", default="fine", choices=("coarse", "fine"))
    parser.add_argument("--checkpoint", choices=("best", "last"),
                        help="default: the one the run was scored on")
    args = parser.parse_args()
    info = machine()
    effects = pixel_effects(args.grid)
    rows = [anatomy(run, args.checkpoint) for run in args.runs]
    md = markdown(effects, rows, info)
    (RESULTS / args.name).parent.mkdir(parents=True, exist_ok=True)
    write_results(args.name, {"machine": info, "pixel_effects": effects, "runs": rows}, md)
    print(md)


if __name__ == "__main__":
    main()
