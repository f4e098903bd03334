"""Gather the view-set tables of benchmarks/multiview_view_sets.sh into one summary.

For every view set and regime (folders ``RESULTS/<views>/<regime>/`` written by
``otae multiview``): each method's test accuracy as mean ± standard error over the
finished seeds, its paired difference to Independent AEs in standard-error units, the
diverged cells, and the views whose Independent encoder collapsed (latent-mean spread
below ``COLLAPSE_SPREAD``) with their single-view accuracy next to AEs+GW's.

Writes ``summary.md`` and ``summary.json`` (with the machine and date) into RESULTS.
Usage: python benchmarks/multiview_view_sets.py benchmarks/results/multiview/view-sets
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402

from otae.cotraining import COLLAPSE_SPREAD, METHOD_LABELS, METHODS  # noqa: E402
from otae.cotraining.protocol import paired_difference  # noqa: E402

REGIMES = {
    "none-latent2": "raw views, latent 2",
    "standardise-latent2": "standardised views, latent 2",
    "standardise-latent20": "standardised views, latent 20",
}


def _per_seed(text: str) -> list[float]:
    return [math.nan if v == "diverged" else float(v) / 100 for v in text.split(";") if v]


def _read(folder: Path) -> dict:
    rows = list(csv.DictReader((folder / "table.csv").open()))
    accuracies = {r["method"]: _per_seed(r["accuracies"]) for r in rows if r["accuracies"]}
    diagnostics: dict[str, dict[str, dict]] = {}
    path = folder / "table_diagnostics.csv"
    if path.exists():
        for r in csv.DictReader(path.open()):
            diagnostics.setdefault(r["method"], {})[r["view"]] = {
                "spread": float(r["spread_mean"]),
                "accuracy": float(r["accuracy_mean"]),
                "collapsed": r["collapsed"] == "yes",
            }
    return {"accuracies": accuracies, "diagnostics": diagnostics}


def _mean_se(values: list[float]) -> tuple[float, float, int]:
    a = 100 * np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return math.nan, math.nan, 0
    se = float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else math.nan
    return float(a.mean()), se, int(a.size)


def _cell(method: str, accs: dict[str, list[float]]) -> tuple[str, dict]:
    values = accs[method]
    mean, se, n = _mean_se(values)
    entry = {"mean": mean, "se": se, "finished": n, "seeds": len(values)}
    if n == 0:
        return f"diverged ({len(values)}/{len(values)})", entry
    text = f"{mean:.1f}" + ("" if math.isnan(se) else f" ± {se:.1f}")
    if n < len(values):
        text += f" [{n}/{len(values)}]"
    if method != "independent" and "independent" in accs:
        d, dse, _ = paired_difference(values, accs["independent"])
        entry.update(diff=d, diff_se=dse)
        if math.isfinite(dse) and dse > 0:
            entry["diff_in_se"] = d / dse
            # two-sided 5 % critical value of Student's t with (pairs - 1) degrees of freedom
            pairs = int(np.isfinite(np.asarray(values) - np.asarray(accs["independent"])).sum())
            critical = float(stats.t.ppf(0.975, pairs - 1))
            entry["t_critical"] = critical
            mark = " ✓" if d > critical * dse else (" ✗" if d < -critical * dse else "")
            text += f" ({d:+.1f}, {d / dse:+.1f} SE{mark})"
    return text, entry


def main(root: Path) -> None:
    view_sets = sorted(p.name for p in root.iterdir() if p.is_dir())
    summary = {"machine": machine(), "collapse_spread": COLLAPSE_SPREAD, "results": {}}
    lines = [
        "# Relational co-training beyond pix + fou (UCI Handwritten)",
        "",
        "Test accuracy (%), mean ± standard error over the finished seeds (5 seeds; "
        "`[k/5]` where only k finished, the rest diverged). In brackets for every method "
        "but Independent: the mean paired difference to Independent AEs (percentage "
        "points, same split per seed) and that difference in units of its paired standard "
        "error; ✓ / ✗ where it is beyond the two-sided 5 % critical value of Student's t "
        "with (seeds − 1) degrees of freedom (2.78 SE for 5 seeds), above / below; about "
        "one in twenty of the 70 comparisons would be marked by chance alone. CCA is "
        "defined for two views (— for three). "
        "Written by `benchmarks/multiview_view_sets.py` from the `otae multiview` tables "
        f"beside this file. Machine: {summary['machine']['cpu']}, torch "
        f"{summary['machine']['torch']}, {summary['machine']['date']}.",
        "",
    ]
    for regime, title in REGIMES.items():
        methods = list(METHODS)
        header = ["views"] + [METHOD_LABELS[m] for m in methods]
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for view_set in view_sets:
            folder = root / view_set / regime
            if not (folder / "table.csv").exists():
                continue
            data = _read(folder)
            cells = [view_set]
            for method in methods:
                if method not in data["accuracies"]:
                    cells.append("—")
                    continue
                text, entry = _cell(method, data["accuracies"])
                cells.append(text)
                summary["results"].setdefault(view_set, {}).setdefault(regime, {})[method] = entry
            summary["results"][view_set][regime]["diagnostics"] = data["diagnostics"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "## Collapsed views",
        "",
        "Views whose Independent encoder collapsed onto the prior (latent-mean spread "
        f"< {COLLAPSE_SPREAD:g}), with the view's single-view test accuracy (%) under "
        "Independent and under AEs+GW (mean over seeds).",
        "",
        "| views | regime | view | spread (Independent) | alone (Independent) | "
        "spread (AEs+GW) | alone (AEs+GW) |",
        "|---|---|---|---|---|---|---|",
    ]
    any_collapse = False
    for view_set, per_regime in summary["results"].items():
        for regime, entry in per_regime.items():
            ind = entry["diagnostics"].get("independent", {})
            gw = entry["diagnostics"].get("aes_gw", {})
            for view, d in ind.items():
                if d["collapsed"]:
                    any_collapse = True
                    g = gw.get(view, {})
                    lines.append(
                        f"| {view_set} | {REGIMES[regime]} | {view} | {d['spread']:.3g} | "
                        f"{d['accuracy']:.1f} | {g.get('spread', math.nan):.3g} | "
                        f"{g.get('accuracy', math.nan):.1f} |"
                    )
    if not any_collapse:
        lines.append("| (none) | | | | | | |")
    (root / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    print(root / "summary.md")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/multiview/view-sets"))
