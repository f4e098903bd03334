"""Train a small model, export it, reload it in a fresh process, encode a dataset and fit
a linear probe on the codes. ``python examples/export_and_probe.py`` (about a minute on
a laptop CPU)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from otae.cli import main

with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    # 1. train (a short run of a shipped config) and 2. export it
    main(["train", "mnist/drae-quick", "training.epochs=2", "data.train_subset=5000",
          "data.test_subset=1000", "--run-dir", str(tmp / "run")])  # fmt: skip
    main(["export", str(tmp / "run"), str(tmp / "model")])
    # 3. a fresh process: load the folder, encode MNIST, fit a linear probe on the codes
    probe = f"""
import numpy as np
from sklearn.linear_model import LogisticRegression
from otae.export import encode_dataset_to_file
from otae.models import from_pretrained

model = from_pretrained({str(tmp / "model")!r})
encode_dataset_to_file(model, "mnist", {str(tmp / "train.npz")!r}, split="train")
encode_dataset_to_file(model, "mnist", {str(tmp / "test.npz")!r}, split="test")
train, test = np.load({str(tmp / "train.npz")!r}), np.load({str(tmp / "test.npz")!r})
n = 10000
probe = LogisticRegression(max_iter=2000).fit(train["codes"][:n], train["labels"][:n])
accuracy = probe.score(test["codes"], test["labels"])
print(f"linear probe on the 8-d codes: test accuracy {{accuracy:.3f}}")
"""
    subprocess.run([sys.executable, "-c", probe], check=True)
