"""The study's test-set statistics against answers known in advance."""

import math

import numpy as np
import pandas as pd
import pytest

from keras_attn.study.comparisons import (
    compare,
    comparison_table,
    holm,
    interaction,
    minimum_detectable_effect,
    paired_trend,
)

SEEDS, N = 5, 2000


def _correct(accuracy, seeds=SEEDS, n=N, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((seeds, n)) < accuracy


def test_identical_variants_differ_by_zero_with_an_interval_holding_zero():
    b = _correct(0.8)
    result = compare(b.copy(), b)
    assert result.diff == 0 and result.low == 0 and result.high == 0
    assert result.p == 1.0 and result.p_a_beats_b == 0.5 and result.n == SEEDS


def test_two_equal_variants_with_their_own_noise_are_not_called_different():
    result = compare(_correct(0.8, seed=1), _correct(0.8, seed=2))
    assert result.low < 0 < result.high and result.p > 0.05
    assert result.mde > abs(result.diff)


def test_a_planted_effect_of_005_with_small_noise_is_detected():
    b = _correct(0.80, seed=3)
    rng = np.random.default_rng(4)
    # A fixes a quarter of B's mistakes on every seed: about +0.05, a little noise.
    a = b | ((rng.random(b.shape) < 0.25) & ~b)
    result = compare(a, b)
    assert result.diff == pytest.approx(0.05, abs=0.005)
    assert result.low < 0.05 < result.high and result.low > 0.03
    assert result.p < 0.001 and result.p_a_beats_b == 1.0
    assert 0 < result.mde < 0.05  # the study could have seen an effect this size


def test_the_interval_widens_with_seed_noise_that_test_sampling_alone_misses():
    b = _correct(0.8, seed=5)
    rng = np.random.default_rng(6)
    shifts = np.array([-0.06, 0.06, -0.05, 0.05, 0.0])  # A's seeds differ a lot
    a = np.stack([rng.random(N) < 0.8 + s for s in shifts])
    noisy = compare(a, b)
    steady = compare(np.stack([rng.random(N) < 0.8 for _ in shifts]), b)
    assert noisy.high - noisy.low > 1.5 * (steady.high - steady.low)


def test_holm_matches_a_hand_computed_example():
    adjusted = holm([0.01, 0.04, 0.03, math.nan])
    np.testing.assert_allclose(adjusted[:3], [0.03, 0.06, 0.06])
    assert math.isnan(adjusted[3])
    assert holm([0.5, 0.9]).tolist() == [1.0, 1.0]


def test_minimum_detectable_effect_follows_the_t_quantiles():
    assert minimum_detectable_effect(0.01, 1_000_000) == pytest.approx(0.028, abs=1e-3)
    assert minimum_detectable_effect(0.01, 3) > minimum_detectable_effect(0.01, 10)
    assert math.isnan(minimum_detectable_effect(math.nan, 3))


def test_interaction_recovers_a_planted_slope_and_finds_none_in_flat_data():
    rng = np.random.default_rng(7)
    sizes = np.repeat(np.log2([50, 200, 800]), 4)
    trend = interaction(sizes, 0.01 * sizes + rng.normal(0, 0.002, sizes.size))
    assert trend.low < 0.01 < trend.high and trend.p < 0.001 and trend.n == 12
    flat = interaction(sizes, rng.normal(0, 0.01, sizes.size))
    assert flat.low < 0 < flat.high
    assert math.isnan(interaction([1, 1, 1], [0.1, 0.2, 0.3]).slope)


def test_a_doubling_axis_gives_the_trend_per_doubling_and_a_linear_one_per_unit():
    # cbam - none grows by 0.02 from each epoch budget to its double (30, 60, 120).
    rows = []
    for seed in range(3):
        for step, epochs in enumerate((30, 60, 120)):
            rows.append(dict(variant="none", seed=seed, epochs=epochs, test_accuracy=0.8))
            accuracy = 0.7 + 0.02 * step + 0.001 * seed
            rows.append(dict(variant="cbam", seed=seed, epochs=epochs, test_accuracy=accuracy))
    runs = pd.DataFrame(rows)
    assert paired_trend(runs, "epochs", "cbam", "none").slope == pytest.approx(0.02)
    distractors = runs.rename(columns={"epochs": "distractors"})
    assert paired_trend(distractors, "distractors", "cbam", "none").slope == pytest.approx(
        np.polyfit([30, 60, 120], [0.0, 0.02, 0.04], 1)[0]
    )


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="one shape"):
        compare(np.ones((2, 3), bool), np.ones((3, 3), bool))


def _runs_with_predictions(tmp_path, accuracy_of):
    """A runs table whose run dirs hold test_predictions.npz with known answers."""
    rows = []
    labels = np.random.default_rng(0).integers(0, 10, N)
    for seed in range(3):
        for variant, accuracy in accuracy_of.items():
            run_dir = tmp_path / f"{variant}-seed{seed}"
            run_dir.mkdir()
            right = _correct(accuracy, seeds=1, seed=10 * seed + len(variant))[0]
            predicted = np.where(right, labels, (labels + 1) % 10)
            np.savez_compressed(run_dir / "test_predictions.npz", label=labels, predicted=predicted)
            rows.append(dict(variant=variant, seed=seed, status="completed", run_dir=str(run_dir)))
    rows.append(dict(variant="spatial", seed=0, status="failed", run_dir=str(tmp_path / "x")))
    return pd.DataFrame(rows)


def test_the_report_table_pairs_runs_by_seed_and_corrects_over_its_rows(tmp_path):
    runs = _runs_with_predictions(tmp_path, {"none": 0.70, "cbam": 0.80, "channel": 0.70})
    table = comparison_table(runs, "none", resamples=1000)
    assert list(table.index) == ["cbam", "channel"]  # spatial never completed
    cbam, channel = table.loc["cbam"], table.loc["channel"]
    assert cbam["diff"] == pytest.approx(0.10, abs=0.02) and cbam["low"] > 0.05
    assert cbam["p_holm"] < 0.01 and cbam["n"] == 3
    assert channel["low"] < 0 < channel["high"] and channel["p_holm"] > 0.05
    np.testing.assert_allclose(table["p_holm"], holm(table["p"]))
