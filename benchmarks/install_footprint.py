"""Installed size of otae's dependency closure, and import / CLI start-up times.

Sizes come from the installed distributions' RECORD files (what pip would put in a
fresh environment for ``pip install otae`` or ``otae[EXTRA]``), so no second venv is
needed. Times are the best of ``--repeat`` fresh interpreters (the machine's other load
only makes them longer). Writes ``benchmarks/results/install_footprint.{json,md}``.

    python benchmarks/install_footprint.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# "ot, otae.discrepancies" is what `import otae.discrepancies` cost while POT was a hard
# dependency imported at the top of otae.discrepancies.gromov (measured side by side)
IMPORTS = ["otae", "otae.discrepancies", "ot, otae.discrepancies", "otae.models",
           "otae.losses", "torch", "ot"]
COMMANDS = [["otae", "--help"], ["otae", "list"]]


def _name(requirement: str) -> tuple[str, str | None]:
    """``(distribution, extra marker or None)`` of a requirement string."""
    name = re.split(r"[\s\[<>=!~;(]", requirement, maxsplit=1)[0]
    extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", requirement)
    return name.lower().replace("_", "-"), extra.group(1) if extra else None


def closure(root: str, extras: tuple[str, ...] = ()) -> set[str]:
    """Installed distributions ``root[extras]`` pulls in (itself included)."""
    seen: set[str] = set()
    todo = [(root, extras)]
    while todo:
        name, wanted = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency of a dependency that is not installed
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen and not wanted:
            continue
        seen.add(key)
        for requirement in dist.requires or []:
            dep, extra = _name(requirement)
            if extra is None or extra in wanted:
                if dep not in seen:
                    todo.append((dep, ()))
    return seen


def installed_mb(names: set[str]) -> dict[str, float]:
    sizes = {}
    for name in sorted(names):
        dist = metadata.distribution(name)
        total = 0
        for file in dist.files or []:
            path = Path(dist.locate_file(file))
            if path.is_file():
                total += path.stat().st_size
        sizes[name] = total / 2**20
    return sizes


def best_time(argv: list[str], repeat: int) -> float | None:
    """Best wall time of ``argv`` (None if it fails, e.g. a module that is not installed)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        if subprocess.run(argv, capture_output=True).returncode != 0:
            return None
        times.append(time.perf_counter() - start)
    return round(min(times), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--note", default="", help="a line about the conditions (load...)")
    args = parser.parse_args()
    lean = closure("otae")
    full = closure("otae", ("pot", "fid"))
    sizes = installed_mb(full)
    bin_dir = Path(sys.executable).parent
    record = {
        "machine": f"{platform.node()} ({platform.machine()}, {platform.system()})",
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
        "note": args.note,
        "installed_mb": {
            "otae (lean)": round(sum(sizes[n] for n in lean), 1),
            "otae[pot,fid]": round(sum(sizes.values()), 1),
            "torch": round(sizes.get("torch", 0.0), 1),
            "pot": round(sizes.get("pot", 0.0), 1),
        },
        "lean_closure": sorted(lean),
        "import_s": {
            module: best_time([sys.executable, "-c", f"import {module}"], args.repeat)
            for module in IMPORTS
        },
        "command_s": {
            " ".join(argv): best_time([str(bin_dir / argv[0]), *argv[1:]], args.repeat)
            for argv in COMMANDS
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "install_footprint.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        "# Install footprint and start-up",
        "",
        f"Machine: {record['machine']}, Python {record['python']}, {record['date']}; "
        f"times are the best of {args.repeat} fresh interpreters.",
        *([args.note] if args.note else []),
        "",
        "| installed | MB |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in record["installed_mb"].items()],
        "",
        "| import / command | seconds |",
        "|---|---|",
        *[f"| `import {k}` | {v} |" for k, v in record["import_s"].items()],
        *[f"| `{k}` | {v} |" for k, v in record["command_s"].items()],
        "",
    ]
    (RESULTS / "install_footprint.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
