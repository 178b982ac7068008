"""keras_attn.training on a tiny real model and real tf.data: schedules, decay, history, resume."""

import gc
import json
import os
import signal

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from keras_attn.errors import UserError
from keras_attn.training.callbacks import HistoryCSV
from keras_attn.training.config import TrainingSpec
from keras_attn.training.optim import make_optimizer, make_schedule
from keras_attn.training.run import TrainingDiverged, run_training

N, FEATURES, CLASSES = 64, 8, 3


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, FEATURES)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 1).astype("int32")
    return x, y


def _train_data(start, end, batch=16):
    x, y = _data()

    def epoch(e):
        order = tf.random.experimental.stateless_shuffle(tf.range(N), seed=tf.stack([e, e]))
        return tf.data.Dataset.from_tensor_slices((tf.gather(x, order), tf.gather(y, order)))

    ds = tf.data.Dataset.range(start, end).flat_map(epoch)
    return ds.batch(batch)


def _val_data():
    x, y = _data()
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


def _build():
    inputs = keras.Input((FEATURES,))
    h = keras.layers.Dense(16, activation="relu")(inputs)
    h = keras.layers.BatchNormalization()(h)
    # Dropout's seed state is not in save_weights: the resume test needs it restored.
    h = keras.layers.Dropout(0.3)(h)
    return keras.Model(inputs, keras.layers.Dense(CLASSES)(h))


