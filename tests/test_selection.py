"""Learning-rate selection, the sweep's endpoints and the grid report, on fixed tables."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from keras_attn.errors import UserError
from keras_attn.study import selection, stats
from keras_attn.study.grid import collect, run_grid
from keras_attn.study.report import write_report
from keras_attn.study.report.grid import Grid

N = 1000  # test images per run


def _sweep_runs(scores: dict) -> pd.DataFrame:
    """`scores[(variant, lr)]` = per-seed best val accuracies; NaN marks a diverged run."""
    rows = []
    for (variant, lr), values in scores.items():
        for seed, value in enumerate(values):
            failed = math.isnan(value)
            rows.append(
                dict(variant=variant, seed=seed, lr=lr, best_val_accuracy=value)
                | dict(status="failed" if failed else "completed")
            )
    return pd.DataFrame(rows)


SWEEP = {
    ("none", 1e-3): [0.60, 0.62],
    ("none", 3e-3): [0.70, 0.72],
    ("none", 1e-2): [0.695, 0.715],  # within a point of the best: none is lr-insensitive
    ("cbam", 1e-3): [0.80, 0.80],
    ("cbam", 3e-3): [0.50, 0.50],
    ("cbam", 1e-2): [math.nan, 0.10],  # one diverged run
}


def test_each_variant_gets_its_own_best_rate_and_its_sensitivity():
    runs = _sweep_runs(SWEEP)
    curve = selection.lr_curve(runs, [])
    chosen = selection.chosen_rates(curve, []).set_index("variant")
    assert chosen.loc["none", "lr"] == 3e-3 and chosen.loc["cbam", "lr"] == 1e-3
    assert chosen.loc["none", "best_mean"] == pytest.approx(0.71)
    assert chosen.loc["none", "sensitivity"] == pytest.approx(math.log10(1e-2 / 3e-3))
    assert chosen.loc["cbam", "sensitivity"] == 0.0
    assert chosen.loc["cbam", "edge"] and not chosen.loc["none", "edge"]  # 1e-3 is the smallest
    marked = selection.select(runs, {"lr": [1e-3, 3e-3, 1e-2]}, ["lr"])
    picked = marked[marked["selected"]]
    assert sorted(zip(picked["variant"], picked["lr"], strict=True)) == sorted(
        [("cbam", 1e-3)] * 2 + [("none", 3e-3)] * 2
    )
    divergence = selection.divergence_rate(runs, []).set_index("variant")
    assert divergence.loc["cbam", "n_failed"] == 1 and divergence.loc["cbam", "n_runs"] == 6
    assert divergence.loc["none", "rate"] == 0.0


def test_a_tie_goes_to_the_smaller_rate_and_nothing_tuned_selects_every_run():
    runs = _sweep_runs({("none", 1e-3): [0.5, 0.5], ("none", 1e-2): [0.5, 0.5]})
    chosen = selection.chosen_rates(selection.lr_curve(runs, []), [])
    assert chosen["lr"].tolist() == [1e-3]
    assert selection.select(runs, {}, [])["selected"].all()
    # The same counts of correct val images at two rates, logged as float32 as Keras logs
    # them (3281 of 3 x 1199 either way), are a tie too, although their float64 means differ.
    hits = {1e-3: [1101, 1095, 1085], 1e-2: [1102, 1084, 1095]}
    logged = {("cbam", lr): [float(np.float32(h / 1199)) for h in v] for lr, v in hits.items()}
    curve = selection.lr_curve(_sweep_runs(logged), [])
    assert curve["mean"].iloc[1] != curve["mean"].iloc[0]
    assert selection.chosen_rates(curve, [])["lr"].tolist() == [1e-3]


def test_expected_validation_performance_matches_hand_computed_values():
    # Two values 0 and 1: one draw averages them; the best of two misses 1 only when
    # both draws are 0 (probability 1/4).
    assert selection.expected_max([0.0, 1.0], 1) == pytest.approx(0.5)
    assert selection.expected_max([0.0, 1.0], 2) == pytest.approx(0.75)
    assert selection.expected_max([0.3, 0.3, 0.3], 5) == pytest.approx(0.3)
    runs = _sweep_runs({("none", 1e-3): [0.4, math.nan]})
    curve = selection.expected_validation(runs, [], chance=0.1)
    assert curve["expected"].tolist() == pytest.approx([0.25, 0.4 * 0.75 + 0.1 * 0.25])


@pytest.mark.parametrize(
    "text, message",
    [("1e-3", "at least two"), ("1e-3,x", "separated by commas"), ("1e-3,-1", "positive")],
)
def test_bad_rate_lists_are_one_line_errors(text, message):
    assert message in selection.check_rates(text)
    with pytest.raises(UserError, match=message):
        selection.rates(text)


def test_plateau_fluctuation_spikes_variance_ratio_and_under_training():
    # Climbs to 0.8 at epoch 3, then jitters by ±0.02: only the plateau is measured.
    assert stats.fluctuation_after_best([0.2, 0.5, 0.8, 0.78, 0.80, 0.78]) == pytest.approx(
        np.std([-0.02, 0.02, -0.02], ddof=1)
    )
    assert math.isnan(stats.fluctuation_after_best([0.1, 0.2, 0.3, 0.4]))  # still climbing
    assert stats.gradient_spikes([1.0, 1.1, 0.9, 9.0, 1.0]) == 1.0
    ratio, low, high = stats.variance_ratio([0.0, 2.0, 4.0], [0.0, 1.0, 2.0])
    assert ratio == pytest.approx(4.0) and low < 4.0 < high
    # F(2, 2) quantiles: 0.975 -> 39.0, 0.025 -> 1/39.
    assert low == pytest.approx(4.0 / 39.0) and high == pytest.approx(4.0 * 39.0)
    assert stats.under_trained(best_epoch=9, epochs=10)
    assert not stats.under_trained(best_epoch=8, epochs=10)


def _write_predictions(run_dir, accuracy, rng):
    run_dir.mkdir(parents=True)
    labels = np.arange(N) % 10
    right = rng.random(N) < accuracy
    predicted = np.where(right, labels, (labels + 1) % 10)
    np.savez_compressed(run_dir / "test_predictions.npz", label=labels, predicted=predicted)
    return float(right.mean())


def _size_grid(tmp_path, gain_per_doubling):
    """none vs cbam at 25/50/100/200 per class × 2 rates × 4 seeds; cbam's test advantage
    grows by `gain_per_doubling` per doubling of the data; val picks lr 3e-3 for both."""
    rng = np.random.default_rng(0)
    runs, curves = [], []
    sizes = [25, 50, 100, 200]
    for seed in range(4):
        for size in sizes:
            for lr in (1e-3, 3e-3):
                for variant in ("none", "cbam"):
                    doublings = math.log2(size / 25)
                    accuracy = 0.6 + 0.02 * doublings
                    if variant == "cbam":
                        accuracy += gain_per_doubling * doublings
                    val = accuracy - (0.1 if lr == 1e-3 else 0.0)
                    run_dir = tmp_path / f"{variant}-{size}-{lr}-{seed}"
                    test = _write_predictions(run_dir, accuracy, rng)
                    runs.append(
                        dict(variant=variant, seed=seed, train_per_class=size, lr=lr)
                        | dict(status="completed", best_val_accuracy=val, best_epoch=4)
                        | dict(final_val_accuracy=val, test_accuracy=test, epochs=10)
                        | dict(epochs_completed=10, wall_seconds=1.0, run_dir=str(run_dir))
                    )
                    curves += [
                        dict(variant=variant, seed=seed, train_per_class=size, lr=lr)
                        | dict(epoch=e, val_accuracy=val - 0.01 * (e % 2), loss=1.0 / e)
                        for e in range(1, 7)
                    ]
    meta = dict(kind="image", baseline="none", axes=dict(train_per_class=sizes, lr=[1e-3, 3e-3]))
    meta |= dict(tuned=["lr"], chance=0.1, data="fixture", command="python -m x")
    return pd.DataFrame(curves), pd.DataFrame(runs), meta


def test_the_grid_finds_a_planted_interaction_and_corrects_every_test_together(tmp_path):
    curves, runs, meta = _size_grid(tmp_path, gain_per_doubling=0.03)
    grid = Grid(curves, runs, meta)
    assert [c["train_per_class"] for c, _ in grid.conditions] == [25, 50, 100, 200]
    assert set(grid.runs.loc[grid.runs["selected"], "lr"]) == {3e-3}
    (trend,) = grid.interactions.itertuples()
    assert trend.slope == pytest.approx(0.03, abs=0.01) and trend.low > 0
    assert trend.p_holm < 0.05
    # One Holm family: 4 conditions' cbam-vs-none plus the interaction.
    assert grid.n_tests == 5
    assert all(s.n_tests == 5 for _, s in grid.conditions)
    first = grid.conditions[0][1].test.loc["cbam"]
    assert first["diff"] == pytest.approx(0.0, abs=0.03)  # no advantage at 25 per class
    assert first["p_holm"] >= first["p"]


def _backbone_grid(tmp_path, order):
    """none vs cbam on two backbones × 4 seeds at one rate: cbam costs 0.01 on
    resnet_small and 0.06 on small_cnn; the grid lists the backbones in `order`."""
    rng = np.random.default_rng(1)
    cost = dict(resnet_small=0.01, small_cnn=0.06)
    runs = []
    for seed in range(4):
        for backbone in order:
            for variant in ("none", "cbam"):
                accuracy = 0.9 - (cost[backbone] if variant == "cbam" else 0.0)
                run_dir = tmp_path / f"{variant}-{backbone}-{seed}"
                test = _write_predictions(run_dir, accuracy, rng)
                runs.append(
                    dict(variant=variant, seed=seed, backbone=backbone, status="completed")
                    | dict(best_val_accuracy=accuracy, best_epoch=4, final_val_accuracy=accuracy)
                    | dict(test_accuracy=test, epochs=10, epochs_completed=10)
                    | dict(wall_seconds=1.0, run_dir=str(run_dir))
                )
    meta = dict(kind="image", baseline="none", axes=dict(backbone=list(order)), tuned=[])
    meta |= dict(chance=0.1, data="fixture", command="python -m x")
    return pd.DataFrame(columns=["variant", "seed", "backbone", "epoch"]), pd.DataFrame(runs), meta


@pytest.mark.parametrize("order", [("resnet_small", "small_cnn"), ("small_cnn", "resnet_small")])
def test_an_axis_of_two_named_values_gets_the_change_from_the_first_to_the_second(tmp_path, order):
    curves, runs, meta = _backbone_grid(tmp_path, order)
    grid = Grid(curves, runs, meta)
    (trend,) = grid.interactions.itertuples()
    assert trend.x == f"backbone: {order[0]} → {order[1]}"
    # cbam − none is −0.01 on resnet_small and −0.06 on small_cnn (binomial noise on top).
    expected = -0.05 if order[0] == "resnet_small" else 0.05
    assert trend.slope == pytest.approx(expected, abs=0.02)
    assert trend.n == 8 and trend.low < trend.slope < trend.high
    assert grid.n_tests == 3  # two conditions' cbam-vs-none and the interaction


def test_an_axis_of_three_named_values_has_no_interaction(tmp_path):
    curves, runs, meta = _backbone_grid(tmp_path, ("resnet_small", "small_cnn"))
    third = runs[runs["backbone"] == "small_cnn"].assign(backbone="densenet")
    meta["axes"] = dict(backbone=["resnet_small", "small_cnn", "densenet"])
    assert Grid(curves, pd.concat([runs, third]), meta).interactions.empty


def test_an_epochs_axis_is_one_column_of_the_tables_and_its_report_is_written(tmp_path):
    # A run's summary.json records its epoch budget as `epochs`, a column of results.csv;
    # an --epochs axis names the same column, which once appeared twice and crashed the
    # report. cbam − none grows by 0.05 per doubling of the epochs.
    rng = np.random.default_rng(2)

    def run_one(variant, seed, run_dir, epochs):
        doublings = math.log2(epochs / 30)
        accuracy = 0.8 - (0.1 - 0.05 * doublings if variant == "cbam" else 0.0)
        test = _write_predictions(run_dir, accuracy, rng)
        summary = dict(status="completed", best_val_accuracy=accuracy, best_epoch=epochs)
        summary |= dict(final_val_accuracy=accuracy, test_accuracy=test, epochs=epochs)
        (run_dir / "summary.json").write_text(json.dumps(summary | dict(epochs_completed=epochs)))
        history = pd.DataFrame(dict(epoch=[1, 2], val_accuracy=[0.5, accuracy]))
        history.to_csv(run_dir / "history.csv", index=False)
        return summary

    axes = {"epochs": [30, 60, 120]}
    run_grid(tmp_path, ["none", "cbam"], range(4), run_one, axes)
    curves, runs = collect(tmp_path, ["none", "cbam"], range(4), axes)
    assert runs.columns.is_unique and curves.columns.is_unique
    assert runs["epochs"].tolist() == [30, 30, 60, 60, 120, 120] * 4
    meta = dict(kind="image", baseline="none", axes=axes, tuned=[], chance=0.1)
    meta |= dict(data="fixture", command="python -m x")
    grid = Grid(curves, runs, meta)
    (trend,) = grid.interactions.itertuples()
    assert trend.x == "log2(epochs)" and trend.slope == pytest.approx(0.05, abs=0.02)
    # Every run peaked in its last epoch, so each condition flags them under-trained
    # against its own epoch budget.
    for _, study in grid.conditions:
        assert study.seeds["under_trained"].tolist() == [1.0] * 8
    assert "log2(epochs)" in write_report(curves, runs, meta, tmp_path / "out").read_text()


def test_no_interaction_is_found_in_flat_data_and_the_report_says_what_it_could_detect(tmp_path):
    curves, runs, meta = _size_grid(tmp_path, gain_per_doubling=0.0)
    text = write_report(curves, runs, meta, tmp_path / "out").read_text()
    for heading in (
        "## Learning rate, tuned per variant",
        "### Expected validation performance",
        "## Condition: train per class 25",
        "### Stability endpoints",
        "### Test accuracy at the best-val epoch",
        "## Interaction: does the difference from none change along an axis?",
        "every test p-value is Holm-corrected over the whole report",
    ):
        assert heading in text
    assert "corrects over all 5 tests of this report" in text
    # Pooled within sizes: the best val accuracies here do not vary over seeds (no ratio),
    # the test accuracies do (binomial scatter of the planted predictions).
    spread = text.split("## Seed variance over all conditions")[1].split("\n## ")[0]
    (row,) = [line for line in spread.splitlines() if line.startswith("| cbam |")]
    _, val_ratio, test_ratio = (cell.strip() for cell in row.strip("|").split("|"))
    assert val_ratio.startswith("—") and float(test_ratio.split(" [")[0]) > 0
    assert "could have detected ≥ 0." in text
    assert "Per doubling of the training set, cbam − none test accuracy changes by" in text
    assert (tmp_path / "out" / "figures" / "lr_curves.png").stat().st_size > 1000
    assert (tmp_path / "out" / "figures" / "expected_validation.png").exists()


def test_seeds_auto_adds_seeds_until_the_interval_is_narrow_or_the_cap(capsys):
    from keras_attn.study import seed_rule

    rounds = []
    widths = {3: 0.05, 4: 0.02, 5: 0.009}
    seeds, sentence = seed_rule.grow(
        [0, 1, 2], rounds.append, lambda s: widths[len(s)], target=0.01, max_seeds=20
    )
    assert seeds == [0, 1, 2, 3, 4] and [len(r) for r in rounds] == [3, 4, 5]
    assert "stopped at 5 seeds" in sentence and "±0.0090" in sentence
    seeds, sentence = seed_rule.grow([0, 1, 2], rounds.append, lambda s: 0.05, 0.01, 4)
    assert seeds == [0, 1, 2, 3] and "reached the cap of 4 seeds" in sentence
    assert "the target was not met" in sentence
    assert "4 seeds: widest 95% interval ±0.0500" in capsys.readouterr().out
    assert (
        seed_rule.first_seeds("auto", None, 20) == 3 and seed_rule.first_seeds("5", None, 20) == 5
    )
    with pytest.raises(UserError, match="--target-halfwidth needs --seeds auto"):
        seed_rule.first_seeds("5", 0.01, 20)
    assert "positive number of seeds or 'auto'" in seed_rule.check_seeds("0")


def test_a_sweep_where_every_run_failed_still_gets_a_report(tmp_path):
    runs = _sweep_runs({("none", 1e-3): [math.nan], ("none", 1e-2): [math.nan]})
    runs = runs.assign(run_dir="", epochs_completed=1, wall_seconds=1.0, failure="NaN loss")
    meta = dict(kind="image", baseline="none", axes=dict(lr=[1e-3, 1e-2]), tuned=["lr"])
    text = write_report(pd.DataFrame(), runs, meta | dict(chance=0.1), tmp_path).read_text()
    assert "diverged or failed: 2" in text
    assert "| condition | variant | chosen lr |" in text
