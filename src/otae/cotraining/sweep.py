r"""Regime map of relational co-training: :func:`run_protocol` over a sweep of settings.

Relational co-training (AEs+GW) beats independent autoencoders only in some regimes
(e.g. unstandardised views with a low-variance view, a small latent size, few labels
for the classifier). A sweep varies such *factors* around a base
:class:`~otae.cotraining.protocol.ProtocolConfig` and runs the full protocol (all
``methods`` x ``seeds``) at every setting, so one can SEE where it helps.

Factors (:data:`FACTORS`; ``name=V1,V2,...`` on the command line, :func:`parse_factor`):

* on :class:`ProtocolConfig`: ``preprocess`` (``standardise``, ``none``, ``minmax``),
  ``labels_per_class`` (an integer >= 1, or ``all``), ``disjoint`` (``true``/``false``);
* on :class:`~otae.cotraining.baselines.AESettings`: ``latent_dim`` (int >= 1), ``tau``
  (in [0, 1]), ``gamma`` (>= 0), ``epochs`` (int >= 1).

A factor is applied with :func:`dataclasses.replace` on the object that owns it; a
factor whose field this version of the owner lacks is refused with a ValueError before
anything runs.

Designs (:func:`run_sweep`): one-factor-at-a-time by default (each factor takes each of
its values while the others stay at their BASE values, i.e. those of ``base``), or the
full grid (``grid=True``, every combination). Identical settings run once (e.g. the base
setting reached from two factors). The t-SNE figure of the protocol is off in a sweep.

Outputs (:func:`write_sweep`), accuracies in %:

* ``sweep.csv``: one row per setting x method: the value of every factor, ``n_seeds``,
  ``mean``, ``std`` (sample), ``se`` (= std / sqrt(n)), the per-seed accuracies, and when
  both ``aes_gw`` and ``independent`` ran, the paired difference
  :math:`\bar d` with :math:`d_i = \mathrm{acc}^{\mathrm{GW}}_i - \mathrm{acc}^{\mathrm{Ind}}_i`
  over seeds (same split per seed), its paired standard error
  :math:`\mathrm{sd}(d) / \sqrt{n}` and ``gw_beats_independent`` (``True`` when
  :math:`\bar d > 3\,\mathrm{SE}`, needs n >= 2 seeds);
* ``sweep.md``: one table per factor (rows = its values, columns = methods, cells
  mean ± std) plus the AEs+GW − Independent column (mean ± paired SE, ✓ beyond 3 SE). In
  the one-at-a-time design a factor's table holds the settings with the other factors at
  base; in the grid design it pools, per value, the (setting, seed) pairs over the other
  factors' values (their main effect), and a last table lists every setting;
* ``sweep.png``: one panel per factor, the accuracy of each method against the factor's
  values (error bars: std), built from the same rows as the tables; ``*`` marks the
  AEs+GW points that beat Independent by 3 SE. String, boolean and ``all`` values are
  placed categorically.

Intended CLI (wired in ``otae multiview`` by the CLI's owner)::

  otae multiview --data handwritten --views pix,fou --methods independent,aes_gw \
      --seeds 5 --sweep preprocess=standardise,none --sweep latent_dim=2,20 \
      [--grid]            # writes OUT/sweep.csv, OUT/sweep.md, OUT/sweep.png

Each ``--sweep`` goes through :func:`parse_factor`; the other options build the base
``ProtocolConfig``; then ``write_sweep(run_sweep(...), OUT)``.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write, atomic_write_text
from .baselines import METHOD_LABELS
from .protocol import (
    ProtocolConfig,
    accuracy_summary,
    format_accuracy,
    paired_difference,
    run_protocol,
)

__all__ = [
    "FACTORS",
    "Factor",
    "SweepResults",
    "paired_difference",
    "parse_factor",
    "run_sweep",
    "sweep_settings",
    "write_sweep",
]

#: The methods compared by the difference column.
_GW, _IND = "aes_gw", "independent"


def _int_at_least_1(text: str) -> int:
    if not text.strip().lstrip("+").isdigit() or int(text) < 1:
        raise ValueError(f"expected an integer >= 1, got {text!r}")
    return int(text)


def _float_in(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not low <= value <= high:  # NaN fails too
            raise ValueError(f"expected a number in [{low:g}, {high:g}], got {text!r}")
        return value

    return parse


def _labels(text: str) -> int | None:
    # None is ProtocolConfig's "every training label".
    return None if text.strip().lower() == "all" else _int_at_least_1(text)


def _boolean(text: str) -> bool:
    words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    if text.strip().lower() not in words:
        raise ValueError(f"expected true or false, got {text!r}")
    return words[text.strip().lower()]


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.strip() not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
        return text.strip()

    return parse


@dataclass(frozen=True)
class Factor:
    """A sweepable setting: ``owner`` is ``"config"`` (:class:`ProtocolConfig`) or
    ``"ae"`` (its ``ae`` :class:`AESettings`); ``parse`` turns one CLI value into the
    field's value or raises ValueError."""

    owner: str
    parse: Callable[[str], Any]