def _run(tmp_path, cfg, **kw):
    return run_training(_build, _train_data, _val_data(), N // 16, cfg, tmp_path / "run", **kw)


def test_cosine_warmup_reaches_peak_then_decays_to_zero_at_the_end():
    cfg = TrainingSpec(epochs=10, lr=0.1, warmup_epochs=2)
    schedule = make_schedule(cfg, steps_per_epoch=5)
    lrs = [float(schedule(step)) for step in range(51)]
    assert lrs[0] == pytest.approx(0.0)
    assert lrs[10] == pytest.approx(0.1)  # end of warmup
    assert lrs[5] == pytest.approx(0.05)
    assert lrs[50] == pytest.approx(0.0, abs=1e-6)  # decay ends with the run, not after it
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_step_schedule_multiplies_by_gamma_every_step_epochs():
    cfg = TrainingSpec(epochs=10, lr=1.0, schedule="step", step_epochs=3, step_gamma=0.5)
    schedule = make_schedule(cfg, steps_per_epoch=4)
    assert float(schedule(11)) == pytest.approx(1.0)
    assert float(schedule(12)) == pytest.approx(0.5)
    assert float(schedule(24)) == pytest.approx(0.25)


def test_weight_decay_skips_biases_and_norm_parameters():
    keras.utils.set_random_seed(0)
    model = _build()
    cfg = TrainingSpec(lr=0.0, weight_decay=0.5, schedule="constant")
    optimizer = make_optimizer(cfg, 1, model)
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    zero = [tf.zeros_like(v) for v in model.trainable_variables]
    optimizer.apply_gradients(zip(zero, model.trainable_variables, strict=True))
    for v in model.trainable_variables:
        # With lr 0 nothing moves at all; so use lr>0 below to see decay.
        np.testing.assert_allclose(v.numpy(), before[v.path])
    cfg = TrainingSpec(lr=0.1, weight_decay=0.5, schedule="constant")
    optimizer = make_optimizer(cfg, 1, model)
    optimizer.apply_gradients(zip(zero, model.trainable_variables, strict=True))
    for v in model.trainable_variables:
        changed = not np.allclose(v.numpy(), before[v.path])
        assert changed == (len(v.shape) == 2), v.path  # kernels decay; biases, gamma, beta don't


def test_config_validation_names_the_bad_setting():
    with pytest.raises(ValueError, match="--lr must be positive"):
        TrainingSpec(lr=-1).validate()
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        TrainingSpec(optimizer="rmsprop").validate()


def test_history_csv_keeps_one_row_per_epoch_when_an_epoch_is_rerun(tmp_path):
    history = HistoryCSV(tmp_path / "history.csv")
    for epoch in (0, 1, 2, 1, 2, 3):  # epochs 2 and 3 re-run after a resume
        history.on_epoch_begin(epoch)
        history.on_epoch_end(epoch, {"loss": float(epoch), "val_accuracy": 0.1 * epoch})
    table = pd.read_csv(tmp_path / "history.csv")
    assert table["epoch"].tolist() == [1, 2, 3, 4]
    assert table["loss"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_run_writes_its_files_and_best_model_scores_recorded_accuracy(tmp_path):
    summary = _run(tmp_path, TrainingSpec(epochs=3, batch_size=16, lr=1e-2))
    run = tmp_path / "run"
    assert summary["status"] == "completed" and summary["epochs_completed"] == 3
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3]
    assert {"loss", "accuracy", "val_accuracy", "learning_rate"} <= set(history.columns)
    assert summary["best_val_accuracy"] == pytest.approx(history["val_accuracy"].max())
    assert summary["best_epoch"] == int(history["val_accuracy"].idxmax()) + 1
    model = keras.saving.load_model(run / "best.keras")
    x, y = _data()
    accuracy = np.mean(np.argmax(model.predict(x, verbose=0), -1) == y)
    assert accuracy == pytest.approx(summary["best_val_accuracy"], abs=1e-6)
    assert list((run / "logs").rglob("events.out.tfevents.*"))
    assert not (run / "backup").exists()  # a finished run keeps no backup
    # Re-running a finished run only reports it.
    again = _run(tmp_path, TrainingSpec(epochs=3, batch_size=16, lr=1e-2))
    assert again["wall_seconds"] == summary["wall_seconds"]
    # Also when the process died after the last epoch but before marking the run completed.
    (run / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    again = _run(tmp_path, TrainingSpec(epochs=3, batch_size=16, lr=1e-2))
    assert again["status"] == "completed" and again["wall_seconds"] == summary["wall_seconds"]
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [1, 2, 3]


class _InterruptAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(tmp_path):
    cfg = TrainingSpec(epochs=4, batch_size=16, lr=1e-2, deterministic=True)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, cfg, extra_callbacks=[_InterruptAt(2)])
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "interrupted"
    resumed = _run(tmp_path, cfg)
    run_training(_build, _train_data, _val_data(), N // 16, cfg, tmp_path / "straight")
    a = pd.read_csv(tmp_path / "run" / "history.csv")
    b = pd.read_csv(tmp_path / "straight" / "history.csv")
    assert a["epoch"].tolist() == [1, 2, 3, 4]
    # Same data order, optimizer state, schedule position and dropout masks after the resume.
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
    np.testing.assert_allclose(a["learning_rate"], b["learning_rate"], rtol=1e-6)
    assert resumed["epochs_completed"] == 4


@pytest.mark.slow
def test_a_different_config_in_the_same_run_dir_is_refused(tmp_path):
    _run(tmp_path, TrainingSpec(epochs=1, batch_size=16))
    # A run made before a setting existed still matches it at its default, not otherwise.
    config_path = tmp_path / "run" / "config.json"
    old = json.loads(config_path.read_text())
    del old["steps_per_execution"]
    config_path.write_text(json.dumps(old))
    assert _run(tmp_path, TrainingSpec(epochs=1, batch_size=16))["status"] == "completed"
    config_path.write_text(json.dumps(old))
    with pytest.raises(UserError, match="differs in: steps_per_execution"):
        _run(tmp_path, TrainingSpec(epochs=1, batch_size=16, steps_per_execution=2))
    with pytest.raises(UserError, match="different config .*lr"):
        _run(tmp_path, TrainingSpec(epochs=1, batch_size=16, lr=0.5))
    assert _run(tmp_path, TrainingSpec(epochs=1, batch_size=16, lr=0.5, overwrite=True))


def test_divergence_stops_with_the_epoch_and_keeps_the_last_good_model(tmp_path):
    class _Explode(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:  # epoch 1 went fine; now blow the weights up
                for v in self.model.trainable_variables:
                    v.assign(v * np.float32(np.inf))

    with pytest.raises(TrainingDiverged, match="epoch 2"):
        _run(tmp_path, TrainingSpec(epochs=3, batch_size=16), extra_callbacks=[_Explode()])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["best_epoch"] == 1
    model = keras.saving.load_model(tmp_path / "run" / "best.keras")
    assert all(np.isfinite(w).all() for w in model.get_weights())


@pytest.mark.slow
def test_several_steps_per_execution_train_exactly_as_one(tmp_path):
    # 4 steps per epoch: neither 3 nor 32 divides it, so partial executions are covered too.
    histories = []
    for spe in (1, 3, 32):
        cfg = TrainingSpec(epochs=2, batch_size=16, lr=1e-2, steps_per_execution=spe)
        run_training(_build, _train_data, _val_data(), N // 16, cfg, tmp_path / f"spe{spe}")
        histories.append(pd.read_csv(tmp_path / f"spe{spe}" / "history.csv"))
    for other in histories[1:]:
        for column in ("loss", "val_loss", "grad_norm_mean", "grad_norm_max", "batch_loss_std"):
            np.testing.assert_allclose(other[column], histories[0][column], rtol=1e-5)


def test_patience_stop_counts_the_epochs_before_a_resume():
    from keras_attn.training.callbacks import PatienceStop

    def stops_after(values, patience, previous=(), start=0):
        stop = PatienceStop("val_loss", patience, previous, start=start)
        stop.set_model(keras.Sequential())
        stop.model.stop_training = False
        for epoch, value in enumerate(values):
            stop.on_epoch_end(epoch, {"val_loss": value})
            if stop.model.stop_training:
                return epoch + 1 + len(previous)
        return None

    losses = [1.0, 0.8, 0.9, 0.8, 0.85, 0.7]
    assert stops_after(losses, 3) == 5  # best 0.8 at epoch 2; a tie (epoch 4) is no gain
    assert stops_after(losses, 4) is None
    # Resumed after epoch 3: the same stop as without the interruption.
    assert stops_after(losses[3:], 3, previous=losses[:3]) == 5
    # Not watched before epoch 3: the best so far is 0.9 (epoch 3), then 0.8 (epoch 4).
    assert stops_after(losses, 2, start=2) is None
    assert stops_after([0.1, 0.9, 0.8, 0.8, 0.8], 2, start=1) == 5
    assert stops_after([0.1, 0.9, 0.8, 0.8, 0.8], 2) == 3  # unwatched, 0.1 stays best
    assert stops_after([0.9, 0.8, 0.8, 0.8], 2, previous=[0.1], start=1) == 5  # resumed
    accuracy = PatienceStop("val_accuracy", 1)
    accuracy.set_model(keras.Sequential())
    accuracy.model.stop_training = False
    accuracy.on_epoch_end(0, {"val_accuracy": 0.5})
    accuracy.on_epoch_end(1, {"val_accuracy": 0.6})  # higher is better for accuracy
    assert not accuracy.model.stop_training


def test_intra_op_threads_reads_what_a_worker_is_given(monkeypatch):
    from keras_attn.training.run import intra_op_threads

    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "1")
    assert intra_op_threads() == 1
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS")
    assert intra_op_threads() == os.cpu_count()


class _CtrlCInGarbageCollection(keras.callbacks.Callback):
    """Presses Ctrl-C while a garbage-collector callback runs, as one of JAX's did."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch != 0:
            return

        def collecting(phase, info):
            gc.callbacks.remove(collecting)
            os.kill(os.getpid(), signal.SIGINT)  # its KeyboardInterrupt is raised here

        gc.callbacks.append(collecting)
        gc.collect()  # Python prints "Exception ignored in ..." and drops the interrupt


def test_a_ctrl_c_dropped_by_a_gc_callback_still_stops_the_run(tmp_path):
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            _run(
                tmp_path,
                TrainingSpec(epochs=4, batch_size=16),
                extra_callbacks=[_CtrlCInGarbageCollection()],
            )
    finally:
        restored = signal.signal(signal.SIGINT, previous)
    assert restored is signal.default_int_handler  # the run put its handler back
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_completed"] == 1
    assert pd.read_csv(tmp_path / "run" / "history.csv")["epoch"].tolist() == [1]


class _InterruptAtFirstEpochEnd(keras.callbacks.Callback):
    """Ctrl-C after TensorBoard logged epoch 1 and before its backup was written."""

    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt


def test_a_run_stopped_before_its_first_backup_restarts_with_its_logs_once(tmp_path):
    cfg = TrainingSpec(epochs=2, batch_size=16)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, cfg, extra_callbacks=[_InterruptAtFirstEpochEnd()])
    assert not (tmp_path / "run" / "backup").exists()
    assert _run(tmp_path, cfg)["status"] == "completed"
    steps = [
        event.step
        for path in (tmp_path / "run" / "logs" / "validation").glob("events.out.tfevents.*")
        for event in tf.compat.v1.train.summary_iterator(str(path))
        for value in event.summary.value
        if value.tag == "epoch_accuracy"
    ]
    assert sorted(steps) == [0, 1]  # not epoch 1 twice
