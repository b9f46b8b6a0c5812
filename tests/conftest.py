import os
from pathlib import Path

import numpy as np
import pytest

from posemachines.data import DATA_ROOT_ENV


def real_data_root() -> Path | None:
    root = os.environ.get(DATA_ROOT_ENV)
    return Path(root) if root and (Path(root) / "lsp" / "joints.mat").is_file() else None


needs_lsp = pytest.mark.skipif(
    real_data_root() is None, reason=f"LSP not found under ${DATA_ROOT_ENV}"
)


def has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="cpu or cuda: where CNN tests run")


@pytest.fixture(scope="session")
def device(request):
    dev = request.config.getoption("--device")
    if dev == "cuda" and not has_cuda():
        pytest.skip("--device cuda given but no GPU is available")
    return dev


@pytest.fixture(scope="session")
def synthetic_train():
    from posemachines.data import load_dataset

    return load_dataset("synthetic", "train", size=60, seed=0)


@pytest.fixture(scope="session")
def synthetic_test():
    from posemachines.data import load_dataset

    return load_dataset("synthetic", "test", size=20, seed=0)


@pytest.fixture(scope="session")
def mean_model_dir(tmp_path_factory, synthetic_train):
    from posemachines.api import train
    from posemachines.files.model_dir import save_model

    out = tmp_path_factory.mktemp("models") / "mean"
    model = train("mean", synthetic_train, input_size=64, stride=4, sigma=4.0)
    save_model(model, out)
    return out


@pytest.fixture(scope="session")
def tiny_forest_settings():
    from posemachines.backends.forest.settings import ForestSettings

    return ForestSettings(
        stages=2,
        trees=10,
        depth=15,
        input_size=96,
        stride=4,
        sigma=4.0,
        hog_cells=(6, 12),
        colour_cell=8,
        background=80,
    )


@pytest.fixture(scope="session")
def forest_train():
    from posemachines.data import load_dataset

    return load_dataset("synthetic", "train", size=120, seed=0)


@pytest.fixture(scope="session")
def forest_model_dir(tmp_path_factory, forest_train, tiny_forest_settings):
    from posemachines.files.model_dir import save_model

    out = tmp_path_factory.mktemp("models") / "forest"
    model = fit_forest(forest_train, tiny_forest_settings, out, seed=0, n_jobs=1)
    save_model(model, out)
    return out


def random_joints(n=5, p=14, seed=0):
    return np.random.default_rng(seed).uniform(10, 90, size=(n, p, 2))


def run_in_fresh_python(*statements: str) -> None:
    """Run statements in a new interpreter (what a user's import really loads); fail if any
    assertion in them fails."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", ";".join(statements)], check=True)


def fit_forest(dataset, settings, out, seed=0, n_jobs=-1, resume=False, init_model=None):
    """A forest trained by its estimator, as ``pm train`` does (settings given whole)."""
    from dataclasses import replace

    from posemachines.backends.forest.trainer import ForestTrainer
    from posemachines.registry import TrainingRun

    if init_model is not None:
        settings = replace(settings, init=str(init_model))
    run = TrainingRun(Path(out), seed, n_jobs, resume=resume)
    return ForestTrainer(settings, run).fit(dataset).model_


def run_pm(*args, expect_fail: bool = False):
    """``pm ARGS`` in this process; a failure must be one line of error and exit status 1."""
    from click.testing import CliRunner
    from posemachines.cli.main import cli

    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if expect_fail:
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("Error:") and "Traceback" not in result.output
    else:
        assert result.exit_code == 0, result.output
    return result
