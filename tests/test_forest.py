import numpy as np
import pytest
from conftest import fit_forest

from posemachines.backends.forest.features.context import belief_peaks, context_features
from posemachines.backends.forest.features.image import dense_image_features
from posemachines.backends.forest.levels import sample_locations
from posemachines.backends.forest.settings import ForestSettings
from posemachines.core.targets import BeliefCodec
from posemachines.errors import PoseMachinesError
from posemachines.loading import load_model


def test_dense_image_features_shape_and_position():
    crop = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    f = dense_image_features(crop, 4, hog_cells=(4, 8), colour_cell=6)
    assert f.shape[:2] == (16, 16) and f.dtype == np.float32
    assert np.isfinite(f).all()
    # the last two features are the location's x and y in the crop
    assert f[0, 0, -2:].tolist() == [pytest.approx(1 / 63), pytest.approx(1 / 63)]
    assert f[3, 5, -2] > f[3, 4, -2] and f[4, 5, -1] > f[3, 5, -1]


def test_colour_self_similarity_follows_a_limb_and_sees_its_end():
    from posemachines.backends.forest.features.image import colour_self_similarity, lab_image

    crop = np.full((64, 64, 3), 200, np.uint8)
    crop[29:35, 8:42] = (200, 30, 30)  # a red horizontal limb, 6 px thick, ending at x = 41
    lab = lab_image(crop)
    d = colour_self_similarity(lab, 6, 3, np.array([32]), np.array([20, 38]))[0]
    assert d.shape == (2, 8)
    # windows in order (up-left, up, up-right, left, right, down-left, down, down-right)
    middle, end = d
    assert middle[3] < 0.01 and middle[4] < 0.01  # the limb goes on left and right
    assert middle[1] > 0.3 and middle[6] > 0.3  # background above and below
    assert end[3] < 0.01 and end[4] > 0.3  # at its end it goes on to the left only


def test_appearance_context_compares_colours_with_the_joint_peak():
    from posemachines.backends.forest.features.context import appearance_context

    colour = np.zeros((10, 10, 3), np.float32)
    colour[5, 1:6] = (1.0, 0.2, 0.0)  # one colour from the peak at (x=1, y=5) to z = (5, 5)
    colour[2, 8] = (0.0, 0.0, 1.0)
    beliefs = np.zeros((2, 10, 10), np.float32)  # one joint + background
    beliefs[0, 5, 1] = 1.0
    psi = appearance_context(beliefs, colour, samples=3)
    assert psi.shape == (10, 10, 3)
    assert psi[5, 5].tolist() == [0.0, 0.0, 0.0]  # same colour as the peak, all the way
    assert psi[2, 8, 0] > 0.9  # a different colour from the peak's
    assert psi[5, 9, 0] > 0.9 and psi[5, 9, 2] < psi[5, 9, 1]  # the limb runs out before z


def test_models_saved_before_the_colour_features_keep_their_features():
    from posemachines.backends.forest.stage import stage_image_features, stage_inputs

    crop = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    beliefs = np.random.default_rng(1).random((15, 16, 16)).astype(np.float32)
    old = {"stride": 4, "hog_cells": [4, 8], "colour_cell": 6, "context_cells": [1, 3]}
    old |= {"top_k": 2}
    image = stage_image_features(crop, old)
    plain = dense_image_features(crop, 4, hog_cells=(4, 8), colour_cell=6)
    np.testing.assert_array_equal(image[0], plain)
    assert stage_inputs(image, beliefs, old).shape[-1] == plain.shape[-1] + 14 * (2 * 9 + 2 * 4)
    new = old | {"similarity": [[3, 5]], "appearance_context": True}
    image = stage_image_features(crop, new)
    assert image[0].shape[-1] == plain.shape[-1] + 24
    assert stage_inputs(image, beliefs, new).shape[-1] == image[0].shape[-1] + 14 * 29


def test_context_features_find_planted_peaks():
    beliefs = np.zeros((3, 10, 10), np.float32)  # 2 joints + background
    beliefs[0, 2, 7] = 0.9
    beliefs[0, 8, 1] = 0.5
    beliefs[1, 5, 5] = 0.7
    pos, score = belief_peaks(beliefs, top_k=2)
    assert pos[0, 0].tolist() == [7, 2] and score[0, 0] == pytest.approx(0.9)
    assert pos[0, 1].tolist() == [1, 8] and score[0, 1] == pytest.approx(0.5)
    assert score[1, 1] == 0  # only one peak
    psi = context_features(beliefs, cells=(1, 3), top_k=2)
    assert psi.shape == (10, 10, 2 * 2 * 9 + 2 * 2 * 4)
    # offset context at z = the first peak: distance 0 to it
    assert psi[2, 7, 2 * 2 * 9] == 0.0