#: Supported factor names -> where they live and how a CLI value is parsed.
FACTORS: dict[str, Factor] = {
    "preprocess": Factor("config", _choice("standardise", "none", "minmax")),
    "labels_per_class": Factor("config", _labels),
    "disjoint": Factor("config", _boolean),
    "latent_dim": Factor("ae", _int_at_least_1),
    "tau": Factor("ae", _float_in(0.0, 1.0)),
    "gamma": Factor("ae", _float_in(0.0, math.inf)),
    "epochs": Factor("ae", _int_at_least_1),
}


def _known(name: str) -> Factor:
    if name not in FACTORS:
        raise ValueError(f"unknown sweep factor {name!r}; known factors: {', '.join(FACTORS)}")
    return FACTORS[name]


def parse_factor(text: str) -> tuple[str, list]:
    """``"latent_dim=2,20"`` -> ``("latent_dim", [2, 20])`` (``-`` in the name reads as
    ``_``); a missing ``=``, an unknown name, an empty, invalid or repeated value raises a
    one-line ValueError."""
    name, sep, raw = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name:
        raise ValueError(f"a sweep factor reads NAME=V1,V2,..., got {text!r}")
    factor = _known(name)
    values = []
    for item in raw.split(","):
        if not item.strip():
            raise ValueError(f"sweep factor {name}: empty value in {text!r}")
        try:
            value = factor.parse(item)
        except ValueError as err:
            raise ValueError(f"sweep factor {name}: {err}") from None
        if value in values:
            raise ValueError(f"sweep factor {name}: value {item.strip()!r} given twice")
        values.append(value)
    return name, values


def _base_value(base: ProtocolConfig, name: str) -> Any:
    owner = base if _known(name).owner == "config" else base.ae
    if not any(f.name == name for f in dataclasses.fields(owner)):
        raise ValueError(
            f"sweep factor {name!r} needs the field {type(owner).__name__}.{name}, "
            "which this version of otae lacks"
        )
    return getattr(owner, name)


def _apply(base: ProtocolConfig, values: Mapping[str, Any]) -> ProtocolConfig:
    """``base`` with the factor values set on their owners; no t-SNE (see module doc)."""
    on_ae = {k: v for k, v in values.items() if FACTORS[k].owner == "ae"}
    on_config = {k: v for k, v in values.items() if FACTORS[k].owner == "config"}
    return dataclasses.replace(
        base, ae=dataclasses.replace(base.ae, **on_ae), tsne_path=None, **on_config
    )


def sweep_settings(
    base_values: Mapping[str, Any], factors: Mapping[str, Sequence], grid: bool = False
) -> list[dict[str, Any]]:
    """The distinct settings, each a dict over every factor of ``factors`` (in its order).

    One-at-a-time: factor by factor, value by value, the others at ``base_values``; a
    setting met before (e.g. the base one) is not repeated. Grid: ``itertools.product``
    of the values, the last factor varying fastest.
    """
    names = list(factors)
    if grid:
        combos = itertools.product(*(factors[n] for n in names))
        return [dict(zip(names, combo, strict=True)) for combo in combos]
    settings: list[dict[str, Any]] = []
    for name in names:
        for value in factors[name]:
            setting = {n: (value if n == name else base_values[n]) for n in names}
            if setting not in settings:
                settings.append(setting)
    return settings


