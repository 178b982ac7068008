"""The study as a user runs it: a small grid, a re-run that trains nothing, a kill, a divergence."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from cli_runner import OFFLINE, ROOT
from sign_clips import tiny_sign_clips

from keras_attn.data.wlasl import ClipRecord, WlaslIndex
from keras_attn.errors import UserError
from keras_attn.experiments.image import ImageExperiment
from keras_attn.study import __main__ as study_main
from keras_attn.study import distributed, grid, local_workers
from keras_attn.study.distributed import GridTuner
from keras_attn.study.grid import collect, grid_cells, run_dir_for, run_grid, write_tables
from keras_attn.study.image import focus_set
from keras_attn.study.video import in_sign_frames
from keras_attn.training.run import TrainingDiverged, prepare_run_dir

TINY_IMAGES = [
    "--synthetic-per-class",
    "12",
    "--image-size",
    "32",
    "--batch-size",
    "24",
    "--focus-images",
    "6",
]


def study(args, cwd, extra_env=None, **popen):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT), **OFFLINE}
    env.update(extra_env or {})
    command = [sys.executable, "-m", "keras_attn.study", *args]
    if popen:
        return subprocess.Popen(command, cwd=cwd, env=env, text=True, **popen)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _value_row(section: str, *cells: str) -> bool:
    """Whether a table row starts with `cells` and then holds a number."""
    start = r"\| " + r" \| ".join(re.escape(c) for c in cells) + r" \| "
    return re.search(start + r"[−+]?[0-9]", section) is not None


def _section(report: str, heading: str) -> str:
    return report.split(heading)[1].split("\n## ")[0]


@pytest.mark.slow
def test_the_tiny_protocol_grid_reports_every_measure_then_a_rerun_trains_nothing(tmp_path):
    # The tiny grid: 2 variants x 2 seeds x 2 data sizes x 2 epochs, 2 rates.
    args = ["image", "--attention", "cbam", "--seeds", "2", "--epochs", "2"]
    args += ["--train-per-class", "6,12", "--tune-lr", "1e-3,3e-3", "--final-focus-images", "60"]
    args += [*TINY_IMAGES[2:], "--out", "study"]
    done = study(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "study"

    runs = pd.read_csv(out / "results.csv")
    # The baseline joins the grid unasked: every comparison is against it.
    columns = ["variant", "train_per_class", "lr", "seed"]
    cells = sorted(runs[columns].itertuples(index=False, name=None))
    assert cells == sorted(
        (v, n, lr, s)
        for v in ("none", "cbam")
        for n in (6, 12)
        for lr in (1e-3, 3e-3)
        for s in (0, 1)
    )
    assert (runs["status"] == "completed").all()
    # Scored once on the fixed test set, with the checkpoint chosen on validation.
    assert runs["test_accuracy"].between(0, 1).all() and runs["test_accuracy_last"].notna().all()
    assert runs["num_test"].nunique() == 1 and runs["num_test"].iloc[0] > 0
    # Each seed's own draw of the training images; the same draw for every variant.
    num_train = {
        (r.variant, r.train_per_class, r.seed): json.loads(
            (tmp_path / r.run_dir / "summary.json").read_text()
        )["num_train"]
        for r in runs.itertuples()
    }
    assert {num_train[("none", n, s)] for n in (6, 12) for s in (0, 1)} == {36, 72}
    # Focus checks on the best-val model of each run at its variant's chosen rate (one rate
    # per variant and size), attention measures only where there is a map.
    checked = runs[runs["final_focus_images"].notna()]
    assert checked["final_focus_images"].eq(60).all() and len(checked) == 8
    assert (checked.groupby(["variant", "train_per_class"])["lr"].nunique() == 1).all()
    assert checked.groupby(["variant", "train_per_class"]).size().eq(2).all()
    assert checked["final_pointing_gradcam"].between(0, 1).all()
    assert checked["final_auroc_gradcam"].between(0, 1).all()
    assert checked.loc[checked["variant"] == "cbam", "final_sanity_attention"].between(-1, 1).all()
    assert checked.loc[checked["variant"] == "none", "final_pointing_attention"].isna().all()
    curves = pd.read_csv(out / "curves.csv")
    assert len(curves) == 16 * 2 and {"train_per_class", "lr"} <= set(curves.columns)
    for column in ("grad_norm_mean", "grad_norm_max", "batch_loss_std"):
        assert (curves[column] > 0).all(), column
    assert curves["focus_gradcam"].between(0, 1).all()
    assert curves.loc[curves["variant"] == "none", "focus_attention"].isna().all()

    # Every cell is an ordinary run; in a cell, the variants differ only in the attention.
    cell = "train_per_class6-lr0.001-seed0"
    none0 = json.loads((out / "runs" / f"none-{cell}" / "config.json").read_text())
    cbam0 = json.loads((out / "runs" / f"cbam-{cell}" / "config.json").read_text())
    assert {k for k in none0 if none0[k] != cbam0[k]} == {"attention"}
    assert (none0["train_per_class"], none0["lr"]) == (6, 0.001)
    assert list((out / "runs" / f"cbam-{cell}" / "logs").rglob("events.out.tfevents*"))
    assert (out / "runs" / f"cbam-{cell}" / "test_predictions.npz").stat().st_size > 0

    report = (out / "report.md").read_text()
    assert "--train-per-class 6,12 --tune-lr 1e-3,3e-3" in report
    tuning = _section(report, "## Learning rate, tuned per variant")
    assert _value_row(tuning, "train per class 6", "cbam", "0.001")
    for n in (6, 12):
        part = _section(report, f"## Condition: train per class {n}")
        test_part = part.split("### Test accuracy at the best-val epoch")[1].split("\n### ")[0]
        assert "p (Holm) | P(A > B) | MDE |" in test_part
        # test acc, baseline, difference, [CI], p, p (Holm), P(A > B), MDE: every one a value
        assert re.search(r"\| cbam( \| [−+]?[0-9.]+){3} \| \[[^]]+\]( \| [0-9.]+){4} \|", test_part)
        checks = part.split("### Focus checks of the best-val models (60 fixed val images)")[1]
        for measure in (
            "pointing game",
            "AUROC of target pixels",
            "rank corr. with randomised weights",
            "accuracy drop, top region erased",
        ):
            assert _value_row(checks, "cbam", "attention", measure), measure
            assert _value_row(checks, "none", "gradcam", measure), measure
        assert "| accuracy drop, top region erased | " in checks  # with its random baseline
    interaction = _section(report, "## Interaction: does the difference from none change")
    assert _value_row(interaction, "cbam", "log2(train per class)", "all runs")
    assert "corrects over all 3 tests of this report" in report
    for figure in ("learning_curves", "focus", "overlays", "lr_curves", "expected_validation"):
        assert (out / "figures" / f"{figure}.png").stat().st_size > 1000, figure

    run_dir = out / "runs" / "cbam-train_per_class12-lr0.003-seed1"
    history_before = (run_dir / "history.csv").read_text()
    again = study(args, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("is already complete; nothing to do") == 16
    assert "Epoch 01" not in again.stdout
    assert (run_dir / "history.csv").read_text() == history_before


@pytest.mark.slow
def test_a_study_killed_mid_run_resumes_with_every_epoch_once(tmp_path):
    args = ["image", "--attention", "spatial", "--seeds", "1", "--epochs", "3", *TINY_IMAGES]
    args += ["--out", "study"]
    first = study(args, tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    history = tmp_path / "study" / "runs" / "spatial-seed0" / "history.csv"
    deadline = time.time() + 300
    # Killed in the second cell, after at least one of its epochs was written.
    while not (history.exists() and len(pd.read_csv(history)) >= 1):
        assert first.poll() is None and time.time() < deadline, "study ended before the kill"
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()

    done = study(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Resuming" in done.stdout or "is already complete" in done.stdout
    runs = pd.read_csv(tmp_path / "study" / "results.csv")
    assert (runs["status"] == "completed").all() and len(runs) == 2
    for cell in ("none-seed0", "spatial-seed0"):
        epochs = pd.read_csv(tmp_path / "study" / "runs" / cell / "history.csv")["epoch"]
        assert epochs.tolist() == [1, 2, 3], cell


@pytest.mark.slow
def test_a_diverging_variant_is_counted_as_failed_and_the_study_goes_on(tmp_path):
    args = ["image", "--attention", "channel", "--seeds", "1", "--epochs", "2", *TINY_IMAGES]
    # At 1e9 the fused batch normalisation keeps the loss finite (the model collapses to
    # chance instead); 1e20 overflows in float32 and in bfloat16 (checked 2026-12-07).
    done = study([*args, "--lr", "1e20", "--optimizer", "sgd", "--out", "study"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = pd.read_csv(tmp_path / "study" / "results.csv")
    assert runs["status"].tolist() == ["failed", "failed"]
    assert runs["failure"].str.contains("diverged in epoch").all()
    report = (tmp_path / "study" / "report.md").read_text()
    assert "2 diverged or failed" in report or "diverged or failed: 2" in report


@pytest.mark.slow
def test_a_video_study_scores_temporal_weights_against_the_sign(tmp_path):
    data = tiny_sign_clips(tmp_path / "synthetic")
    args = ["video", "--temporal", "tcn", "--seeds", "2", "--epochs", "2", "--image-size", "32"]
    args += ["--data-dir", str(data), "--cache-dir", "cache", "--out", "study"]
    done = study(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    curves = pd.read_csv(tmp_path / "study" / "curves.csv")
    assert set(curves["variant"]) == {"avg", "tcn"} and len(curves) == 2 * 2 * 2
    # Frames come from the whole clip, lead-in and tail too: some are outside the sign.
    assert curves["focus_temporal_chance"].between(0.2, 0.95).all()
    avg = curves[curves["variant"] == "avg"]
    np.testing.assert_allclose(avg["focus_temporal"], avg["focus_temporal_chance"], atol=1e-5)
    weights = np.load(tmp_path / "study" / "runs" / "tcn-seed0" / "temporal_weights.npz")
    assert weights["weights"].shape == weights["in_sign"].shape
    np.testing.assert_allclose(weights["weights"].sum(1), 1.0, atol=1e-4)
    assert "temporal_weights.png" in (tmp_path / "study" / "report.md").read_text()


def test_in_sign_frames_uses_the_annotated_range_and_an_open_end():
    def record(video_id, start, end):
        return ClipRecord(video_id, f"/v/{video_id}.mp4", 0, "test", start, end, None, None)

    sign_index = WlaslIndex(
        ["a"], [], [record("x", 5, 9), record("y", 3, None)], {}, [], "index.json"
    )
    clips = dict(
        records=[record("y", 0, None), record("x", 0, None)],  # whole-clip records, another order
        frame_indices=np.array([[0, 2, 3, 40], [4, 5, 9, 10]]),
        mask=np.ones((2, 4), bool),
    )
    assert in_sign_frames(clips, sign_index).tolist() == [
        [False, False, True, True],
        [False, True, True, False],
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["image", "--attention", "none,foo"], "unknown attention 'foo'"),
        (["image", "--attention", "cbam,cbam"], "listed twice"),
        (["video", "--temporal", "avg,lstm"], "unknown temporal 'lstm'"),
        (["image", "--seeds", "0"], "--seeds must be a positive number of seeds or 'auto'"),
        (["image", "--target-halfwidth", "0.01"], "--target-halfwidth needs --seeds auto"),
        (["image", "--epochs", "zero"], "--epochs: expected ints, got 'zero'"),
        (["image", "--train-per-class", "25,25"], "--train-per-class: a value is listed twice"),
        (["image", "--tune-lr", "1e-3"], "--tune-lr needs at least two different learning rates"),
        (["image", "--lr", "1e-3,3e-3", "--tune-lr", "1e-3,1e-2"], "give the learning rates once"),
    ],
)
def test_bad_variants_and_seeds_are_one_line_errors(args, message, monkeypatch, tmp_path, capsys):
    """In this process: the study's own main, as `python -m keras_attn.study` runs it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["python -m keras_attn.study", *args])
    with pytest.raises(SystemExit) as exit_info:
        study_main.cli()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not list(tmp_path.iterdir())  # refused before any data or folder was made