def test_sample_locations_positives_and_background():
    codec = BeliefCodec(64, 4, 4.0)
    joints = np.array([[10.0, 10.0], [50.0, 40.0]])
    rows, cols, labels = sample_locations(
        joints, np.array([True, False]), codec, 1.5, 20, np.random.default_rng(0)
    )
    assert set(labels) == {0, 2}  # unlabelled joint 1 never a positive
    pos = labels == 0
    centres = codec.grid()
    d = np.hypot(centres[cols[pos]] - 10, centres[rows[pos]] - 10)
    assert (d <= 1.5 * 4).all() and pos.sum() >= 4
    assert (labels == 2).sum() == 20


def test_hard_negatives_are_the_strongest_beliefs_away_from_the_joints():
    codec = BeliefCodec(64, 4, 4.0)
    joints = np.array([[10.0, 10.0], [50.0, 40.0]])
    beliefs = np.zeros((16, 16), np.float32)
    beliefs[2, 2] = 1.0  # on joint 0 (cell centre 9.5, 9.5): a positive, not a negative
    beliefs[12, 3], beliefs[5, 14], beliefs[8, 8] = 0.9, 0.8, 0.7  # false alarms
    labelled = np.array([True, True])
    rows, cols, labels = sample_locations(
        joints, labelled, codec, 1.5, 20, np.random.default_rng(0), beliefs, 2
    )
    background = labels == 2
    assert background.sum() == 20 and (labels[~background] < 2).all()
    assert list(zip(rows[background][:2], cols[background][:2])) == [(12, 3), (5, 14)]
    assert len(set(zip(rows, cols))) == len(rows)  # none drawn twice


@pytest.mark.parametrize(
    "settings, message",
    [
        (ForestSettings(stages=0), "--stages must be at least 1"),
        (ForestSettings(input_size=32, stride=4), "larger than the 32-px input"),
        (ForestSettings(trees=0), "--trees"),
        (ForestSettings(hard_negatives=1.5), "--hard-negatives must be a share"),
        (ForestSettings(similarity=((4, 4),)), "must be odd"),
        (ForestSettings(input_size=64, similarity=((12, 7),)), "84 px .* larger than the 64-px"),
    ],
)
def test_bad_settings_fail_before_work(settings, message):
    with pytest.raises(PoseMachinesError, match=message):
        settings.validate(100)


def test_more_folds_than_images(synthetic_train, tmp_path):
    s = ForestSettings(folds=3, input_size=64, hog_cells=(4, 8), colour_cell=6)
    with pytest.raises(PoseMachinesError, match="at least 3 training images"):
        fit_forest(synthetic_train.subset([0, 1]), s, tmp_path)


@pytest.mark.slow
def test_small_forest_learns_and_is_deterministic(
    forest_model_dir, mean_model_dir, synthetic_test, forest_train, tiny_forest_settings, tmp_path
):
    from posemachines.evaluation.comparison import Entry, score_entry

    forest = load_model(forest_model_dir)
    result, preds = score_entry(Entry("f", forest_model_dir, forest), synthetic_test)
    mean, _ = score_entry(Entry("m", mean_model_dir, load_model(mean_model_dir)), synthetic_test)
    assert len(result.per_stage) == 2
    assert result.metrics["pck@0.2"] > mean.metrics["pck@0.2"] + 0.05
    again = fit_forest(forest_train, tiny_forest_settings, tmp_path, seed=0, n_jobs=2)
    np.testing.assert_array_equal(again.predict(synthetic_test).keypoints, preds.keypoints)


