import math
import warnings

import keras
import numpy as np
import pytest

from keras_attn.models.image import build_image_model
from keras_attn.study.focus import _MAP_PASSES
from keras_attn.study.focus_final import (
    background_value,
    erase_regions,
    final_focus,
    inside_cells,
    map_auroc,
    pointing_chance,
    pointing_game,
    randomised_copy,
    rank_correlation,
    read_final_focus,
    write_final_focus,
)

SIZE = 32  # small_cnn pools twice: 8x8 maps
TINY = {"widths": (8, 8, 16), "dropout": 0.0}
# The upper-left quarter of an 8x8 grid: cells 0-3 in both directions.
QUARTER = [0.0, 0.0, 0.5, 0.5]


def _peaked(row, col, cells=8, n=1):
    """(n, cells, cells): a bump at (row, col) falling off with distance."""
    i, j = np.mgrid[:cells, :cells]
    return np.repeat(np.exp(-((i - row) ** 2 + (j - col) ** 2) / 4.0)[None], n, axis=0)


# --- cells, pointing, AUROC -------------------------------------------------------------


def test_cells_count_by_their_centres_and_boxes_are_half_open():
    inside = inside_cells([[0.0, 0.0, 0.5, 0.25], [0.3, 0.3, 0.31, 0.31]], 4, 4)
    assert inside[0].sum() == 2 * 1 and inside[0][:2, :1].all()
    assert not inside[1].any()  # no centre in a sliver between centres
    # The far edge is open: a box ending at a centre leaves that cell out.
    assert not inside_cells([[0.0, 0.0, 0.125, 1.0]], 4, 4).any()


def test_a_map_peaked_inside_its_box_points_at_it():
    maps = _peaked(1, 2)
    assert pointing_game(maps, [QUARTER]) == pytest.approx([1.0])
    assert map_auroc(maps, [QUARTER])[0] > 0.95
    assert pointing_chance(maps, [QUARTER]) == pytest.approx([16 / 64])


def test_a_map_peaked_outside_its_box_misses_it():
    maps = _peaked(6, 6)
    assert pointing_game(maps, [QUARTER]) == pytest.approx([0.0])
    # Low, not 0: the far corners outside the box are farther from the bump than some inside.
    assert map_auroc(maps, [QUARTER])[0] < 0.15


def test_auroc_by_hand_with_ties():
    # Inside (the upper-left cell): 2. Outside: 1, 2, 3. U = 1 (beats 1) + 0.5 (ties 2).
    maps = np.array([[[2.0, 1.0], [2.0, 3.0]]])
    assert map_auroc(maps, [QUARTER]) == pytest.approx([1.5 / 3])


def test_a_tied_maximum_half_inside_scores_half():
    maps = np.zeros((1, 8, 8))
    maps[0, 0, 0] = maps[0, 7, 7] = 1.0
    assert pointing_game(maps, [QUARTER]) == pytest.approx([0.5])


def test_a_flat_map_points_nowhere():
    maps = np.full((2, 8, 8), 0.3)
    assert np.isnan(pointing_game(maps, [QUARTER] * 2)).all()
    # A collapsed model's map holds NaN: nowhere too, and no RuntimeWarning on the way.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(pointing_game(np.full((1, 8, 8), np.nan), [QUARTER])).all()
    # AUROC is defined, at chance; a box over all cells or none leaves nothing to rank.
    np.testing.assert_allclose(map_auroc(maps, [QUARTER, QUARTER]), [0.5, 0.5])
    assert np.isnan(map_auroc(_peaked(1, 1, n=2), [[0, 0, 1, 1], [0, 0, 0, 0]])).all()


def test_random_maps_score_chance():
    rng = np.random.default_rng(0)
    n = 2000
    maps = rng.uniform(size=(n, 8, 8))
    corner = rng.uniform(0.0, 0.5, (n, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(0.2, 0.5, (n, 2))], axis=1)
    chance = pointing_chance(maps, boxes)
    assert np.nanmean(map_auroc(maps, boxes)) == pytest.approx(0.5, abs=0.05)
    assert pointing_game(maps, boxes).mean() == pytest.approx(chance.mean(), abs=0.05)
    assert 0.05 < chance.mean() < 0.3  # the check above is not trivially 0 = 0


# --- rank correlation ---------------------------------------------------------------------


def test_rank_correlation_known_answers():
    maps = np.random.default_rng(1).uniform(size=(3, 8, 8))
    np.testing.assert_allclose(rank_correlation(maps, maps), [1.0] * 3)
    np.testing.assert_allclose(rank_correlation(maps, -maps + 5), [-1.0] * 3)
    # Ranks only: a monotone transform changes nothing.
    np.testing.assert_allclose(rank_correlation(maps, maps**3), [1.0] * 3)
    flat = np.ones_like(maps)
    assert np.isnan(rank_correlation(maps, flat)).all()


# --- erasing ------------------------------------------------------------------------------


