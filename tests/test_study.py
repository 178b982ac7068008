"""The study as a user runs it: a small grid, a re-run that trains nothing, a kill, a divergence."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from cli_runner import OFFLINE, ROOT

from keras_attn.data.synthetic_video import ensure_synthetic_videos
from keras_attn.data.wlasl import ClipRecord, WlaslIndex
from keras_attn.study import __main__ as study_main
from keras_attn.study import distributed, grid
from keras_attn.study.distributed import GridTuner
from keras_attn.study.grid import collect, grid_cells, run_dir_for, run_grid, write_tables
from keras_attn.study.image import focus_set
from keras_attn.study.video import in_sign_frames
from keras_attn.training.run import TrainingDiverged

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


@pytest.mark.slow
def test_two_variants_two_seeds_two_epochs_then_a_rerun_that_trains_nothing(tmp_path):
    args = ["image", "--attention", "cbam", "--seeds", "2", "--epochs", "2", *TINY_IMAGES]
    args += ["--out", "study"]
    done = study(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "study"

    runs = pd.read_csv(out / "results.csv")
    # The baseline joins the grid unasked: every comparison is against it.
    assert sorted(zip(runs["variant"], runs["seed"], strict=True)) == [
        ("cbam", 0),
        ("cbam", 1),
        ("none", 0),
        ("none", 1),
    ]
    assert (runs["status"] == "completed").all()
    # Scored once on the fixed test set, with the checkpoint chosen on validation.
    assert runs["test_accuracy"].between(0, 1).all() and runs["test_accuracy_last"].notna().all()
    assert runs["num_test"].nunique() == 1 and runs["num_test"].iloc[0] > 0
    curves = pd.read_csv(out / "curves.csv")
    assert len(curves) == 4 * 2
    for column in ("grad_norm_mean", "grad_norm_max", "batch_loss_std"):
        assert (curves[column] > 0).all(), column
    assert curves["gap_accuracy"].notna().all()
    assert (curves["grad_norm_max"] >= curves["grad_norm_mean"] - 1e-6).all()
    # Focus: Grad-CAM for every variant, the attention map only where there is one.
    assert curves["focus_gradcam"].between(0, 1).all()
    assert curves.loc[curves["variant"] == "cbam", "focus_attention"].between(0, 1).all()
    assert curves.loc[curves["variant"] == "none", "focus_attention"].isna().all()
    assert curves["focus_chance"].between(0.01, 0.5).all()

    # Every cell is an ordinary run; for a seed, the variants differ only in the attention.
    none0 = json.loads((out / "runs" / "none-seed0" / "config.json").read_text())
    cbam0 = json.loads((out / "runs" / "cbam-seed0" / "config.json").read_text())
    assert {k for k in none0 if none0[k] != cbam0[k]} == {"attention"}
    for cell in ("none-seed0", "cbam-seed1"):
        assert (out / "runs" / cell / "best.keras").stat().st_size > 0
        assert list((out / "runs" / cell / "logs").rglob("events.out.tfevents*"))
    assert (out / "runs" / "cbam-seed0" / "focus.png").stat().st_size > 0

    report = (out / "report.md").read_text()
    assert "python -m keras_attn.study image --attention cbam" in report
    assert "### (a) Does attention stabilise training?" in report
    assert "| cbam |" in report and "| none |" in report
    test_part = report.split("## Test accuracy at the best-val epoch")[1].split("\n## ")[0]
    assert re.search(r"\| cbam \| [0-9.]+ \| [0-9.]+ \| [−+0-9.]+ \| \[", test_part)
    for figure in ("learning_curves", "gradients", "focus", "overlays"):
        assert (out / "figures" / f"{figure}.png").stat().st_size > 1000, figure

    history_before = (out / "runs" / "cbam-seed1" / "history.csv").read_text()
    again = study(args, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("is already complete; nothing to do") == 4
    assert "Epoch 01" not in again.stdout
    assert (out / "runs" / "cbam-seed1" / "history.csv").read_text() == history_before


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
    done = study([*args, "--lr", "1e9", "--optimizer", "sgd", "--out", "study"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = pd.read_csv(tmp_path / "study" / "results.csv")
    assert runs["status"].tolist() == ["failed", "failed"]
    assert runs["failure"].str.contains("diverged in epoch").all()
    report = (tmp_path / "study" / "report.md").read_text()
    assert "2 diverged or failed" in report or "diverged or failed: 2" in report


@pytest.mark.slow
def test_a_video_study_scores_temporal_weights_against_the_sign(tmp_path):
    data = ensure_synthetic_videos(
        tmp_path / "synthetic",
        num_classes=2,
        clips_per_class=6,
        num_signers=3,
        val_signers=1,
        image_size=32,
    )
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
        (["image", "--seeds", "0"], "--seeds must be at least 1"),
        (["image", "--epochs", "zero"], "invalid int value"),
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


def test_print_config_resolves_the_baseline_with_the_study_defaults(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["python -m keras_attn.study", "image", "--print-config"])
    study_main.main()
    config = json.loads(capsys.readouterr().out)
    assert config["attention"] == "none"  # the baseline; the variants are the study's
    assert (config["image_size"], config["batch_size"], config["epochs"]) == (48, 32, 25)
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
    assert "[study] cbam seed 1 failed: diverged in epoch 2" in capsys.readouterr().out
    curves, runs = collect(tmp_path, ["none", "cbam"], [0, 1])
    assert runs["status"].tolist() == ["completed", "completed", "completed", "failed"]
    assert runs["best_val_accuracy"].tolist() == pytest.approx([0.5, 0.7, 0.6, 0.8])
    assert len(curves) == 8 and list(curves.columns[:3]) == ["variant", "seed", "epoch"]
    write_tables(tmp_path, curves, runs)
    assert pd.read_csv(tmp_path / "results.csv")["variant"].tolist() == list(runs["variant"])


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
    assert sorted(tuner.cells_run) == [("channel", 0), ("channel", 1), ("none", 0), ("none", 1)]
    out = capsys.readouterr().out
    assert "[study] channel seed 0 failed: diverged in epoch 2" in out
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
    assert again.cells_run == []


def test_focus_set_takes_the_classes_in_turn_and_only_with_boxes():
    labels = np.array([0, 0, 0, 1, 2, 2], np.int32)
    data = SimpleNamespace(
        val_images=np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1),
        val_labels=labels,
        val_boxes=np.arange(24, dtype=np.float32).reshape(6, 4),
        num_classes=3,
    )
    chosen = focus_set(data, 5)
    assert chosen["labels"].tolist() == [0, 1, 2, 0, 2]
    assert chosen["images"].ravel().tolist() == [0, 3, 4, 1, 5]
    assert chosen["boxes"][:, 0].tolist() == [0, 12, 16, 4, 20]
    assert focus_set(data, 0) is None
    assert focus_set(SimpleNamespace(**{**vars(data), "val_boxes": None}), 5) is None


def test_collect_lists_cells_never_started_as_missing(tmp_path):
    assert grid_cells(["none", "cbam"], [0, 1]) == [
        ("none", 0),
        ("cbam", 0),
        ("none", 1),
        ("cbam", 1),
    ]
    curves, runs = collect(tmp_path, ["none"], [0])
    assert curves.empty and runs["status"].tolist() == ["missing"]


@pytest.mark.slow
def test_a_chief_and_two_workers_on_loopback_share_the_grid(tmp_path):
    # The data exists before the workers start, as it would on a shared disk.
    study(
        [
            "image",
            "--seeds",
            "1",
            "--epochs",
            "1",
            "--attention",
            "none",
            *TINY_IMAGES,
            "--out",
            "warmup",
        ],
        tmp_path,
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ["image", "--attention", "none,channel", "--seeds", "2", "--epochs", "1", *TINY_IMAGES]
    args += ["--out", "study"]
    processes, logs = {}, {}
    try:
        for tuner_id in ("chief", "worker0", "worker1"):
            logs[tuner_id] = open(tmp_path / f"{tuner_id}.log", "w")  # noqa: SIM115
            processes[tuner_id] = study(
                args,
                tmp_path,
                stdout=logs[tuner_id],
                stderr=subprocess.STDOUT,
                extra_env=dict(
                    KERASTUNER_TUNER_ID=tuner_id,
                    KERASTUNER_ORACLE_IP="127.0.0.1",
                    KERASTUNER_ORACLE_PORT=str(port),
                ),
            )
        deadline = time.monotonic() + 400
        for process in processes.values():
            process.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        for tuner_id, process in processes.items():
            if process.poll() is None:
                process.kill()
                process.wait()
            logs[tuner_id].close()
    outputs = {k: (tmp_path / f"{k}.log").read_text() for k in processes}
    for tuner_id, process in processes.items():
        assert process.returncode == 0, f"{tuner_id}:\n{outputs[tuner_id][-3000:]}"

    runs = pd.read_csv(tmp_path / "study" / "results.csv")  # written by the chief
    assert len(runs) == 4 and (runs["status"] == "completed").all()
    # "[study] worker1: channel, seed 0" per cell a worker trained: each cell exactly once.
    ran = [
        line.split(": ", 1)[1]
        for k in ("worker0", "worker1")
        for line in outputs[k].splitlines()
        if line.startswith(f"[study] {k}: ") and ", seed " in line
    ]
    assert sorted(ran) == ["channel, seed 0", "channel, seed 1", "none, seed 0", "none, seed 1"]
    assert (tmp_path / "study" / "report.md").exists()
