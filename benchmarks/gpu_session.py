"""Every GPU measurement of a short GPU job, as one budgeted script.

    python benchmarks/gpu_session.py --budget 540 --inception-weights W.pt --out DIR

GPU time often comes in short jobs (e.g. 15 minutes, machine start included), so
everything that needs the GPU runs from this one script, in order, each stage in a
subprocess with a timeout cut to what the budget still allows, so that one stage
that hangs or fails costs its own time only:

1. ``env``: the GPU, driver and torch.
2. ``step_fp32`` / ``step_bf16`` / ``step_compiled``: ``benchmarks/training_step.py``
   for every model (the OT term's share of the paper-net step; GWAE's step against the
   reconstruction-only step), and compiled (inductor) for five models.
3. ``sfgw``: ``benchmarks/sfgw_device.py`` (sliced FGW against sorting, N = 1e2..1e6).
4. ``epoch_eager`` / ``epoch_compiled``: a 2-epoch paper-protocol D-RAE run, eager
   and with ``training.compile=true`` (seconds per epoch, compile time).
5. ``prewarm``: the MNIST classifier of the classifier FD and the FID statistics of
   the 10,000 test images, cached once for the bench's workers.
6. ``table2``: ``otae bench mnist-paper`` on the paper's Table 2 models, ``--jobs``
   at once, with ``--time-limit`` set to what is left minus the evaluation's margin;
   its rows merge into ``benchmarks/results/mnist-paper/``.

Results land in ``benchmarks/results/`` of the working tree it runs in; the stages'
logs and ``session.json`` (return code, wall time, epoch times per stage) in
``--out``, and with ``--tar`` everything is packed into one archive (some job
runners bring back a few files only). ``--smoke`` runs the same stages at toy sizes
on the CPU, to test this script before a GPU job.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TABLE2 = ["VAE", "GMVAE", "VampPrior", "RAE (P)", "WAE", "SWAE", "RAE (D)"]
#: Figures only: t-SNE of 2,000 codes costs a CPU minute per run and changes no metric.
FIGURE_OVERRIDES = ["evaluation.latent_method=pca"]
SMOKE_SET = """
name: mnist-paper-smoke
description: smoke test of gpu_session.py (not a protocol)
seeds: [0]
overrides: [data.train_subset=300, data.test_subset=100, training.epochs=2,
            training.progress=false, training.tensorboard=false, network.architecture=mlp,
            "network.options={hidden: [16]}", evaluation.timing_steps=0]
classifier_fd_samples: 0
fid_samples: 0
runs:
  - {name: VAE, config: mnist/vae-quick}
  - {name: RAE (D), config: mnist/drae-quick}
