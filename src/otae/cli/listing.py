"""``otae list``: models, priors, networks, datasets, shipped configs and bench sets.

The module is not named ``list``: a submodule is an attribute of its package, and that
name would hide the builtin there.
"""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    lst = sub.add_parser("list", help="models, priors, networks, datasets and shipped configs")
    lst.add_argument(
        "what",
        nargs="?",
        choices=("models", "priors", "networks", "datasets", "configs", "bench"),
        help="list only this section (default: all of them)",
    )


def _first_line(obj) -> str:
    doc = (obj.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def run(args: argparse.Namespace) -> int:
    from ..data import DATASETS
    from ..models import MODELS
    from ..nn import ARCHITECTURES
    from ..priors import PRIORS
    from ..training import shipped_configs

    sections = {
        "models": {
            name: f"[{'P' if cls.probabilistic else 'D'}] {_first_line(cls)}"
            for name, cls in sorted(MODELS.items())
        },
        "priors": {name: "" for name in sorted(PRIORS)},
        "networks": {name: _first_line(f) for name, f in sorted(ARCHITECTURES.items())},
        "datasets": {name: _first_line(f) for name, f in sorted(DATASETS.items())},
        "configs": {name: "" for name in shipped_configs()},
        "bench": {n.removeprefix("bench/"): "" for n in shipped_configs(bench_sets=True)},
    }
    for title, entries in sections.items():
        if args.what and args.what != title:
            continue
        print(f"{title}:")
        for name, text in entries.items():
            print(f"  {name:<22} {text}".rstrip())
    return 0