@dataclass
class SweepResults:
    """What :func:`run_sweep` ran: ``factors`` (name -> values, in order), ``base`` (name ->
    base value), ``grid``, and per setting (aligned lists) its factor values
    (``settings``) and its per-method per-seed test accuracies (``accuracies``, fractions,
    in the order of ``seeds``)."""

    methods: list[str]
    seeds: list[int]
    factors: dict[str, list]
    base: dict[str, Any]
    grid: bool = False
    settings: list[dict[str, Any]] = field(default_factory=list)
    accuracies: list[dict[str, list[float]]] = field(default_factory=list)
    #: per diverged cell: (setting index, seed, method, divergence record)
    diverged: list[tuple[int, int, str, dict]] = field(default_factory=list)

    def factor_rows(self, name: str) -> list[tuple[Any, dict[str, list[float]]]]:
        """Per value of factor ``name`` (in order): ``{method: accuracies}`` of the settings
        it summarises (module docstring), seeds of several settings concatenated in the
        same order for every method so that pairs stay aligned; values with no setting
        are left out."""
        rows = []
        for value in self.factors[name]:
            pooled: dict[str, list[float]] = {m: [] for m in self.methods}
            for setting, accs in zip(self.settings, self.accuracies, strict=True):
                others_at_base = all(setting[n] == self.base[n] for n in self.factors if n != name)
                if setting[name] == value and (self.grid or others_at_base):
                    for m in self.methods:
                        pooled[m].extend(accs[m])
            if pooled[self.methods[0]]:
                rows.append((value, pooled))
        return rows


def run_sweep(
    views: Mapping[str, np.ndarray],
    labels: np.ndarray,
    methods: Sequence[str],
    seeds: Sequence[int],
    base: ProtocolConfig,
    factors: Mapping[str, Sequence],
    grid: bool = False,
    log: Callable[[str], None] | None = None,
) -> SweepResults:
    """Run :func:`run_protocol` at every setting of :func:`sweep_settings`.

    ``factors``: name -> values (parsed values, or CLI strings parsed here); ``base``:
    the setting the one-at-a-time design varies around (and, for the grid, the rest of
    the configuration). Unknown factors, factors ``base`` lacks, empty or repeated value
    lists and an empty ``methods`` raise ValueError before anything runs. ``log`` gets
    one line per setting.
    """
    if not factors:
        raise ValueError(f"a sweep needs at least one factor; known factors: {', '.join(FACTORS)}")
    if not methods:
        raise ValueError("a sweep needs at least one method")
    parsed: dict[str, list] = {}
    for name, values in factors.items():
        factor = _known(name)
        values = [factor.parse(v) if isinstance(v, str) else v for v in values]
        if not values or any(values.count(v) > 1 for v in values):
            raise ValueError(f"sweep factor {name}: give distinct values, got {values}")
        parsed[name] = values
    base_values = {name: _base_value(base, name) for name in parsed}
    settings = sweep_settings(base_values, parsed, grid)
    results = SweepResults(list(methods), [int(s) for s in seeds], parsed, base_values, grid)
    log = log or (lambda _: None)
    for index, setting in enumerate(settings, 1):
        log(f"sweep setting {index}/{len(settings)}: {_describe(setting)}")
        outcome = run_protocol(views, labels, methods, seeds, _apply(base, setting))
        results.settings.append(setting)
        results.accuracies.append({m: list(outcome.accuracies[m]) for m in methods})
        for seed, method, record in outcome.diverged_cells():
            results.diverged.append((index - 1, seed, method, record))
    return results


def _fmt(value: Any) -> str:
    if value is None:
        return "all"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _describe(setting: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in setting.items())


def _compared(results: SweepResults) -> bool:
    return _GW in results.methods and _IND in results.methods