def _cluttered(n=3, size=SIZE, channels=3, seed=0):
    """Black images with a bright square and some clutter, one piece touching the border."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size, channels), np.float32)
    images[:, 8:20, 8:20] = 200.0
    images[:, 0, 3:6] = 90.0  # clutter on the border: the median ignores it
    images += rng.uniform(0, 1, images.shape).astype(np.float32) * (images == 0)
    return images


def test_the_background_is_the_border_median():
    image = np.full((6, 6, 2), 7.0)
    image[0, 0] = 250.0
    image[2:4, 2:4] = 100.0  # inside: never read
    np.testing.assert_allclose(background_value(image), [7.0, 7.0])


def test_erasing_changes_the_intended_number_of_pixels():
    images = _cluttered()
    maps = _peaked(3.5, 3.5, n=3)
    fraction = np.array([0.1, 0.25, 0.4])
    top, random = erase_regions(images, maps, fraction, np.random.default_rng(0))
    for i, share in enumerate(fraction):
        background = background_value(images[i])
        assert 0.0 < background.max() < 1.0  # the noisy black, not the border's clutter
        for erased in (top, random):
            # No pixel of the noise equals the median in all channels, so every set pixel shows.
            changed = (erased[i] != images[i]).any(axis=-1)
            assert changed.sum() == round(share * SIZE * SIZE)
            np.testing.assert_array_equal(
                erased[i][changed], np.tile(background, (changed.sum(), 1))
            )
    # The top region lies on the map's peak, the bright square's centre.
    assert (top[0, 14:18, 14:18] == background_value(images[0])).all()
    assert (random[0] != top[0]).any()


def test_the_random_region_is_a_compact_block_of_exact_size():
    n, size = 40, 20
    images = np.random.default_rng(2).uniform(1, 255, (n, size, size, 1)).astype(np.float32)
    fraction = np.random.default_rng(3).uniform(0.01, 0.99, n)
    _, random = erase_regions(images, np.ones((n, 5, 5)), fraction, np.random.default_rng(4))
    corners = set()
    for image, erased, share in zip(images, random, fraction, strict=True):
        changed = (erased != image)[..., 0]
        count = int(changed.sum())
        assert count == round(share * size * size)
        rows, cols = np.nonzero(changed)
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        # A filled rectangle but for part of its last row, near-square unless the side caps it.
        assert 0 <= height * width - count < width
        assert abs(height - width) <= 2 or width == size
        corners.add((rows.min(), cols.min()))
    assert len(corners) > n // 2  # placed at random, not always in one spot


# --- randomised copy and the final measurement --------------------------------------------


@pytest.fixture(scope="module")
def cbam_model():
    return build_image_model(3, SIZE, attention="cbam", seed=0, **TINY)


def _fixtures(n=12, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)
    labels = rng.integers(0, 3, n)
    corner = rng.uniform(0.0, 0.5, (n, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(0.25, 0.5, (n, 2))], axis=1)
    return images, labels, boxes


def _trained_like(model, seed=0):
    """A copy whose weights moved away from the initial ones, as training would move them."""
    moved = keras.models.clone_model(model)
    rng = np.random.default_rng(seed)
    for variable in moved.trainable_weights:
        value = variable.numpy()
        variable.assign(value + rng.normal(0, 0.5 * (value.std() + 0.05), value.shape))
    return moved


def test_the_randomised_copy_holds_the_initial_weights(cbam_model):
    trained = _trained_like(cbam_model)
    copy = randomised_copy(trained)
    assert [w.path for w in copy.weights] == [w.path for w in trained.weights]
    for initial, moved, fresh in zip(
        cbam_model.weights, trained.weights, copy.weights, strict=True
    ):
        np.testing.assert_array_equal(fresh.numpy(), initial.numpy())
        if moved.trainable:
            assert not np.allclose(fresh.numpy(), moved.numpy())


def test_final_focus_on_a_real_model(cbam_model, tmp_path):
    images, labels, boxes = _fixtures()
    result = final_focus(_trained_like(cbam_model), images, labels, boxes)
    assert set(result) == {
        "focus_images",
        "accuracy",
        "pointing_chance",
        "erase_random_drop",
        *(
            f"{m}_{name}"
            for m in ("pointing", "auroc", "sanity", "erase_top_drop")
            for name in ("gradcam", "attention")
        ),
    }
    assert result["focus_images"] == 12
    assert all(math.isfinite(value) for value in result.values()), result
    for name in ("gradcam", "attention"):
        assert -1.0 <= result[f"sanity_{name}"] <= 1.0
        assert 0.0 <= result[f"auroc_{name}"] <= 1.0
        # The moved weights change the maps: the check is not comparing a model with itself.
        assert result[f"sanity_{name}"] < 0.999
    path = tmp_path / "final_focus.json"
    write_final_focus(path, result)
    assert read_final_focus(path) == pytest.approx(result)
    assert read_final_focus(tmp_path / "missing.json") is None


def test_final_focus_traces_one_pass_per_model_and_no_predict(cbam_model):
    """The trained model's maps, logits and erased-image accuracies share one compiled pass;
    `predict` would trace a second function per run."""
    model = _trained_like(cbam_model, seed=3)
    images, labels, boxes = _fixtures(n=70, seed=2)
    result = final_focus(model, images, labels, boxes)
    assert model.predict_function is None
    assert _MAP_PASSES[model]["pool"][0].experimental_get_tracing_count() == 1
    logits = model.predict(images, verbose=0)
    assert result["accuracy"] == pytest.approx(np.mean(np.argmax(logits, -1) == labels))


def test_an_untrained_model_is_its_own_randomised_copy(cbam_model):
    images, labels, boxes = _fixtures(n=6, seed=1)
    result = final_focus(cbam_model, images, labels, boxes)
    assert result["sanity_attention"] == pytest.approx(1.0)
    assert result["sanity_gradcam"] == pytest.approx(1.0)


def test_no_attention_keys_without_a_spatial_map():
    model = build_image_model(3, SIZE, attention="none", seed=0, **TINY)
    images, labels, boxes = _fixtures(n=6)
    result = final_focus(model, images, labels, boxes)
    assert not [key for key in result if key.endswith("_attention")]
    assert {"pointing_gradcam", "auroc_gradcam", "sanity_gradcam", "erase_random_drop"} <= set(
        result
    )