def test_a_worker_of_a_grid_across_machines_is_refused_the_seed_rule_s_settings(
    monkeypatch, tmp_path, capsys
):
    # Only this machine's own workers (--workers N) carry the chief's --target-halfwidth;
    # a worker started by hand with it and a fixed --seeds N would silently ignore it.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KERAS_ATTN_LOCAL_WORKER", raising=False)
    for name, value in (("TUNER_ID", "worker0"), ("ORACLE_IP", "127.0.0.1"), ("ORACLE_PORT", "1")):
        monkeypatch.setenv(f"KERASTUNER_{name}", value)
    argv = ["python -m keras_attn.study", "image", "--seeds", "4", "--target-halfwidth", "0.01"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        study_main.cli()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().endswith("--target-halfwidth needs --seeds auto")
    assert not list(tmp_path.iterdir())


def test_print_config_resolves_the_baseline_with_the_study_defaults(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["python -m keras_attn.study", "image", "--print-config"])
    study_main.main()
    config = json.loads(capsys.readouterr().out)
    assert config["attention"] == "none"  # the baseline; the variants are the study's
    assert (config["image_size"], config["batch_size"], config["epochs"]) == (48, 32, 40)
    assert (config["early_stopping"], config["early_stopping_on"]) == (8, "val_loss")
    assert not list(tmp_path.iterdir())


def _fake_cell(out, variant, seed, diverge=()):
    """What a finished run leaves behind, without training: summary.json and history.csv."""
    run_dir = run_dir_for(out, variant, seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    accuracy = 0.5 + 0.1 * seed + (0.2 if variant != "none" else 0.0)
    status = "diverged" if (variant, seed) in diverge else "completed"
    summary = dict(status=status, best_val_accuracy=accuracy, best_epoch=2, epochs_completed=2)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    history = pd.DataFrame(dict(epoch=[1, 2], val_accuracy=[accuracy - 0.1, accuracy]))
    history.to_csv(run_dir / "history.csv", index=False)
    if status == "diverged":
        raise TrainingDiverged(f"diverged in epoch 2 ({variant}, seed {seed})")
    return summary


def test_run_grid_runs_each_cell_once_seed_major_and_counts_a_divergence(
    tmp_path, monkeypatch, capsys
):
    calls = []

    def run_one(variant, seed, run_dir):
        calls.append((variant, seed, run_dir))
        return _fake_cell(tmp_path, variant, seed, diverge={("cbam", 1)})

    # Memory is freed after every cell, a diverged one too (the real thing: clear_session).
    monkeypatch.setattr(grid, "free_memory", lambda: calls.append("freed"))
    counts = run_grid(tmp_path, ["none", "cbam"], [0, 1], run_one)
    assert counts == {"completed": 3, "failed": 1}
    assert calls[1::2] == ["freed"] * 4
    calls = calls[::2]
    assert [(v, s) for v, s, _ in calls] == [("none", 0), ("cbam", 0), ("none", 1), ("cbam", 1)]
    assert calls[1][2] == tmp_path / "runs" / "cbam-seed0"
    assert "[study] cbam, seed 1 failed: diverged in epoch 2" in capsys.readouterr().out
    curves, runs = collect(tmp_path, ["none", "cbam"], [0, 1])
    assert runs["status"].tolist() == ["completed", "completed", "completed", "failed"]
    assert runs["best_val_accuracy"].tolist() == pytest.approx([0.5, 0.7, 0.6, 0.8])
    assert len(curves) == 8 and list(curves.columns[:3]) == ["variant", "seed", "epoch"]
    write_tables(tmp_path, curves, runs)
    assert pd.read_csv(tmp_path / "results.csv")["variant"].tolist() == list(runs["variant"])


def test_a_study_cell_whose_run_dir_holds_another_config_is_refused_in_the_studys_terms(
    tmp_path,
):
    # The real check (prepare_run_dir): the training CLIs' remedies (--overwrite,
    # --run-dir) are not the study's flags, so the grid words its own.
    def run_one(variant, seed, run_dir, lr):
        prepare_run_dir(run_dir, ImageExperiment(attention=variant, seed=seed, lr=lr))
        return {}

    run_grid(tmp_path, ["none"], [0], run_one, {"lr": [0.01]})
    cell = tmp_path / "runs" / "none-lr0.01-seed0"
    config = json.loads((cell / "config.json").read_text())
    (cell / "config.json").write_text(json.dumps(config | {"epochs": config["epochs"] + 1}))
    with pytest.raises(UserError) as refused:
        run_grid(tmp_path, ["none"], [0], run_one, {"lr": [0.01]})
    assert str(refused.value) == (
        f"{cell} holds a run with a different config (differs in: epochs); a study reuses "
        "only runs of its own config: delete that run directory to run the cell again, or "
        "choose another --out"
    )
    assert json.loads((cell / "config.json").read_text())["epochs"] == config["epochs"] + 1


def test_the_grid_tuner_hands_out_every_cell_exactly_once(tmp_path, monkeypatch, capsys):
    """The distributed study's tuner, here in one process: no chief, no training."""
    for name in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        monkeypatch.delenv(name, raising=False)

    def run_one(variant, seed, run_dir):
        assert run_dir == run_dir_for(tmp_path, variant, seed)
        return _fake_cell(tmp_path, variant, seed, diverge={("channel", 0)})

    freed = []
    monkeypatch.setattr(distributed, "free_memory", lambda: freed.append(1))
    tuner = GridTuner(tmp_path, ["none", "channel"], [0, 1], run_one)
    tuner.search()
    assert len(freed) == 4
    ran = sorted((cell.variant, cell.seed) for cell in tuner.cells_trained)
    assert ran == [("channel", 0), ("channel", 1), ("none", 0), ("none", 1)]
    assert tuner.cells_found_complete == []
    out = capsys.readouterr().out
    assert "[study] channel, seed 0 failed: diverged in epoch 2" in out
    trials = tuner.oracle.get_best_trials(4)
    scores = {
        (t.hyperparameters.get("variant"), t.hyperparameters.get("seed")): t.score for t in trials
    }
    # A diverged cell scores 0; the others their run's best val accuracy.
    assert scores == pytest.approx(
        {("none", 0): 0.5, ("channel", 0): 0.0, ("none", 1): 0.6, ("channel", 1): 0.8}
    )
    # A restarted search hands out nothing again: the oracle's state is in <out>/grid_oracle.
    again = GridTuner(tmp_path, ["none", "channel"], [0, 1], run_one)
    again.search()
    assert again.cells_trained == [] and again.cells_found_complete == []
    # Without that state every cell goes out again: the finished ones are found complete
    # (the worker's closing line counts them apart), the diverged one is tried again.
    shutil.rmtree(tmp_path / "grid_oracle")
    third = GridTuner(tmp_path, ["none", "channel"], [0, 1], run_one)
    third.search()
    assert [(c.variant, c.seed) for c in third.cells_trained] == [("channel", 0)]
    found = sorted((c.variant, c.seed) for c in third.cells_found_complete)
    assert found == [("channel", 1), ("none", 0), ("none", 1)]


def test_the_grid_oracle_gives_every_idle_worker_the_next_cell_at_once(tmp_path, monkeypatch):
    """Keras Tuner's GridSearchOracle would make the third worker wait for a finished
    trial; the grid is known, so each asking worker gets the next unstarted cell."""
    for name in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        monkeypatch.delenv(name, raising=False)
    axes = {"lr": [0.01, 0.03]}
    tuner = GridTuner(tmp_path, ["none", "cbam"], [0, 1], lambda *a, **k: {}, axes)
    tuner.save()  # what the chief does before serving (tuner_cluster.serve_oracle)
    oracle = tuner.oracle
    trials = [oracle.create_trial(f"worker{i}") for i in range(8)]
    assert [t.status for t in trials] == ["RUNNING"] * 8
    handed = [
        (
            t.hyperparameters.get("variant"),
            t.hyperparameters.get("seed"),
            t.hyperparameters.get("lr"),
        )
        for t in trials
    ]
    assert handed == [
        (c.variant, c.seed, c.settings[0][1]) for c in grid_cells(["none", "cbam"], [0, 1], axes)
    ]
    assert oracle.create_trial("worker8").status == "STOPPED"  # none left: it may go

    # The chief stops with one cell running: a restarted chief hands that cell out again.
    for trial in trials[:7]:
        oracle.update_trial(trial.trial_id, {"best_val_accuracy": 0.5})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    again = GridTuner(tmp_path, ["none", "cbam"], [0, 1], lambda *a, **k: {}, axes)
    retried = again.oracle.create_trial("worker0")
    assert retried.status == "RUNNING"
    assert retried.hyperparameters.values == trials[7].hyperparameters.values
    assert again.oracle.create_trial("worker1").status == "STOPPED"


def test_focus_set_takes_the_classes_in_turn_and_only_with_boxes():
    labels = np.array([0, 0, 0, 1, 2, 2], np.int32)
    data = SimpleNamespace(
        val_images=np.arange(6, dtype=np.uint8).reshape(6, 1, 1),  # grey, as the MNIST family
        image_size=1,
        val_labels=labels,
        val_boxes=np.arange(24, dtype=np.float32).reshape(6, 4),
        num_classes=3,
    )
    chosen = focus_set(data, 5)
    assert chosen["labels"].tolist() == [0, 1, 2, 0, 2]
    assert chosen["images"].shape == (5, 1, 1, 3)  # RGB at the model's size
    assert chosen["images"][..., 0].ravel().tolist() == [0, 3, 4, 1, 5]
    assert chosen["boxes"][:, 0].tolist() == [0, 12, 16, 4, 20]
    assert focus_set(data, 0) is None
    assert focus_set(SimpleNamespace(**{**vars(data), "val_boxes": None}), 5) is None


def test_axes_cross_every_variant_seed_major_with_readable_run_dirs(tmp_path, monkeypatch):
    axes = {"train_per_class": [25, 100], "lr": [0.001, 0.003]}
    cells = grid_cells(["none", "cbam"], [0, 1], axes)
    assert len(cells) == 16 and [c.seed for c in cells] == [0] * 8 + [1] * 8
    assert [c.variant for c in cells[:4]] == ["none", "cbam", "none", "cbam"]
    assert cells[1].settings == (("train_per_class", 25), ("lr", 0.001))
    assert cells[1].name == "cbam-train_per_class25-lr0.001-seed0"
    calls = []

    def run_one(variant, seed, run_dir, **settings):
        calls.append((variant, seed, settings))
        summary = _fake_cell(tmp_path, variant, seed, diverge=set())
        (tmp_path / "runs" / f"{variant}-seed{seed}").rename(run_dir)
        if variant == "cbam":  # a run whose end-of-training focus checks were written
            (run_dir / "final_focus.json").write_text('{"pointing_gradcam": 0.25}')
        return summary

    monkeypatch.setattr(grid, "free_memory", lambda: None)
    run_grid(tmp_path, ["none", "cbam"], [0], run_one, {"train_per_class": [25, 100]})
    assert calls[2] == ("none", 0, {"train_per_class": 100})
    curves, runs = collect(tmp_path, ["none", "cbam"], [0], {"train_per_class": [25, 100]})
    assert list(runs.columns[:3]) == ["variant", "seed", "train_per_class"]
    assert runs["train_per_class"].tolist() == [25, 25, 100, 100]
    assert runs["final_pointing_gradcam"].tolist()[1::2] == [0.25, 0.25]
    assert runs["final_pointing_gradcam"].isna().tolist()[::2] == [True, True]
    assert list(curves.columns[:4]) == ["variant", "seed", "train_per_class", "epoch"]
    assert sorted(curves["train_per_class"].unique()) == [25, 100]


def test_only_listable_settings_become_axes_and_their_items_are_typed():
    listable = ImageExperiment.listable()
    assert {"train_per_class", "distractors", "lr", "backbone"} <= set(listable)
    assert "widths" not in listable and "deterministic" not in listable  # a list; a bool
    assert "data_dir" in listable and "run_dir" not in listable
    assert ImageExperiment.parse_list("lr", "1e-3, 3e-3") == [0.001, 0.003]
    assert ImageExperiment.parse_list("distractors", "0,4,8") == [0, 4, 8]
    with pytest.raises(UserError, match="--distractors: empty item"):
        ImageExperiment.parse_list("distractors", "0,,8")


def test_a_variant_can_fix_another_setting_for_one_thing_ablations():
    from keras_attn.experiments.video import VideoExperiment

    assert grid.variant_settings(VideoExperiment, "temporal", "tcn") == {"temporal": "tcn"}
    fixed = grid.variant_settings(VideoExperiment, "temporal", "tcn:temporal_pool=avg")
    assert fixed == {"temporal": "tcn", "temporal_pool": "avg"}
    assert grid.variant_settings(VideoExperiment, "temporal", "tcn:tcn-levels=2")["tcn_levels"] == 2
    for bad in ("tcn:temporal_pool", "tcn:nonsense=1", "tcn:temporal=avg"):
        with pytest.raises(UserError, match="write NAME:SETTING=VALUE"):
            grid.variant_settings(VideoExperiment, "temporal", bad)


def test_collect_lists_cells_never_started_as_missing(tmp_path):
    assert [tuple(c[:2]) for c in grid_cells(["none", "cbam"], [0, 1])] == [
        ("none", 0),
        ("cbam", 0),
        ("none", 1),
        ("cbam", 1),
    ]
    curves, runs = collect(tmp_path, ["none"], [0])
    assert curves.empty and runs["status"].tolist() == ["missing"]


@pytest.mark.slow
def test_two_local_workers_share_each_round_of_seeds_auto_and_each_cell_runs_once(tmp_path):
    # The study process serves the grid (the multi-machine chief's oracle, on loopback)
    # and starts two worker processes of one thread each, once per round of --seeds auto
    # (3 seeds, then a 4th: the target cannot be met); the chief writes the report.
    args = ["image", "--attention", "none,channel", "--seeds", "auto", "--max-seeds", "4"]
    args += ["--target-halfwidth", "1e-9", "--epochs", "1"]
    args += [*TINY_IMAGES, "--out", "study", "--workers", "2"]
    done = study(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    started = "[study] 2 local workers, 1 thread(s) each, grid served on 127.0.0.1:"
    assert done.stdout.count(started) == 2  # one start per round
    assert "[study] 3 seeds: widest 95% interval" in done.stdout
    assert "[study] 4 seeds: widest 95% interval" in done.stdout

    runs = pd.read_csv(tmp_path / "study" / "results.csv")
    assert len(runs) == 8 and (runs["status"] == "completed").all()
    # "[study] worker1: channel, seed 0" per cell a worker trained: each cell exactly once,
    # and both workers trained.
    ran = {}
    for line in done.stdout.splitlines():
        for k in ("worker0", "worker1"):
            if line.startswith(f"[study] {k}: ") and not line.startswith(f"[study] {k}: done;"):
                ran.setdefault(k, []).append(line.split(": ", 1)[1])
    cells = sorted(c for k in ran for c in ran[k])
    assert cells == sorted(f"{v}, seed {s}" for v in ("none", "channel") for s in range(4))
    assert set(ran) == {"worker0", "worker1"}
    report = (tmp_path / "study" / "report.md").read_text()
    assert "--seeds auto reached the cap of 4 seeds" in report
    # No rate is tuned, so every run is reported and its worker measures its focus as soon
    # as it finishes: the first round's 6 before the second round starts, each run once.
    rounds = [part.count("[study] final focus checks: ") for part in done.stdout.split(started)]
    assert rounds == [0, 6, 2]
    assert runs["final_focus_images"].notna().all()
    # Run again with the workers' oracle state there: every cell goes out at once, and a
    # worker still starting then used to wait forever for the chief's stopped server.
    again = study(args, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count(": done; trained none") == 4  # two workers, two rounds
    assert "final focus checks" not in again.stdout
    # Without the oracle state every cell is handed out again: the workers find each run
    # complete and say so, not that they ran it.
    shutil.rmtree(tmp_path / "study" / "grid_oracle")
    third = study(args, tmp_path)
    assert third.returncode == 0, third.stderr[-3000:]
    closing = re.findall(r": done; trained none; (\d+) already complete", third.stdout)
    assert len(closing) == 4 and sum(map(int, closing)) == 8, third.stdout[-3000:]
    assert ": done; trained none\n" not in third.stdout
    # (A one-process rerun that trains nothing is the tiny protocol grid's test.)


def test_seeds_auto_is_not_split_across_machines(tmp_path):
    machine = {"KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_IP": "127.0.0.1"}
    machine["KERASTUNER_ORACLE_PORT"] = "1"
    done = study(["image", "--seeds", "auto", *TINY_IMAGES], tmp_path, extra_env=machine)
    assert done.returncode == 2
    assert done.stderr.strip().endswith(
        "--seeds auto needs the whole grid's results after each round: run it in one study "
        "process (--workers N shares each round); give a number of seeds to share a grid "
        "across machines"
    )


def test_a_local_worker_that_asks_after_the_grid_is_handed_out_is_told_to_stop(
    tmp_path, monkeypatch
):
    # Rerunning a finished grid with --workers 2: every cell has gone out before, so the
    # first worker to ask is told to stop. A second one still loading its data asks later;
    # the chief used to have stopped serving by then, and that worker waited forever.
    import grpc
    from keras_tuner.src import protos

    from keras_attn.tuner_cluster import serve_oracle

    for name in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        monkeypatch.delenv(name, raising=False)
    tuner = GridTuner(tmp_path, ["none"], [0], lambda *a, **k: {})
    tuner.save()
    tuner.oracle.end_trial(tuner.oracle.create_trial("worker0"))  # the grid is finished
    port = local_workers.free_port()
    late_worker_done = threading.Event()
    chief = threading.Thread(
        target=serve_oracle,
        args=(tuner, "127.0.0.1", port),
        kwargs=dict(poll_seconds=0.1, workers_alive=lambda: not late_worker_done.is_set()),
    )
    chief.start()
    try:
        stub = protos.get_service_grpc().OracleStub(grpc.insecure_channel(f"127.0.0.1:{port}"))

        def ask(tuner_id):
            request = protos.get_service().CreateTrialRequest(tuner_id=tuner_id)
            return stub.CreateTrial(request, wait_for_ready=True, timeout=20).trial.status

        stopped = protos.get_proto().TrialStatus.Value("STOPPED")
        assert ask("worker0") == stopped
        time.sleep(3)  # past the server's 2 s grace
        assert ask("worker1") == stopped
    finally:
        late_worker_done.set()
        chief.join(timeout=30)
    assert not chief.is_alive()


def test_a_study_computed_in_another_precision_is_not_resumed_in_this_one(tmp_path):
    # `auto` resolves per machine: the same command on a CPU with bfloat16 units would
    # otherwise reach the first finished float32 run and stop there, or mix precisions.
    out = tmp_path / "study"
    out.mkdir()
    (out / "study.json").write_text(json.dumps({"meta": {"config": {"mixed_precision": "bf16"}}}))
    done = study(["image", *TINY_IMAGES, "--mixed-precision", "off", "--out", "study"], tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(
        "python -m keras_attn.study: error: study holds a study computed with "
        "--mixed-precision bf16; this command's is off"
    )
    assert line.endswith(": pass --mixed-precision bf16 to go on with it, or choose another --out")
    assert sorted(p.name for p in out.iterdir()) == ["study.json"]  # nothing started


@pytest.mark.slow
def test_a_precision_axis_with_auto_refuses_a_finished_run_that_auto_resolved_otherwise(
    tmp_path,
):
    # With the precision as a grid axis the study records no single precision, so the
    # study-level check above cannot apply; the run-level config check must: the `auto`
    # cell's config holds what auto resolved to, which differs on a host with bf16 units.
    args = ["image", *TINY_IMAGES, "--attention", "none", "--epochs", "1", "--seeds", "1"]
    args += ["--final-focus-images", "0", "--mixed-precision", "auto,bf16", "--out", "study"]
    first = study(args, tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    cell = tmp_path / "study" / "runs" / "none-mixed_precisionauto-seed0"
    config = json.loads((cell / "config.json").read_text())
    assert config["mixed_precision"] in ("off", "bf16")  # resolved, never "auto"
    other = "bf16" if config["mixed_precision"] == "off" else "off"
    (cell / "config.json").write_text(json.dumps(config | {"mixed_precision": other}))
    again = study(args, tmp_path)
    assert again.returncode == 2, again.stderr[-2000:]
    assert (
        again.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "none-mixed_precisionauto-seed0 holds a run with a different config (differs in: "
            "mixed_precision); a study reuses only runs of its own config: delete that run "
            "directory to run the cell again, or choose another --out"
        )
    )
    assert json.loads((cell / "config.json").read_text())["mixed_precision"] == other