"""


class Session:
    def __init__(self, out: Path, budget: float, table2_reserve: float) -> None:
        self.out = out
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.deadline = time.time() + budget
        self.table2_reserve = table2_reserve
        self.stages: dict[str, dict] = {}

    def left(self) -> float:
        return self.deadline - time.time()

    def run(self, name: str, command: list[str], limit: float, *, reserve: bool = True,
            env: dict | None = None) -> dict:  # fmt: skip
        """Run one stage under a timeout cut to the budget; record and return its outcome."""
        allowed = min(limit, self.left() - (self.table2_reserve if reserve else 0))
        record: dict = {"command": shlex.join(command), "limit_s": round(allowed, 1)}
        if allowed < 10:
            record["skipped"] = "no time left in the budget"
            print(f"[session] {name}: skipped (budget)", flush=True)
        else:
            print(f"[session] {name}: {record['command']} (limit {allowed:.0f} s)", flush=True)
            start = time.perf_counter()
            with (self.logs / f"{name}.log").open("w") as log:
                try:
                    proc = subprocess.run(
                        command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                        timeout=allowed, env={**os.environ, **(env or {})},
                    )  # fmt: skip
                    record["rc"] = proc.returncode
                except subprocess.TimeoutExpired:
                    record["rc"] = "timeout"
            record["wall_s"] = round(time.perf_counter() - start, 1)
            tail = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-3:]
            record["tail"] = tail
            print(f"[session] {name}: rc {record['rc']} in {record['wall_s']} s", flush=True)
            for line in tail:
                print(f"    {line}", flush=True)
        self.stages[name] = record
        self.save()
        return record

    def save(self) -> None:
        (self.out / "session.json").write_text(json.dumps(self.stages, indent=2) + "\n")


def epoch_times(run_dir: Path) -> list[float]:
    path = run_dir / "history.csv"
    if not path.exists():
        return []
    with path.open() as handle:
        return [round(float(r["epoch_time_s"]), 3) for r in csv.DictReader(handle)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=540, help="seconds for everything")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu-session"))
    parser.add_argument("--inception-weights", help="FID weights (e.g. a compact copy)")
    parser.add_argument("--jobs", type=int, default=7, help="table2 runs at once")
    parser.add_argument("--models", default=",".join(TABLE2), help="table2 rows")
    parser.add_argument("--eval-margin", type=float, default=120,
                        help="seconds kept after table2's training for its evaluation")
    parser.add_argument("--table2-reserve", type=float, default=300,
                        help="seconds the earlier stages leave for table2")
    parser.add_argument("--skip", default="", help="comma-separated stages to skip")
    parser.add_argument("--smoke", action="store_true", help="toy sizes on the CPU")
    parser.add_argument("--tar", type=Path, help="pack results and logs into this .tgz")
    args = parser.parse_args()  # fmt: skip
    out = args.out.resolve()
    session = Session(out, args.budget, args.table2_reserve)
    skip = set(filter(None, args.skip.split(",")))
    py = sys.executable
    otae = [py, "-m", "otae"]
    device = "cpu" if args.smoke else "cuda"
    tag = "smoke" if args.smoke else "cuda"
    cache = {"OTAE_CACHE_DIR": str(out / "cache")}
    if args.inception_weights:
        cache["OTAE_INCEPTION_WEIGHTS"] = str(Path(args.inception_weights).resolve())
    step = [py, "benchmarks/training_step.py", "--device", device]
    if args.smoke:
        step += ["--models", "drae", "gwae", "--config", "quick", "--steps", "2", "--warmup", "1"]
    stages = {
        "env": ([py, "-c", "import torch, otae; print(torch.__version__, otae.__file__); "
                 "print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"],
                30),
        "step_fp32": (step + ["--name", f"training_step_{tag}_fp32"], 120),
        "step_bf16": (step + ["--precision", "bf16", "--name", f"training_step_{tag}_bf16"]
                      + ([] if args.smoke else ["--models", "wae", "swae", "drae", "prae"]), 60),
        # the compiled step (inductor; CUDA graphs would be --compile-mode reduce-overhead)
        "step_compiled": (step + ["--compile", "--name", f"training_step_{tag}_fp32_compiled",
                                  "--models", *(["drae"] if args.smoke else
                                                ["drae", "wae", "swae", "prae", "sae"])]
                          + (["--compile-backend", "aot_eager"] if args.smoke else []), 240),
        "sfgw": ([py, "benchmarks/sfgw_device.py", "--device", device, "--name", f"sfgw_{tag}",
                  "--dims", "8"] + (["--quick", "--compile-sizes"] if args.smoke else []), 60),
    }  # fmt: skip
    if "env" not in skip:
        session.run("env", *stages.pop("env"))
        if not args.smoke:
            subprocess.run(["nvidia-smi"], stdout=(out / "logs" / "nvidia-smi.txt").open("w"))
    for name, (command, limit) in stages.items():
        if name not in skip and name != "env":
            session.run(name, command, limit)
    # 2-epoch paper-protocol timing, eager then compiled
    epoch_config = "mnist/drae-quick" if args.smoke else "mnist/drae-paper"
    epoch_args = ["training.epochs=2", "training.progress=false", "evaluation.timing_steps=0",
                  *FIGURE_OVERRIDES, "--no-report", "--overwrite", "--device", device]  # fmt: skip
    if args.smoke:
        epoch_args += ["data.train_subset=300", "data.test_subset=100"]
    for name, extra, limit in (
        ("epoch_eager", [], 90),
        ("epoch_compiled", ["training.compile=true"]
         + (["training.compile_backend=aot_eager"] if args.smoke else []), 180),
    ):  # fmt: skip
        if name in skip:
            continue
        run_dir = out / name
        record = session.run(name, otae + ["train", epoch_config, *extra, *epoch_args,
                                           "--run-dir", str(run_dir)], limit)  # fmt: skip
        record["epoch_time_s"] = epoch_times(run_dir)
        session.save()
    bench_set = "mnist-paper"
    if args.smoke:
        bench_set = str(out / "smoke-set.yaml")
        Path(bench_set).write_text(SMOKE_SET)
    if "prewarm" not in skip and not args.smoke:
        session.run("prewarm", [py, "benchmarks/gpu_session.py", "--prewarm-only"], 90,
                    env=cache)  # fmt: skip
    if "table2" not in skip:
        time_limit = max(30.0, session.left() - args.eval_margin)
        # the data-on-device path is what the eager epoch used: if that run failed, the
        # bench takes the host loader rather than risking every row on it
        fallback = session.stages.get("epoch_eager", {}).get("rc", 0) != 0
        models = args.models.split(",") if not args.smoke else ["VAE", "RAE (D)"]
        command = otae + [
            "bench", bench_set, *FIGURE_OVERRIDES,
            *(["training.data_on_device=false"] if fallback else []),
            "--models", ",".join(models),
            "--jobs", str(args.jobs), "--time-limit", f"{time_limit:.0f}",
            "--out", str(out / "bench"),
            "--results", str(RESULTS / ("mnist-paper-smoke" if args.smoke else "mnist-paper")),
        ]  # fmt: skip
        session.run("table2", command, session.left() - 5, reserve=False, env=cache)
    if args.tar:
        with tarfile.open(args.tar, "w:gz") as tar:
            tar.add(RESULTS, arcname="results")
            tar.add(out / "logs", arcname="logs")
            tar.add(out / "session.json", arcname="session.json")
            for log in (out / "bench").glob("*/seed*.log"):
                tar.add(log, arcname=f"logs/bench-{log.parent.name}-{log.name}")
        print(f"[session] packed {args.tar} ({args.tar.stat().st_size / 2**20:.1f} MiB)")


def prewarm() -> None:
    """Cache the classifier-FD classifier and the test images' FID statistics (GPU)."""
    import torch

    from otae.evaluation import fid as fid_lib
    from otae.experiment import fd_classifier, slug
    from otae.training import build_split, load_config

    config = load_config("mnist/drae-paper", ["data.test_subset=null"])
    fd_classifier(config.data)
    test = build_split(config.data, "test")
    extractor = fid_lib.InceptionFeatureExtractor(device="cuda" if torch.cuda.is_available()
                                                  else "cpu")  # fmt: skip
    key = slug(f"{config.data.name}-test-{config.data.root or 'embedded'}")
    start = time.perf_counter()
    fid_lib.dataset_statistics(test, extractor, min(10000, len(test)), key=key)
    print(f"FID statistics of {len(test)} test images: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    if "--prewarm-only" in sys.argv:
        prewarm()
    else:
        main()