@pytest.mark.slow
def test_interrupted_training_resumes_to_the_same_model(
    forest_train, synthetic_test, tiny_forest_settings, forest_model_dir, tmp_path, monkeypatch
):
    import posemachines.backends.forest.trainer as tf

    real = tf._save_checkpoint

    def save_then_die(out_dir, model, oof, state):
        real(out_dir, model, oof, state)
        raise KeyboardInterrupt  # killed right after stage 1 was checkpointed

    monkeypatch.setattr(tf, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        fit_forest(forest_train, tiny_forest_settings, tmp_path, seed=0, n_jobs=1)
    monkeypatch.setattr(tf, "_save_checkpoint", real)
    resumed = fit_forest(
        forest_train, tiny_forest_settings, tmp_path, seed=0, n_jobs=1, resume=True
    )
    expected = load_model(forest_model_dir).predict(synthetic_test).keypoints
    np.testing.assert_array_equal(resumed.predict(synthetic_test).keypoints, expected)
    with pytest.raises(
        PoseMachinesError, match="different configuration.*seed: checkpoint 0, now 1"
    ):
        fit_forest(forest_train, tiny_forest_settings, tmp_path, seed=1, resume=True)
    record = resumed.record
    assert len(record.details["train_seconds_stages"]) == 2  # the stage before the kill too
    assert record.seconds >= sum(record.details["train_seconds_stages"])


def test_hybrid_on_top_of_another_model(
    mean_model_dir, synthetic_train, synthetic_test, tiny_forest_settings, tmp_path
):
    from dataclasses import replace

    settings = replace(tiny_forest_settings, stages=1)
    model = fit_forest(synthetic_train, settings, tmp_path, init_model=mean_model_dir, n_jobs=1)
    assert model.backend == "hybrid" and [s.kind for s in model.stages] == ["mean", "forest"]
    assert model.predict(synthetic_test).keypoints.shape[0] == 2


def test_part_positions_are_means_of_labelled_joints():
    from posemachines.core.skeletons import part_positions

    joints = np.array([[[0.0, 0.0], [4.0, 2.0], [8.0, 8.0]]])
    labelled = np.array([[True, True, False]])
    pos, known = part_positions(joints, labelled, [(0, 1), (1, 2), (0, 1, 2)])
    np.testing.assert_allclose(pos[0, 0], [2.0, 1.0])
    np.testing.assert_allclose(pos[0, 2], [2.0, 1.0])  # the unlabelled joint is left out
    assert known.tolist() == [[True, False, True]]  # a limb needs both ends; the body > half


@pytest.mark.slow
def test_part_hierarchy_trains_saves_and_locates_parts(
    forest_train, synthetic_test, tiny_forest_settings, tmp_path
):
    from dataclasses import replace

    from posemachines.core.skeletons import part_positions
    from posemachines.files.model_dir import save_model

    settings = replace(tiny_forest_settings, hierarchy=True)
    model = fit_forest(forest_train, settings, tmp_path / "run", seed=0, n_jobs=2)
    parts = forest_train.skeleton.composite_parts()
    for stage in model.stages:
        assert stage.part_forest_ is not None
        assert stage.part_forest_.n_classes_ == len(parts) + 1
    save_model(model, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    assert (tmp_path / "model" / "stage1.parts.forest.safetensors").is_file()
    expected = model.predict(synthetic_test).keypoints
    np.testing.assert_array_equal(loaded.predict(synthetic_test).keypoints, expected)

    # The part level finds the whole body: its belief peak lies near the joints' centre.
    from posemachines.backends.forest.stage import stage_image_features
    from posemachines.training import crop_dataset

    crops, joints, labelled, _ = crop_dataset(synthetic_test, settings.input_size)
    centres, _ = part_positions(joints, labelled, parts)
    stage = loaded.stages[0]
    errors = []
    for crop, centre in zip(crops, centres[:, -1]):
        body = stage.part_beliefs(stage_image_features(crop, stage.config())[0])[len(parts) - 1]
        row, col = np.unravel_index(body.argmax(), body.shape)
        errors.append(np.hypot(*(loaded.codec.grid()[[col, row]] - centre)))
    assert np.median(errors) < 0.1 * settings.input_size, errors


def test_out_of_fold_pck_scores_held_out_beliefs():
    from posemachines.backends.forest.levels import out_of_fold_pck
    from posemachines.core.skeletons import LSP14

    codec = BeliefCodec(64, 4, 3.0)
    joints = np.random.default_rng(0).uniform(16, 48, size=(6, 14, 2))
    labelled = np.ones((6, 14), dtype=bool)
    maps, _ = codec.encode(joints, labelled)
    assert out_of_fold_pck(maps, joints, labelled, codec, LSP14) == 1.0
    assert out_of_fold_pck(maps, joints, labelled, codec, LSP14, extra_smooth=1.0) == 1.0
    far = joints + np.array([40.0, 0.0])  # beliefs of other places score nothing
    assert out_of_fold_pck(maps, far, labelled, codec, LSP14) == 0.0


def test_final_smoothing_is_chosen_on_out_of_fold_beliefs(forest_model_dir):
    from posemachines.backends.forest.levels import FINAL_SMOOTH_CHOICES

    model = load_model(forest_model_dir)
    base = model.record.settings["smooth"]
    first, last = model.stages[0].config()["smooth"], model.stages[-1].config()["smooth"]
    assert first == base
    extra = np.sqrt(last**2 - base**2)
    assert min(abs(extra - c) for c in FINAL_SMOOTH_CHOICES) < 1e-6
    oof = model.record.details["out_of_fold_pck@0.2"]
    assert len(oof) == model.num_stages and all(0 < v <= 1 for v in oof)


def test_two_thread_prediction_equals_scikit_learn(forest_model_dir):
    from posemachines.backends.forest.stage import _predict_proba

    forest = load_model(forest_model_dir).stages[0].forest_
    x = np.random.default_rng(0).normal(size=(300, forest.n_features_in_)).astype(np.float32)
    assert forest.n_jobs == 1
    proba = _predict_proba(forest, x)
    np.testing.assert_allclose(proba, forest.predict_proba(x), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(proba, _predict_proba(forest, x))  # the same every time


def test_given_final_smoothing_needs_no_held_out_beliefs(
    forest_train, tiny_forest_settings, tmp_path
):
    from dataclasses import replace

    # One stage with its smoothing given: nothing is held out (it once failed here).
    settings = replace(tiny_forest_settings, stages=1, final_smooth=0.5)
    model = fit_forest(forest_train.subset(range(8)), settings, tmp_path, seed=0, n_jobs=1)
    extra = np.sqrt(model.stages[0].config()["smooth"] ** 2 - settings.smooth**2)
    assert extra == pytest.approx(0.5)
    assert model.record.details["out_of_fold_pck@0.2"] == []


def test_segment_colours_read_the_colours_along_the_believed_segments():
    from posemachines.backends.forest.features.context import segment_colours
    from posemachines.core.skeletons import COCO17, LSP14

    colour = np.random.default_rng(0).random((10, 12, 3)).astype(np.float32)
    beliefs = np.zeros((4, 10, 12), np.float32)  # three joints + background
    beliefs[0, 2, 1] = beliefs[1, 6, 1] = beliefs[2, 2, 9] = 1.0  # at (x, y) (1, 2), (1, 6), (9, 2)
    f = segment_colours(beliefs, colour, [((0,), (1,)), ((0, 2), (1,))], samples=3)
    assert f.shape == (10, 12, 18)
    assert (f == f[0, 0]).all()  # the same at every location
    first, second = f[0, 0].reshape(2, 3, 3)
    np.testing.assert_array_equal(first, colour[[2, 4, 6], 1])  # down from (1, 2) to (1, 6)
    np.testing.assert_array_equal(second, colour[[2, 4, 6], [5, 3, 1]])  # from (5, 2) to (1, 6)
    assert LSP14.facing_segments() == [((12,), (13,)), ((8, 9), (2, 3))]
    assert COCO17.facing_segments() == [((5, 6), (11, 12))]  # no head segment


@pytest.mark.slow
def test_segment_colours_are_context_of_later_stages(forest_train, tiny_forest_settings, tmp_path):
    from dataclasses import replace

    from posemachines.backends.forest.stage import stage_image_features, stage_inputs
    from posemachines.files.model_dir import save_model

    settings = replace(tiny_forest_settings, segment_colours=True, hard_negatives=0.5)
    data = forest_train.subset(range(20))
    model = fit_forest(data, settings, tmp_path / "run", seed=0, n_jobs=1)
    plain = fit_forest(data, tiny_forest_settings, tmp_path / "plain", seed=0, n_jobs=1)
    first, second = (s.forest_.n_features_in_ for s in model.stages)
    assert second == plain.stages[1].forest_.n_features_in_ + 2 * 5 * 3
    assert first == plain.stages[0].forest_.n_features_in_
    config = model.stages[1].config()
    assert config["segment_colours"] == [[[12], [13]], [[8, 9], [2, 3]]]
    save_model(model, tmp_path / "model")
    assert load_model(tmp_path / "model").stages[1].config() == config
    crop = np.zeros((96, 96, 3), np.uint8)
    beliefs = np.random.default_rng(0).random((15, 24, 24)).astype(np.float32)
    assert stage_inputs(stage_image_features(crop, config), beliefs, config).shape[-1] == second