def write_sweep(results: SweepResults, out_dir: str | Path) -> dict[str, Path]:
    """Write ``sweep.csv``, ``sweep.md`` and ``sweep.png`` (module docstring) into
    ``out_dir``; returns their paths by suffix (``"csv"``, ``"md"``, ``"png"``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "sweep.csv", "md": out / "sweep.md", "png": out / "sweep.png"}
    _write_csv(results, paths["csv"])
    atomic_write_text(paths["md"], _markdown(results))
    _plot(results, paths["png"])
    return paths


def _write_csv(results: SweepResults, path: Path) -> None:
    fields = list(results.factors) + ["method", "n_seeds", "n_diverged", "mean", "std", "se"]
    fields += ["accuracies"]
    fields += ["gw_minus_independent", "gw_minus_independent_se", "gw_beats_independent"]

    def write(handle) -> None:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for setting, accs in zip(results.settings, results.accuracies, strict=True):
            diff = (
                paired_difference(accs[_GW], accs[_IND])
                if _compared(results)
                else (math.nan, math.nan, None)
            )
            for method in results.methods:
                values = accs[method]
                mean, std = accuracy_summary(values)
                finished = sum(1 for v in values if math.isfinite(v))
                writer.writerow(
                    {
                        **{k: _fmt(v) for k, v in setting.items()},
                        "method": method,
                        "n_seeds": len(values),
                        "n_diverged": len(values) - finished,
                        "mean": "" if math.isnan(mean) else f"{mean:.4f}",
                        "std": "" if math.isnan(std) else f"{std:.4f}",
                        "se": "" if math.isnan(std) else f"{std / math.sqrt(finished):.4f}",
                        "accuracies": ";".join(
                            f"{100 * v:.4f}" if math.isfinite(v) else "diverged" for v in values
                        ),
                        "gw_minus_independent": "" if math.isnan(diff[0]) else f"{diff[0]:.4f}",
                        "gw_minus_independent_se": "" if math.isnan(diff[1]) else f"{diff[1]:.4f}",
                        "gw_beats_independent": "" if diff[2] is None else str(diff[2]),
                    }
                )

    atomic_write(path, write, mode="w")


def _diff_cell(accs: Mapping[str, Sequence[float]]) -> str:
    mean, se, beats = paired_difference(accs[_GW], accs[_IND])
    if math.isnan(mean):
        return "n/a (no seed where both finished)"
    # One seed has no standard error.
    return f"{mean:+.2f} ± " + ("n/a" if math.isnan(se) else f"{se:.2f}") + (" ✓" if beats else "")


def _table(keys: list[str], rows: list[tuple[list[str], dict]], results: SweepResults) -> str:
    header = keys + [METHOD_LABELS.get(m, m) for m in results.methods]
    if _compared(results):
        header.append("AEs+GW − Independent")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key_cells, accs in rows:
        cells = key_cells + [format_accuracy(accs[m]) for m in results.methods]
        if _compared(results):
            cells.append(_diff_cell(accs))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _markdown(results: SweepResults) -> str:
    design = "full grid" if results.grid else "one factor at a time"
    parts = [
        f"# Co-training sweep ({design}, {len(results.settings)} settings, "
        f"seeds {', '.join(map(str, results.seeds))})\n",
        "Test accuracy (%), mean ± sample std over seeds. AEs+GW − Independent: mean "
        "paired difference over seeds (percentage points) ± its standard error; ✓ where "
        "it exceeds 3 standard errors.\n",
    ]
    for name in results.factors:
        if results.grid:
            scope = "pooled over the other factors' values"
        else:
            others = {n: v for n, v in results.base.items() if n != name}
            scope = f"others at base: {_describe(others)}" if others else "base otherwise"
        rows = [([_fmt(v)], accs) for v, accs in results.factor_rows(name)]
        parts.append(f"## {name} ({scope})\n\n" + _table([name], rows, results))
    if results.grid:
        rows = [
            ([_fmt(v) for v in s.values()], a)
            for s, a in zip(results.settings, results.accuracies, strict=True)
        ]
        parts.append("## every setting\n\n" + _table(list(results.factors), rows, results))
    if results.diverged:
        total = sum(len(v) for accs in results.accuracies for v in accs.values())
        lines = [f"## diverged cells ({len(results.diverged)} of {total}, left out of the means)\n"]
        for index, seed, method, record in results.diverged:
            terms = ", ".join(record.get("non_finite") or [])
            lines.append(
                f"- {_describe(results.settings[index])}, seed {seed}, "
                f"{METHOD_LABELS.get(method, method)}: epoch {record.get('epoch')} "
                f"(non-finite: {terms}); {record.get('cause', '')}; fix: {record.get('fix', '')}"
            )
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def _plot(results: SweepResults, path: Path) -> None:
    # The object API (Figure + Agg canvas) leaves pyplot's global state alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(results.factors)
    fig = Figure(figsize=(4.2 * len(names), 3.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=True):
        rows = results.factor_rows(name)
        values = [v for v, _ in rows]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        x = np.asarray(values if numeric else range(len(values)), dtype=np.float64)
        for method in results.methods:
            stats = np.array([accuracy_summary(accs[method]) for _, accs in rows]).reshape(-1, 2)
            ax.errorbar(
                x,
                stats[:, 0],
                yerr=stats[:, 1],
                marker="o",
                capsize=3,
                label=METHOD_LABELS.get(method, method),
            )
            if method == _GW and _compared(results):
                for xi, (_, accs), mean in zip(x, rows, stats[:, 0], strict=True):
                    if paired_difference(accs[_GW], accs[_IND])[2]:
                        ax.annotate("*", (xi, mean), ha="center", va="bottom", fontsize=14)
        ax.set_xticks(x, [_fmt(v) for v in values])
        ax.set_xlabel(name)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle("* AEs+GW > Independent by 3 paired SE" if _compared(results) else "", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
