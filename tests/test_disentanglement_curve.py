"""evaluation.disentanglement_every: MIG / DCI per epoch in the history, their values
recomputed from the saved model, no effect on training, resume, early stopping on them,
one-line errors for settings that cannot work."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from otae.bench import write_tables
from otae.bench.report import score_curve
from otae.cli import main
from otae.data import build_dataset
from otae.evaluation.disentanglement import dci, mutual_information_gap
from otae.evaluation.metrics import encode_dataset
from otae.experiment import run_experiment
from otae.training import DisentanglementCurve, Trainer, load_config, load_run

from .helpers import TINY, brute_force_stop, one_error_line, same_weights, tiny_bench

#: a tiny VAE on `shapes` at 32 x 32 (MLP, latent 4): an epoch is a fraction of a second
SHAPES = [
    "data.name=shapes", "data.image_size=32", "network.architecture=mlp",
    "network.options={hidden: [16]}", "model.latent_dim=4", "training.batch_size=20",
    "training.eval_batch_size=32", "training.device=cpu", "training.progress=false",
    "training.tensorboard=false", "evaluation.timing_steps=0", "evaluation.report=false",
    "evaluation.clustering=false",
]  # fmt: skip


@pytest.fixture(scope="module")
def shapes_data():
    """60 training and 70 test images of `shapes` (rendered once for the module)."""
    return (build_dataset("shapes", "train", image_size=32).first(60),
            build_dataset("shapes", "test", image_size=32).first(70))


def shapes_config(*overrides):
    return load_config("mnist/vae-quick", [*SHAPES, *overrides])


def train(config, run_dir, data, resume=False):
    trainer = Trainer.from_config(config, run_dir, train_data=data[0], test_data=data[1],
                      log=lambda m: None)
    trainer.fit(resume=resume)
    return trainer


def read_history(run_dir):
    return list(csv.DictReader((run_dir / "history.csv").open()))


# ---------------------------------------------------------------------- values
def test_the_logged_scores_are_those_of_the_saved_model(tmp_path):
    """`otae train`'s path: the last epoch's test_mig / test_dci_disentanglement in
    history.csv equal MIG and DCI D recomputed from the saved model's codes of the same
    images, and the final metrics of those weights (all 50 test images: under the
    curve's 5000 points)."""
    config = shapes_config("data.train_subset=60", "data.test_subset=50", "training.epochs=2",
                           "evaluation.disentanglement_every=1", "training.tensorboard=true")
    run = tmp_path / "run"
    result = run_experiment(config, run, report=False, log=lambda *_: None)
    rows = read_history(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(r["test_mig"] and r["test_dci_disentanglement"] for r in rows)

    _, model, _ = load_run(run)
    test = build_dataset("shapes", "test", image_size=32).first(50)
    codes = encode_dataset(model, test).numpy()
    factors = test.factors.numpy()
    assert float(rows[-1]["test_mig"]) == mutual_information_gap(codes, factors)["mig"]
    assert float(rows[-1]["test_dci_disentanglement"]) == (
        dci(codes, factors, random_state=0)["disentanglement"]
    )
    # the same numbers as the final evaluation of the same weights and images
    assert result.metrics["last_test_mig"] == result.metrics["mig"]
    assert result.metrics["last_test_dci_disentanglement"] == result.metrics["dci_disentanglement"]
    # TensorBoard, where the other per-epoch metrics go: tag test/mig, step = epoch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert {"test/mig", "test/dci_disentanglement", "test/rec_loss"} <= set(events.Tags()["scalars"])
    logged = [(e.step, e.value) for e in events.Scalars("test/mig")]
    assert logged == [(int(r["epoch"]), pytest.approx(float(r["test_mig"]))) for r in rows]


def test_the_posterior_mig_curve_is_the_final_mig_q(tmp_path):
    """mig_q: the last epoch's test_mig_posterior is metrics.json's mig_posterior for the
    same weights and images, and Chen et al.'s estimator recomputed from the saved model's
    posteriors; a deterministic encoder is refused in one line before training."""
    from otae.evaluation.disentanglement import posterior_mutual_information_gap
    from otae.evaluation.metrics import encode_posterior

    config = shapes_config("data.train_subset=60", "data.test_subset=50", "training.epochs=2",
                           "evaluation.disentanglement_every=1",
                           "evaluation.disentanglement_curve_metrics=[mig, mig_q]")  # fmt: skip
    run = tmp_path / "run"
    result = run_experiment(config, run, report=False, log=lambda *_: None)
    rows = read_history(run)
    assert all(r["test_mig_posterior"] and r["test_mig"] for r in rows)
    assert result.metrics["last_test_mig_posterior"] == result.metrics["mig_posterior"]
    _, model, _ = load_run(run)
    test = build_dataset("shapes", "test", image_size=32).first(50)
    mean, logvar = encode_posterior(model, test)
    expected = posterior_mutual_information_gap(mean.numpy(), logvar.numpy(),
                                                test.factors.numpy())["mig"]  # fmt: skip
    assert float(rows[-1]["test_mig_posterior"]) == expected
    assert float(rows[-1]["test_mig_posterior"]) != float(rows[-1]["test_mig"])
    with pytest.raises(ValueError, match="mig_q .* needs a probabilistic encoder, and "
                       "model.name='drae' is deterministic"):
        Trainer.from_config(
            load_config("mnist/drae-quick", [*SHAPES, "evaluation.disentanglement_every=1",
                                             "evaluation.disentanglement_curve_metrics=[mig_q]"]),
            tmp_path / "drae", train_data=build_dataset("shapes", "train", image_size=32).first(20),
            test_data=test, log=lambda m: None,
        )  # fmt: skip


def test_every_kth_epoch_and_the_last_mig_alone(tmp_path, shapes_data):
    config = shapes_config("training.epochs=5", "evaluation.disentanglement_every=2",
                           "evaluation.disentanglement_curve_metrics=[mig]",
                           "evaluation.disentanglement_curve_points=40")
    trainer = train(config, tmp_path / "run", shapes_data)
    assert [("test_mig" in row) for row in trainer.history] == [False, True, False, True, True]
    assert not any("test_dci_disentanglement" in row for row in trainer.history)
    # history.csv leaves the other epochs' cells empty
    assert [r["test_mig"] != "" for r in read_history(tmp_path / "run")] == [
        False, True, False, True, True
    ]
    # the first 40 test images
    curve = trainer.disentanglement_curve
    assert len(curve.data) == 40 and curve.columns == ["test_mig"]
    np.testing.assert_array_equal(curve.factors, shapes_data[1].factors[:40].numpy())
    codes = encode_dataset(trainer.model, shapes_data[1].first(40)).numpy()
    assert trainer.history[-1]["test_mig"] == mutual_information_gap(codes, curve.factors)["mig"]


def test_the_curve_does_not_change_training(tmp_path, shapes_data):
    """Bit-identical weights and training/test columns with the curve on and off: it draws
    from no random generator and leaves every module's mode as it was."""
    off = train(shapes_config("training.epochs=3"), tmp_path / "off", shapes_data)
    on = train(shapes_config("training.epochs=3", "evaluation.disentanglement_every=1"),
               tmp_path / "on", shapes_data)
    a, b = off.model.state_dict(), on.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for row_off, row_on in zip(off.history, on.history, strict=True):
        assert {k: v for k, v in row_on.items() if "mig" not in k and "dci" not in k
                and k != "epoch_time_s"} == {k: v for k, v in row_off.items()
                                              if k != "epoch_time_s"}
        assert "test_mig" in row_on and "test_mig" not in row_off

    # directly: the global RNG streams are untouched, the encoder runs in eval mode without
    # gradient, and the modes are restored (a train-mode model comes back in train mode)
    curve, model = on.disentanglement_curve, on.model
    seen = []
    hook = model.encoder.register_forward_pre_hook(
        lambda module, args: seen.append((module.training, torch.is_grad_enabled()))
    )
    for training in (True, False):
        model.train(training)
        # numpy's legacy global stream: scikit-learn's fallback when given no random_state
        numpy_state = np.random.get_state()  # noqa: NPY002
        torch_state = torch.get_rng_state()
        scores = curve.on_evaluate(on, 3)
        assert set(scores) == {"test_mig", "test_dci_disentanglement"}
        assert torch.equal(torch.get_rng_state(), torch_state)
        after = np.random.get_state()  # noqa: NPY002
        assert all(np.array_equal(x, y) for x, y in zip(after, numpy_state, strict=True))
        assert all(m.training == training for m in model.modules())
    hook.remove()
    assert seen and set(seen) == {(False, False)}


def test_resume_continues_the_history(tmp_path, shapes_data):
    """A run stopped after epoch 2 and resumed to 4 has the uninterrupted run's history
    (curve columns included) and weights."""
    curve = ["evaluation.disentanglement_every=2", "evaluation.disentanglement_curve_points=40"]
    whole = train(shapes_config("training.epochs=4", *curve), tmp_path / "whole", shapes_data)
    train(shapes_config("training.epochs=2", *curve), tmp_path / "split", shapes_data)
    assert len(read_history(tmp_path / "split")) == 2
    resumed = train(shapes_config("training.epochs=4", *curve), tmp_path / "split",
                    shapes_data, resume=True)
    assert same_weights(whole.model.state_dict(), resumed.model.state_dict())

    def timeless(rows):
        return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]

    assert timeless(resumed.history) == timeless(whole.history)
    assert timeless(read_history(tmp_path / "split")) == timeless(read_history(tmp_path / "whole"))
    assert [("test_mig" in r) for r in resumed.history] == [False, True, False, True]


def test_early_stopping_on_the_validation_mig(tmp_path, shapes_data):
    """With early stopping the curve scores the validation split (val_ columns), and
    monitor=val_mig stops where the logged values say."""
    config = shapes_config(
        "training.epochs=6", "training.optimizer.lr=3e-2", "evaluation.disentanglement_every=1",
        "evaluation.disentanglement_curve_metrics=[mig]", "training.early_stopping.enabled=true",
        "training.early_stopping.monitor=val_mig", "training.early_stopping.mode=max",
        "training.early_stopping.patience=1", "training.early_stopping.validation_fraction=0.5",
    )  # fmt: skip
    trainer = train(config, tmp_path / "run", shapes_data)
    curve = trainer.disentanglement_curve
    assert curve.columns == ["val_mig"] and len(curve.data) == len(trainer.val_data) == 30
    values = [row["val_mig"] for row in trainer.history]
    assert not any("test_mig" in row for row in trainer.history)
    best, stop = brute_force_stop(values, patience=1, mode="max")
    assert stop is not None and len(values) == stop < 6  # it did stop early
    es = trainer.early_stopping
    assert (es.best_epoch, es.stopped_epoch) == (best, stop)
    assert es.best_value == max(values[:best])


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["evaluation.disentanglement_every=1"],
         "evaluation.disentanglement_every=1 needs images with known generative factors "
         "(data.name=shapes or shapes_fine), but the test set of data.name='mnist' has none"),
        (["evaluation.disentanglement_every=-1"],
         "evaluation.disentanglement_every must be >= 0, got -1"),
        (["evaluation.disentanglement_curve_metrics=[mig, fvae]"],
         "evaluation.disentanglement_curve_metrics must list some of mig, mig_q, dci"),
        (["evaluation.disentanglement_curve_points=1"],
         "evaluation.disentanglement_curve_points must be >= 2"),
        (["training.early_stopping.enabled=true", "training.early_stopping.monitor=val_mig",
          "training.early_stopping.mode=max", "evaluation.disentanglement_every=2"],
         "training.early_stopping.monitor='val_mig' needs the disentanglement curve at every "
         "epoch: evaluation.disentanglement_every=1 (got 2)"),
        (["training.early_stopping.enabled=true",
          "training.early_stopping.monitor=val_dci_disentanglement",
          "training.early_stopping.mode=max", "evaluation.disentanglement_every=1",
          "evaluation.disentanglement_curve_metrics=[mig]"],
         "and dci in evaluation.disentanglement_curve_metrics (got ['mig'])"),
        (["training.early_stopping.enabled=true", "training.early_stopping.monitor=val_mig",
          "evaluation.disentanglement_every=1"],
         "is a score (higher is better): set training.early_stopping.mode=max"),
    ],
)  # fmt: skip
def test_bad_settings_are_one_error_line(overrides, needle, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "mnist/vae-quick", *TINY, *overrides, "--run-dir", str(run)]
    assert main(args) == 2
    one_error_line(capsys, needle)
    assert not (run / "history.csv").exists() and not (run / "checkpoints").exists()


