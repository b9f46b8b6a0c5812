import json

import numpy as np
import pytest

from posemachines.backends.mean.stage import MeanPoseStage
from posemachines.core.runner import run_stages
from posemachines.core.skeletons import LSP14
from posemachines.errors import PoseMachinesError
from posemachines.files.model_dir import save_model, update_manifest
from posemachines.files.owned import atomic_write_json
from posemachines.files.prediction_files import read_predictions
from posemachines.loading import load_model


class AddOne:
    """A stage that proves what the runner passes along."""

    kind = "test"

    def __init__(self):
        self.seen = []

    def beliefs(self, crops, previous, cache):
        self.seen.append(previous)
        cache["calls"] = cache.get("calls", 0) + 1
        base = np.zeros((len(crops), 2, 3, 3), np.float32) if previous is None else previous
        return base + 1


def test_runner_chains_stages_and_keeps_every_stage():
    stages = [AddOne(), AddOne(), AddOne()]
    out = run_stages(stages, np.zeros((2, 8, 8, 3), np.uint8))
    assert [o[0, 0, 0, 0] for o in out] == [1, 2, 3]
    assert stages[0].seen == [None]
    assert stages[2].seen[0] is out[1]


def test_mean_stage_is_the_average_target():
    targets = np.stack([np.zeros((15, 4, 4)), np.ones((15, 4, 4))]).astype(np.float32)
    stage = MeanPoseStage().fit(targets)
    out = stage.beliefs(np.zeros((3, 8, 8, 3)), None, {})
    assert out.shape == (3, 15, 4, 4) and np.allclose(out, 0.5)


def test_model_round_trip_predicts_the_same(synthetic_train, synthetic_test, tmp_path):
    """Trained in memory, saved, loaded: the same predictions, codec and training record."""
    from posemachines.api import train

    model = train("mean", synthetic_train, input_size=64, stride=4, sigma=4.0)
    loaded = load_model(save_model(model, tmp_path / "m"))
    a = model.predict(synthetic_test).keypoints
    np.testing.assert_array_equal(a, loaded.predict(synthetic_test).keypoints)
    assert a.shape == (1, len(synthetic_test), 14, 2)
    assert loaded.codec == model.codec and loaded.record == model.record


