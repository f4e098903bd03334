"""Bench sets: what a bench trains (:class:`BenchConfig`, read from YAML by
:func:`load_bench`), the (run, seed) pairs it measures (:func:`bench_tasks`) and how each
is trained and measured (:class:`RunOptions`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..training import resolve_config_path, shipped_configs
from ..training.config import read_yaml_mapping
from ..typed_config import from_dict
from ._common import slug


@dataclass
class BenchRun:
    #: row label in the tables (e.g. "RAE (D)")
    name: str
    #: model config: shipped name or path
    config: str
    overrides: list[str] = field(default_factory=list)
    #: seeds of this run only (None: the set's seeds)
    seeds: list[int] | None = None


@dataclass
class SlurmResources:
    """What each cell of a bench asks for under ``--executor submitit``: a bench set's
    ``slurm:`` mapping, or the flags of the same names (which win). None: submitit's or
    the cluster's default (``time_min``: :data:`DEFAULT_TIME_MIN`)."""

    #: Slurm partition (``--slurm-partition``)
    partition: str | None = None
    #: GPUs of each cell (``--gpus-per-cell``)
    gpus_per_cell: int | None = None
    #: CPU cores of each cell (``--cpus-per-cell``); also its torch threads
    cpus_per_cell: int | None = None
    #: memory of each cell in GB (``--mem-gb``)
    mem_gb: float | None = None
    #: time limit of each cell in minutes (``--time-min``); training stops at the last
    #: epoch boundary that leaves a tenth of it (at most 10 min) for the evaluation
    time_min: int | None = None
    #: cells of the job array running at once (``--array-parallelism``; Slurm only)
    array_parallelism: int | None = None

    def validate(self) -> None:
        for name in ("gpus_per_cell", "cpus_per_cell", "mem_gb", "time_min", "array_parallelism"):
            value = getattr(self, name)
            least = 0 if name == "gpus_per_cell" else 1
            if value is not None and value < least:
                raise ValueError(f"slurm.{name} must be >= {least}, got {value}")

    def merged(self, **flags) -> SlurmResources:
        """These resources with the ``flags`` that are not None in their place."""
        import dataclasses

        values = {k: v for k, v in flags.items() if v is not None}
        merged = dataclasses.replace(self, **values)
        merged.validate()
        return merged


#: minutes a cell may run when neither ``--time-min`` nor the set's ``slurm.time_min``
#: says (submitit's own default is 5 on Slurm and 2 on the local executor)
DEFAULT_TIME_MIN = 24 * 60


@dataclass
class BenchConfig:
    """A bench set (:func:`load_bench` reads one from YAML), checked when it is built."""

    name: str
    runs: list[BenchRun]
    description: str = ""
    seeds: list[int] = field(default_factory=lambda: [0])
    #: overrides applied to every run (before the run's own)
    overrides: list[str] = field(default_factory=list)
    #: generated and real test images for the classifier Fréchet distance (0: skip)
    classifier_fd_samples: int = 0
    #: generated and real test images for FID with Inception-v3 (0: skip)
    fid_samples: int = 0
    #: the paper's numbers to print next to ours: row name -> {column: value}
    paper: dict[str, dict[str, float]] = field(default_factory=dict)
    #: resources of each cell under ``--executor submitit`` (the flags win)
    slurm: SlurmResources = field(default_factory=SlurmResources)
    #: the spread after ± in table.md: std over seeds, or se, the standard error of the
    #: mean (std / sqrt(seeds)), for sets whose question is whether two rows differ
    spread: Literal["std", "se"] = "std"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not self.runs:
            raise ValueError("a bench set needs at least one entry in 'runs'")
        names = [r.name for r in self.runs]
        if len(set(names)) != len(names):
            raise ValueError(f"bench run names must be unique, got {names}")
        with_comma = [n for n in names if "," in n]
        if with_comma:  # --models takes a comma-separated list of names
            raise ValueError(
                f"bench run names cannot contain a comma (--models splits on commas), got "
                f"{with_comma[0]!r}"
            )
        if not self.seeds:
            raise ValueError("a bench set needs at least one seed")
        if self.classifier_fd_samples < 0 or self.fid_samples < 0:
            raise ValueError("sample counts must be >= 0")
        self.slurm.validate()


def load_bench(name_or_path: str | Path) -> BenchConfig:
    path = _resolve_bench(name_or_path)
    values = read_yaml_mapping(path, "a bench set (a mapping with runs:, seeds:, ...)")
    config = from_dict(BenchConfig, values, "bench")  # checked by BenchConfig itself
    config.source = str(path)  # what worker processes load (``--jobs``)
    return config


def _resolve_bench(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = str(name_or_path).removesuffix(".yaml")
    if not stem.startswith("bench/"):
        stem = f"bench/{stem}"
    try:
        return resolve_config_path(stem)
    except FileNotFoundError:
        shipped = ", ".join(n.removeprefix("bench/") for n in shipped_configs(bench_sets=True))
        raise FileNotFoundError(
            f"bench set {str(name_or_path)!r} not found: not a file, and not one of the "
            f"shipped sets ({shipped})"
        ) from None


@dataclass
class RunOptions:
    """How :func:`measure_run` trains and measures one (run, seed) of a bench."""

    overrides: list[str] = field(default_factory=list)
    retime: bool = False
    #: ``time.time()`` value by which training stops at an epoch boundary (None: no limit)
    deadline: float | None = None
    save_samples: bool = False
    inception_weights: str | None = None
    #: runs trained at once on this machine (recorded next to the epoch times)
    concurrent_runs: int = 1

    def __post_init__(self) -> None:
        if self.concurrent_runs < 1:
            raise ValueError(f"concurrent_runs must be >= 1, got {self.concurrent_runs}")


def bench_tasks(
    bench: BenchConfig, only: list[str] | None = None, seeds: list[int] | None = None
) -> list[tuple[BenchRun, int]]:
    """The (run, seed) pairs a bench measures, in table order."""
    runs = [r for r in bench.runs if only is None or r.name in only or slug(r.name) in only]
    if only is not None and not runs:
        raise ValueError(f"--models {only} matches none of {[r.name for r in bench.runs]}")
    seeds = list(seeds) if seeds is not None else list(bench.seeds)
    return [
        (run, seed)
        for run in runs
        for seed in (seeds if run.seeds is None else [s for s in run.seeds if s in seeds])
    ]


def run_dir_of(out_dir: Path, run: BenchRun, seed: int) -> Path:
    return Path(out_dir) / slug(run.name) / f"seed{seed}"
