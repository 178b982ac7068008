"""A Keras Tuner trial is an ordinary run: same files, same columns, same numbers."""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from cli_runner import ROOT

sys.path.insert(0, str(ROOT))  # train_image.py is a script beside the package
import train_image  # noqa: E402
from keras_attn.experiments.image import ImageExperiment  # noqa: E402
from tuning.__main__ import main as tune  # noqa: E402

SMALL = ["--synthetic-per-class", "8", "--image-size", "16", "--batch-size", "16"]
SMALL += ["--epochs", "2", "--deterministic"]


@pytest.mark.slow
def test_a_trial_trains_exactly_as_train_image_with_the_same_values(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = ImageExperiment()
    searched = ("attention", "reduction", "kernel_size", "lr", "weight_decay")
    searched += ("label_smoothing", "dropout")
    fixed = ",".join(f"{name}={getattr(spec, name)}" for name in searched)

    train_image.main([*SMALL, "--run-dir", "run"])
    tune(["image", "--max-trials", "1", "--fixed", fixed, "--directory", "tuning", *SMALL])

    run, trial = Path("run"), Path("tuning", "image", "trial_0")
    for name in ("config.json", "history.csv", "summary.json", "best.keras"):
        assert (trial / name).is_file(), name
    assert list((trial / "logs").rglob("events.out.tfevents.*"))
    assert json.loads((trial / "config.json").read_text()) == json.loads(
        (run / "config.json").read_text()
    )
    ours, theirs = pd.read_csv(run / "history.csv"), pd.read_csv(trial / "history.csv")
    assert list(theirs.columns) == list(ours.columns)
    assert {"grad_norm_mean", "grad_norm_max", "batch_loss_std"} <= set(ours.columns)
    assert len(ours) == len(theirs) == 2
    for column in ("val_accuracy", "val_loss", "loss", "grad_norm_mean"):
        assert theirs[column].tolist() == pytest.approx(ours[column].tolist(), abs=1e-6), column
    # The search reports the stability figures of its trials beside their accuracy.
    table = pd.read_csv(Path("tuning", "image", "trials.csv"))
    best = ours["val_accuracy"].idxmax()
    assert table.loc[0, "best_val_accuracy"] == pytest.approx(ours["val_accuracy"].max())
    assert table.loc[0, "grad_norm_mean"] == pytest.approx(ours.loc[best, "grad_norm_mean"])
