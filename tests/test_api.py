"""The public Python interface, and the README's example of it, as written."""

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import run_in_fresh_python

import posemachines as pm

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    text = README.read_text()
    block = re.search(r"<!-- python -->\s*```python\n(.*?)```\s*<!-- /python -->", text, re.S)
    assert block, "the README's Python example is missing"
    root = README.parent
    (tmp_path / "examples").symlink_to(root / "examples")
    monkeypatch.chdir(tmp_path)
    exec(compile(block.group(1), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "PCK@0.2 by stage:" in out and "synthetic:train (120 samples" in out
    assert (tmp_path / "runs" / "python-forest" / "manifest.json").is_file()


def test_public_names_and_lazy_import():
    run_in_fresh_python(
        "import sys, posemachines as pm",
        "assert 'torch' not in sys.modules",
        "assert callable(pm.train) and callable(pm.load_model) and callable(pm.compare)",
        "import posemachines.evaluation.comparison",
        "assert callable(pm.compare)",
    )
    with pytest.raises(AttributeError):
        pm.not_a_name  # noqa: B018


def test_train_mean_predict_images_and_save_round_trip(tmp_path, synthetic_train):
    model = pm.train("mean", synthetic_train, input_size=64, stride=4, sigma=4.0)
    assert model.record.dataset_name == "synthetic" and model.record.seconds is not None
    images = [np.full((50, 40, 3), 90, np.uint8), np.zeros((30, 60, 3), np.uint8)]
    before = model.predict(images)
    assert before.keypoints.shape == (1, 2, 14, 2) and before.names == ["image0", "image1"]
    model.save(tmp_path / "m")
    loaded = pm.load_model(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict(images).keypoints, before.keypoints)
    assert loaded.record == model.record
    with pytest.raises(pm.PoseMachinesError, match="unknown backend"):
        pm.train("svm", synthetic_train)
    with pytest.raises(pm.PoseMachinesError, match="expected an \\(H, W, 3\\) uint8 array"):
        model.predict([np.zeros((4, 4))])
