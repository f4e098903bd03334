"""``otae multiview``: relational co-training on unpaired views (the paper's §6.2 protocol),
and its regime map (``--sweep``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import count_option


def add_parser(sub) -> None:
    mv = sub.add_parser(
        "multiview", help="relational co-training on unpaired views: the paper's §6.2 protocol"
    )
    mv.add_argument("--data", default="handwritten", help="handwritten, or a .mat / .npz file")
    mv.add_argument(
        "--views", help="comma-separated view names (handwritten: fou, fac, kar, pix, zer, mor)"
    )
    mv.add_argument(
        "--methods",
        default="all",
        help="all, or a comma-separated subset of: independent, coreg, cca, aes_cca, aes_w, aes_gw",
    )
    mv.add_argument(
        "--seeds",
        default="10",
        help="which seeds: a count N means seeds 0..N-1 ('5': 0-4); a comma makes a list "
        "('2,7': seeds 2 and 7; '3,': seed 3 alone); A-B is a range ('3-6': 3, 4, 5, 6)",
    )
    mv.add_argument("--out", type=Path, help="output folder (default: runs/multiview/DATA-VIEWS)")
    mv.add_argument("--epochs", type=int, help="autoencoder training epochs (default 30)")
    mv.add_argument("--latent-dim", type=int, help="latent size per view (default 20)")
    mv.add_argument("--tau", type=float, help="weight of the relational term (default 0.5)")
    mv.add_argument("--gamma", type=float, help="weight of the regularisers (default 1)")
    mv.add_argument(
        "--lr", type=float, help="Adam learning rate of the autoencoders (default 1e-3)"
    )
    mv.add_argument(
        "--fail-on-divergence",
        action="store_true",
        help="exit with status 3 when any (seed, method) cell diverged (by default a "
        "diverged cell is recorded in the tables and the run exits 0)",
    )
    mv.add_argument(
        "--fresh",
        action="store_true",
        help="train every cell again; by default cells already finished with the same "
        "settings (OUT/cells.jsonl) are taken from there, so a killed run resumes",
    )
    mv.add_argument(
        "--discrepancy",
        choices=("hierarchical", "sliced", "empirical"),
        help="D / D_gw family (default hierarchical, the paper's)",
    )
    mv.add_argument(
        "--preprocess",
        choices=("standardise", "none", "minmax"),
        default="standardise",
        help="per-view scaling with training statistics: z-score (default), raw values, or "
        "each column to [0, 1]",
    )
    mv.add_argument(
        "--labels-per-class",
        type=int,
        metavar="N",
        help="train the classifier on only N labelled training rows per class (default: all)",
    )
    mv.add_argument(
        "--disjoint",
        action="store_true",
        help="split the training rows into one disjoint part per view (no pairs); paired "
        "methods are reported n/a",
    )
    mv.add_argument(
        "--sweep",
        action="append",
        metavar="FACTOR=V1,V2",
        help="regime map: run the protocol at each value of FACTOR (preprocess, "
        "labels_per_class, disjoint, latent_dim, tau, gamma, epochs), the other settings "
        "as given; repeat for several factors (one at a time; all combinations with --grid); "
        "writes sweep.md / sweep.csv / sweep.png",
    )
    mv.add_argument("--grid", action="store_true", help="with --sweep: every combination")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from ..cotraining import (
        METHODS,
        AESettings,
        ProtocolConfig,
        applicable_methods,
        run_protocol,
        write_table,
    )
    from ..cotraining.protocol import divergence_summary, scale_warning
    from ..cotraining.sweep import parse_factor
    from ..data import load_multiview

    views = [v.strip() for v in args.views.split(",")] if args.views else None
    data = load_multiview(args.data, views)
    if len(data.views) < 2:
        raise ValueError(f"co-training needs at least 2 views, got {list(data.views)}")
    methods = (
        list(METHODS) if args.methods == "all" else [m.strip() for m in args.methods.split(",")]
    )
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    left_out = ""
    if len(data.views) != 2 and "cca" in methods:
        methods.remove("cca")
        left_out = (
            f"\nCCA is defined for two views: it is left out of this {len(data.views)}-view run.\n"
        )
        print(
            "note: CCA is defined for two views; it is left out of this "
            f"{len(data.views)}-view run",
            file=sys.stderr,
        )
    seeds = parse_seeds(args.seeds)
    applicable_methods(methods, args.disjoint)  # a ValueError if nothing can run
    count_option(args.labels_per_class, "--labels-per-class", 1)
    settings = {
        k: v
        for k, v in {
            "epochs": args.epochs,
            "latent_dim": args.latent_dim,
            "tau": args.tau,
            "gamma": args.gamma,
            "lr": args.lr,
            "discrepancy": args.discrepancy,
        }.items()
        if v is not None
    }
    try:  # AESettings checks the ranges of --epochs ... --lr
        ae = dataclasses.replace(AESettings(), **settings)
    except ValueError as err:
        raise ValueError(_naming_the_option(str(err), settings)) from None
    view_tag = "+".join(data.views)
    # Non-default regimes are part of the default folder name, so runs do not overwrite
    # each other.
    regime_tag = "".join(
        tag
        for tag, on in (
            (f"-{args.preprocess}", args.preprocess != "standardise"),
            (f"-{args.labels_per_class}perclass", args.labels_per_class is not None),
            ("-disjoint", args.disjoint),
        )
        if on
    )
    out = args.out or (
        Path("runs") / "multiview" / f"{Path(str(args.data)).stem}-{view_tag}{regime_tag}"
    )
    # The paper's Table 4 column for Handwritten is the two views pix + fou.
    paper_setting = data.name == "handwritten" and set(data.views) == {"pix", "fou"}
    dataset = "Handwritten" if paper_setting else f"{data.name} ({view_tag})"
    config = ProtocolConfig(
        ae=ae,
        tsne_path=out / "tsne_aes_gw.png",
        dataset=dataset,
        log=lambda m: print(m, file=sys.stderr, flush=True),
        preprocess=args.preprocess,
        labels_per_class=args.labels_per_class,
        disjoint=args.disjoint,
        cells=out / "cells.jsonl",
        fresh=args.fresh,
    )
    if args.grid and not args.sweep:
        raise ValueError("--grid needs at least one --sweep FACTOR=V1,V2")
    swept = {parse_factor(text)[0]: parse_factor(text)[1] for text in args.sweep or ()}
    for preprocess in swept.get("preprocess", [args.preprocess]):
        warning = scale_warning(data.views, preprocess)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    if args.sweep:
        return _sweep(args, data, methods, seeds, config, out)
    out.mkdir(parents=True, exist_ok=True)
    results = run_protocol(data.views, data.labels, methods, seeds, config)
    write_table(results, out / "table.md", out / "table.csv", dataset=dataset)
    if left_out:
        with (out / "table.md").open("a") as handle:
            handle.write(left_out)
    print((out / "table.md").read_text())
    print(f"tables: {out / 'table.md'}, {out / 'table.csv'}")
    if (out / "table_diagnostics.csv").exists():
        print(f"per-view diagnostics: {out / 'table_diagnostics.csv'}")
    if (out / "tsne_aes_gw.png").exists():
        print(f"t-SNE of the AEs+GW features: {out / 'tsne_aes_gw.png'}")
    return _divergence_exit(divergence_summary(results), args.fail_on_divergence)


def _naming_the_option(message: str, fields) -> str:
    """An :class:`~otae.cotraining.AESettings` message about field ``latent_dim`` as one
    about the option ``--latent-dim``."""
    for name in fields:
        if message.startswith(f"{name} "):
            return f"--{name.replace('_', '-')}{message[len(name):]}"
    return message


def _divergence_exit(summary: str | None, strict: bool) -> int:
    """Print the one-line divergence summary (if any cell diverged); 3 under
    ``--fail-on-divergence`` when one did, else 0."""
    if summary is None:
        return 0
    print(f"otae: {summary}", file=sys.stderr)
    return 3 if strict else 0


def parse_seeds(text: str, option: str = "--seeds") -> list[int]:
    """``otae multiview --seeds``: ``"5"`` is a count (seeds 0..4); a comma makes a list
    (``"2,7"``; ``"3,"`` is seed 3 alone); ``"A-B"`` is the range A..B inclusive."""
    text = text.strip()
    if "," in text:
        items = [item for item in text.split(",") if item.strip()]
        if not items or any(not item.strip().isdigit() for item in items):
            raise ValueError(
                f"{option}: a list holds seeds >= 0 separated by commas (e.g. 2,7 or 3,), "
                f"got {text!r}"
            )
        seeds = [int(item) for item in items]
    elif "-" in text:
        low, _, high = text.partition("-")
        if not (low.strip().isdigit() and high.strip().isdigit()) or int(low) > int(high):
            raise ValueError(f"{option}: a range reads A-B with 0 <= A <= B, got {text!r}")
        seeds = list(range(int(low), int(high) + 1))
    else:
        if not text.isdigit() or int(text) < 1:
            raise ValueError(
                f"{option} must be a count N >= 1 (seeds 0..N-1), a comma-separated list "
                f"(2,7; 3, for seed 3 alone) or a range A-B, got {text!r}"
            )
        seeds = list(range(int(text)))
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{option} lists a seed twice: {text!r}")
    return seeds


def _sweep(args, data, methods, seeds, config, out: Path) -> int:
    """``otae multiview --sweep``: the regime map around the settings given."""
    import dataclasses

    from ..cotraining.sweep import parse_factor, run_sweep, write_sweep

    factors: dict[str, list] = {}
    for text in args.sweep:
        name, values = parse_factor(text)
        if name in factors:
            raise ValueError(f"--sweep {name} is given twice")
        factors[name] = values
    out = out / ("sweep-grid" if args.grid else "sweep") if args.out is None else out
    config = dataclasses.replace(config, tsne_path=None)
    config = dataclasses.replace(config, cells=out / "cells.jsonl")
    results = run_sweep(data.views, data.labels, methods, seeds, config, factors,
                        grid=args.grid, log=config.log)  # fmt: skip
    paths = write_sweep(results, out)
    print(paths["md"].read_text() if "md" in paths else "")
    print("sweep:", *paths.values())
    summary = None
    if results.diverged:
        total = sum(len(v) for accs in results.accuracies for v in accs.values())
        fix = results.diverged[0][3].get("fix", "")
        summary = f"{len(results.diverged)} of {total} cells diverged (see sweep.md); fix: {fix}"
    return _divergence_exit(summary, args.fail_on_divergence)