def test_models_saved_in_format_1_still_load(mean_model_dir, tmp_path):
    """A manifest written before format 2: codec fields at the top level, settings under the
    backend's name, the training record as a flat dict."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(mean_model_dir, old)
    manifest = json.loads((old / "manifest.json").read_text())
    codec = manifest.pop("codec")
    record = manifest.pop("training")
    manifest.update(codec, format_version=1, mean={"sigma": codec["sigma"]})
    manifest["training"] = {"dataset_name": record["dataset_name"], "seconds": 2.0, "x": 1}
    (old / "manifest.json").write_text(json.dumps(manifest))
    model = load_model(old)
    assert model.codec == load_model(mean_model_dir).codec
    assert model.record.dataset_name == "synthetic" and model.record.details == {"x": 1}


def test_forest_model_round_trip(forest_model_dir, synthetic_test, tmp_path):
    model = load_model(forest_model_dir)
    copy = save_model(model, tmp_path / "copy")
    a = model.predict(synthetic_test).keypoints
    b = load_model(copy).predict(synthetic_test).keypoints
    np.testing.assert_array_equal(a, b)


def test_tampered_weights_are_refused(mean_model_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(mean_model_dir, bad)
    data = bytearray((bad / "stage1.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (bad / "stage1.safetensors").write_bytes(bytes(data))
    with pytest.raises(PoseMachinesError, match="checksum does not match"):
        load_model(bad)


def test_wrong_kind_of_directory_is_refused(tmp_path):
    with pytest.raises(PoseMachinesError, match="no manifest.json"):
        load_model(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(PoseMachinesError, match="not a posemachines model"):
        load_model(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(PoseMachinesError, match="not valid JSON"):
        load_model(tmp_path)


class Gadget:
    pass


def test_skops_file_with_unexpected_types_is_refused(tmp_path):
    import skops.io
    from sklearn.linear_model import LogisticRegression

    from posemachines.backends.forest.files import read_forest

    skops.io.dump({"x": Gadget()}, tmp_path / "x.skops")
    with pytest.raises(PoseMachinesError, match="refuses to load unexpected types"):
        read_forest("x.skops", (tmp_path / "x.skops").read_bytes())
    skops.io.dump(LogisticRegression(), tmp_path / "y.skops")
    with pytest.raises(PoseMachinesError, match="not a forest"):
        read_forest("y.skops", (tmp_path / "y.skops").read_bytes())


def test_save_is_atomic_when_writing_fails(mean_model_dir, tmp_path, monkeypatch):
    import posemachines.files.model_dir as pio

    model = load_model(mean_model_dir)
    target = save_model(model, tmp_path / "m")
    before = (target / "manifest.json").read_text()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pio, "_save_arrays", boom)
    with pytest.raises(OSError):
        save_model(model, target)
    assert (target / "manifest.json").read_text() == before  # old model intact
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary left behind


def test_update_manifest(mean_model_dir, tmp_path):
    import shutil

    m = tmp_path / "m"
    shutil.copytree(mean_model_dir, m)
    update_manifest(m, evaluations={"x": {"pck": 0.5}})
    assert json.loads((m / "manifest.json").read_text())["evaluations"]["x"]["pck"] == 0.5
    load_model(m)  # still loads


def test_read_predictions_mat_any_name_one_based(tmp_path):
    import scipy.io

    preds = np.random.default_rng(0).uniform(1, 50, (14, 2, 3))
    scipy.io.savemat(tmp_path / "p.mat", {"pred_whatever": preds})
    got = read_predictions(tmp_path / "p.mat", LSP14, 3)
    assert got.shape == (1, 3, 14, 2)
    np.testing.assert_allclose(got[0, 1], preds[:, :, 1] - 1)
    with pytest.raises(PoseMachinesError, match=r"expected \(14, 2, 4\)"):
        read_predictions(tmp_path / "p.mat", LSP14, 4)
    scipy.io.savemat(tmp_path / "two.mat", {"a": preds, "b": preds})
    with pytest.raises(PoseMachinesError, match="exactly one numeric array"):
        read_predictions(tmp_path / "two.mat", LSP14, 3)


def test_read_predictions_json(tmp_path):
    kp = np.zeros((2, 14, 2)).tolist()
    kp[1][3] = [None, None]
    atomic_write_json(tmp_path / "p.json", {"keypoints": kp})
    got = read_predictions(tmp_path / "p.json", LSP14, 2)
    assert np.isnan(got[0, 1, 3]).all() and got.shape == (1, 2, 14, 2)
    atomic_write_json(tmp_path / "q.json", {"skeleton": "coco17", "keypoints": kp})
    with pytest.raises(PoseMachinesError, match="skeleton coco17"):
        read_predictions(tmp_path / "q.json", LSP14, 2)


def test_save_keeps_what_it_did_not_write(mean_model_dir, tmp_path):
    """Saving into a folder replaces the model's own files and nothing else (a training log,
    a checkpoint and the user's files stay); files the new model no longer uses go."""
    model = load_model(mean_model_dir)
    out = tmp_path / "m"
    (out / "checkpoint").mkdir(parents=True)
    (out / "train_log.jsonl").write_text("{}\n")
    (out / "thesis.txt").write_text("mine")
    save_model(model, out)
    stale = out / "stage9.safetensors"
    stale.write_bytes(b"x")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["sha256"]["stage9.safetensors"] = "0" * 64
    manifest["sha256"]["../outside.txt"] = "0" * 64  # never followed out of the folder
    (out / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "outside.txt").write_text("keep")
    save_model(model, out)
    assert (out / "train_log.jsonl").is_file() and (out / "checkpoint").is_dir()
    assert (out / "thesis.txt").read_text() == "mine"
    assert not stale.exists() and (tmp_path / "outside.txt").is_file()
    assert oct((out / "manifest.json").stat().st_mode & 0o777) != oct(0o600)
    load_model(out)
