"""Forests at scale: compact tree-array files, old skops directories, a dask cluster, and no
worker outliving a killed run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from posemachines.backends.forest.tree_arrays import forest_from_arrays, forest_to_arrays
from posemachines.core.crops import person_crop
from posemachines.errors import PoseMachinesError
from posemachines.loading import load_model


@pytest.mark.parametrize("kind", ["ExtraTreesClassifier", "RandomForestClassifier"])
def test_tree_arrays_give_the_same_leaves_and_probabilities(kind):
    from sklearn import ensemble

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 7)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + 2 * (x[:, 3] > 0.5) + (x[:, 5] > 1)  # classes 0..3
    forest = getattr(ensemble, kind)(n_estimators=7, random_state=0).fit(x, y)
    arrays, metadata = forest_to_arrays(forest)
    rebuilt = forest_from_arrays(arrays, metadata)
    test = rng.normal(size=(2000, 7)).astype(np.float32)
    np.testing.assert_array_equal(rebuilt.apply(test), forest.apply(test))
    np.testing.assert_allclose(rebuilt.predict_proba(test), forest.predict_proba(test), atol=1e-6)
    # Thresholds rounded down to float32 still send an input equal to one the same way.
    split = arrays["feature"] >= 0
    at = np.zeros((split.sum(), 7), np.float32)
    at[np.arange(split.sum()), arrays["feature"][split]] = arrays["threshold"]
    np.testing.assert_array_equal(rebuilt.apply(at), forest.apply(at))


def test_malformed_tree_arrays_are_refused():
    from sklearn.ensemble import ExtraTreesClassifier

    x = np.random.default_rng(1).normal(size=(50, 3)).astype(np.float32)
    forest = ExtraTreesClassifier(n_estimators=2, random_state=0).fit(x, x[:, 0] > 0)
    arrays, metadata = forest_to_arrays(forest)
    for name, value in [
        ("right", 0),  # a child before its parent: traversal would loop
        ("feature", 99),  # past the last feature: it would read outside the input
        ("leaf_class", 7),  # past the last class
    ]:
        broken = {k: v.copy() for k, v in arrays.items()}
        broken[name][0] = value
        with pytest.raises(PoseMachinesError, match="out of range"):
            forest_from_arrays(broken, metadata)
    with pytest.raises(PoseMachinesError, match="malformed tree arrays"):
        forest_from_arrays({k: v for k, v in arrays.items() if k != "leaf_value"}, metadata)


def test_forest_files_are_compact_and_format_2_skops_directories_still_load(
    forest_model_dir, synthetic_test, tmp_path
):
    import shutil

    import skops.io

    from posemachines.files.owned import sha256

    files = sorted(p.name for p in forest_model_dir.iterdir())
    assert "stage1.forest.safetensors" in files and not any(f.endswith(".skops") for f in files)
    model = load_model(forest_model_dir)
    # The same model as format 2 wrote it: each forest through skops.
    old = tmp_path / "format2"
    shutil.copytree(forest_model_dir, old)
    manifest = json.loads((old / "manifest.json").read_text())
    skops_bytes = compact_bytes = 0
    for stage, entry in zip(model.stages, manifest["stages"]):
        for key, field in (("forest_", "file"), ("part_forest_", "part_file")):
            if field not in entry:
                continue
            compact = old / entry[field]
            name = entry[field].replace(".forest.safetensors", ".skops")
            skops.io.dump(getattr(stage, key), old / name)
            skops_bytes += (old / name).stat().st_size
            compact_bytes += compact.stat().st_size
            compact.unlink()
            del manifest["sha256"][entry[field]]
            entry[field] = name
            manifest["sha256"][name] = sha256(old / name)
    manifest["format_version"] = 2
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert compact_bytes * 8 < skops_bytes  # an order of magnitude, less the small trees' share
    crops = np.stack(
        [person_crop(synthetic_test[i], model.input_size, model.skeleton).image for i in range(20)]
    )
    before, after = load_model(old).stage_beliefs(crops), model.stage_beliefs(crops)
    for b, a in zip(before, after):
        np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_array_equal(
        model.predict(synthetic_test).keypoints, load_model(old).predict(synthetic_test).keypoints
    )


# -- dask ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_forest_trained_on_a_dask_cluster_equals_the_local_one(
    forest_train, tiny_forest_settings, forest_model_dir, tmp_path
):
    pytest.importorskip("distributed")
    from conftest import fit_forest
    from distributed import LocalCluster

    from posemachines.parallel import dask_backend

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
    )
    try:
        with dask_backend(cluster.scheduler_address) as client:
            assert len(client.scheduler_info()["workers"]) == 2
            model = fit_forest(forest_train, tiny_forest_settings, tmp_path, seed=0, n_jobs=-1)
            executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
    finally:
        cluster.close()
    assert all(n > 0 for n in executed.values()), executed  # both workers did the work
    local = load_model(forest_model_dir)
    for ours, theirs in zip(model.stages, local.stages):
        for key in ("forest_", "part_forest_"):
            if getattr(ours, key) is None:
                continue
            a, _ = forest_to_arrays(getattr(ours, key))
            b, _ = forest_to_arrays(getattr(theirs, key))
            assert a.keys() == b.keys()
            for name in a:
                np.testing.assert_array_equal(a[name], b[name], err_msg=f"{key} {name}")


def test_an_unreachable_scheduler_is_one_line(tmp_path):
    pytest.importorskip("distributed")
    from posemachines.parallel import dask_backend

    started = time.perf_counter()
    with pytest.raises(PoseMachinesError, match="cannot reach the dask scheduler at tcp://"):
        with dask_backend("tcp://127.0.0.1:9", timeout=2):
            pass
    assert time.perf_counter() - started < 30


# -- a killed run -------------------------------------------------------------------------------


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def _command(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_kill_9_of_pm_train_leaves_no_workers(tmp_path):
    """Loky workers used to compute on for minutes after their parent was killed."""
    pm = Path(sys.executable).parent / "pm"
    if not pm.exists():
        pytest.skip("the pm command is not installed next to this Python")
    args = ["train", "--backend", "forest", "--dataset", "synthetic", "--synthetic-size", "400"]
    args += ["--trees", "4", "--jobs", "2", "--out", str(tmp_path / "run")]
    proc = subprocess.Popen([pm, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        workers: set[int] = set()
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not workers:
            children = [p for p in _children(proc.pid) if _alive(p)]
            workers = {p for p in children if b"LokyProcess" in _command(p)}
            time.sleep(0.2)
        assert proc.poll() is None and len(workers) == 2, "no workers seen"
        time.sleep(1.0)
        workers |= _children(proc.pid)  # the resource trackers too
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.2)
        left = [p for p in workers if _alive(p)]
    finally:
        if proc.poll() is None:
            proc.kill()
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, f"{len(left)} worker(s) outlived the killed run"


def test_joined_forests_average_all_their_trees_and_refuse_mismatches():
    from sklearn.ensemble import ExtraTreesClassifier

    from posemachines.backends.forest.tree_arrays import compact_forest, joined_forests

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + (x[:, 2] > 0.5)
    parts = [ExtraTreesClassifier(n, random_state=n).fit(x, y) for n in (3, 5)]
    joined = joined_forests([compact_forest(f) for f in parts])
    assert len(joined.estimators_) == joined.n_estimators == 8
    assert [len(f.estimators_) for f in parts] == [3, 5]  # the parts are left as they were
    test = rng.normal(size=(300, 5)).astype(np.float32)
    weighted = sum(len(f.estimators_) * f.predict_proba(test) for f in parts) / 8
    np.testing.assert_allclose(joined.predict_proba(test), weighted, atol=1e-6)
    arrays, metadata = forest_to_arrays(joined)  # it saves as one forest
    assert len(arrays["tree_start"]) == 9 and json.loads(metadata["params"])["n_estimators"] == 8
    other = ExtraTreesClassifier(2, random_state=0).fit(x, np.minimum(y, 1))
    with pytest.raises(PoseMachinesError, match="different classes"):
        joined_forests([parts[0], other])


@pytest.mark.slow
def test_fold_forests_become_the_stage_forest(forest_train, synthetic_test, tmp_path):
    from conftest import fit_forest

    from posemachines.backends.forest.settings import ForestSettings
    from posemachines.files.model_dir import save_model

    settings = ForestSettings(
        stages=2, trees=3, folds=3, depth=10, input_size=64, hog_cells=(4, 8), colour_cell=6,
        background=40, fold_forests=True,
    )  # fmt: skip
    data = forest_train.subset(range(30))
    model = fit_forest(data, settings, tmp_path / "run", seed=0, n_jobs=1)
    for stage in model.stages:
        assert len(stage.forest_.estimators_) == 3 * 3
    # Every stage's held-out beliefs cover every fold, the last one's too.
    assert len(model.record.details["out_of_fold_pck@0.2"]) == 2
    save_model(model, tmp_path / "model")
    expected = model.predict(synthetic_test).keypoints
    np.testing.assert_array_equal(
        load_model(tmp_path / "model").predict(synthetic_test).keypoints, expected
    )
    again = fit_forest(data, settings, tmp_path / "again", seed=0, n_jobs=2)
    np.testing.assert_array_equal(again.predict(synthetic_test).keypoints, expected)


@pytest.mark.slow
def test_pm_train_takes_the_fast_recipe_options(tmp_path):
    from click.testing import CliRunner
    from posemachines.cli.main import cli

    out = tmp_path / "run"
    args = ["train", "--backend", "forest", "--dataset", "synthetic", "--synthetic-size", "24"]
    args += ["--stages", "2", "--trees", "2", "--folds", "3", "--depth", "8", "--jobs", "1"]
    args += ["--fold-forests", "--hard-negatives", "0.5", "--segment-colours"]
    res = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    model = load_model(out)
    settings = model.record.settings
    assert settings["fold_forests"] and settings["segment_colours"]
    assert settings["hard_negatives"] == 0.5
    assert [len(s.forest_.estimators_) for s in model.stages] == [6, 6]
    assert model.stages[1].config()["segment_colours"]
    res = CliRunner().invoke(cli, [*args[:-4], "--hard-negatives", "2", "--out", str(out) + "2"])
    assert res.exit_code != 0 and "--hard-negatives must be a share" in res.output