def test_a_hand_made_curve_checks_its_data(tmp_path, shapes_data):
    with pytest.raises(ValueError, match="every must be an int >= 1"):
        DisentanglementCurve(every=0)
    with pytest.raises(ValueError, match="metrics must be some of mig, mig_q, dci"):
        DisentanglementCurve(metrics=["factorvae"])
    # a factor constant over the chosen images: undefined scores, said before training
    config = shapes_config("training.epochs=1", "evaluation.disentanglement_every=1")
    train_data, test_data = shapes_data
    squares = [i for i in range(len(test_data)) if test_data.factors[i, 0] == 0]
    with pytest.raises(ValueError, match=f"factor shape takes a single value in its "
                       f"{len(squares)} images"):
        Trainer.from_config(config, tmp_path / "run", train_data=train_data,
                test_data=test_data.subset(squares))
    with pytest.raises(ValueError, match="factors shape, orientation take a single value in its "
                       "2 images"):
        Trainer.from_config(shapes_config("evaluation.disentanglement_every=1",
                              "evaluation.disentanglement_curve_points=2"), tmp_path / "run",
                train_data=train_data, test_data=test_data.subset(squares))


# ---------------------------------------------------------------------- bench
def test_the_bench_plots_the_curve_where_runs_logged_it(tmp_path):
    history = [{"epoch": 1.0, "test_rec_loss": 9.0, "test_mig": 0.1},
               {"epoch": 2.0, "test_rec_loss": 8.0}, {"epoch": 3.0, "test_rec_loss": 7.0,
                                                     "test_mig": 0.3}]
    assert score_curve(history, "mig") == [(1.0, 0.1), (3.0, 0.3)]
    assert score_curve([{"epoch": 1.0, "val_mig": 0.2, "test_rec_loss": 1.0}], "mig") == [
        (1.0, 0.2)
    ]
    assert score_curve(history, "dci_disentanglement") == []
    records = [{"run": "A", "encoder": "D", "seed": 0, "test_rec_loss": 7.0,
                "_history": history, "run_dir": str(tmp_path)}]
    write_tables(tiny_bench(tmp_path), records, tmp_path / "tables")
    assert (tmp_path / "tables" / "convergence_mig.png").is_file()
    assert not (tmp_path / "tables" / "convergence_dci_disentanglement.png").exists()
    assert "MIG per epoch" in (tmp_path / "tables" / "report.html").read_text()


def test_off_by_default(tmp_path, shapes_data):
    config = shapes_config("training.epochs=1")
    assert config.evaluation.disentanglement_every == 0
    assert config.evaluation.disentanglement_curve_metrics == ["mig", "dci"]
    assert config.evaluation.disentanglement_curve_points == 5000
    trainer = train(config, tmp_path / "run", shapes_data)
    assert trainer.disentanglement_curve is None
    assert not any(isinstance(cb, DisentanglementCurve) for cb in trainer.callbacks)
    assert not any("mig" in k for k in trainer.history[0])
