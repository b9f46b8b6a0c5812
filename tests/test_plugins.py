"""A backend and a dataset registered from this file alone, then driven through the `pm` CLI:
what a newcomer writes to add a nearest-neighbour pose model or their own data."""

import json
from dataclasses import asdict, dataclass, field

import numpy as np
import pytest
from click.testing import CliRunner
from posemachines.cli.main import cli

from posemachines.core.model import PoseModel, TrainingRecord
from posemachines.core.stage import StageState
from posemachines.core.targets import BeliefCodec
from posemachines.data import register_dataset, unregister_dataset
from posemachines.options import option
from posemachines.registry import register_backend, unregister_backend
from posemachines.training import crop_dataset

# -- the toy backend: a handful of lines -------------------------------------------------------


@dataclass(frozen=True)
class NearestSettings:
    neighbours: int = field(
        default=3, metadata=option("Training crops averaged per prediction.", minimum=1)
    )
    input_size: int = 64
    stride: int = 4
    sigma: float = 4.0

    def codec(self) -> BeliefCodec:
        return BeliefCodec(self.input_size, self.stride, self.sigma)


def thumbnails(crops: np.ndarray) -> np.ndarray:
    """8 x 8 grey thumbnails, flattened: what the neighbours are found by."""
    n, s = crops.shape[:2]
    grey = crops.mean(-1).reshape(n, 8, s // 8, 8, s // 8).mean((2, 4))
    return (grey.reshape(n, -1) / 255.0).astype(np.float32)


class NearestStage:
    kind = "nearest"

    def __init__(self, config: dict, thumbs, joints, labelled):
        self.config_, self.thumbs, self.joints, self.labelled = config, thumbs, joints, labelled

    def beliefs(self, crops, previous, cache):
        distance = ((thumbnails(crops)[:, None] - self.thumbs[None]) ** 2).sum(-1)
        nearest = np.argsort(distance, axis=1)[:, : self.config_["neighbours"]]
        codec = BeliefCodec(self.config_["input_size"], self.config_["stride"], 4.0)
        maps = codec.encode(self.joints[nearest.ravel()], self.labelled[nearest.ravel()])[0]
        return maps.reshape(len(crops), nearest.shape[1], *maps.shape[1:]).mean(1)

    def config(self):
        return self.config_

    def state(self):
        arrays = {"thumbs": self.thumbs, "joints": self.joints, "labelled": self.labelled}
        return StageState(self.config_, arrays={k: np.asarray(v) for k, v in arrays.items()})

    @classmethod
    def from_state(cls, state):
        a = state.arrays
        return cls(state.config, a["thumbs"], a["joints"], a["labelled"].astype(bool))


class NearestTrainer:
    def __init__(self, settings, run):
        self.settings, self.run = settings, run

    def fit(self, dataset, below=None, fold_of=None, out_of_fold=False):
        s = self.settings
        crops, joints, labelled, _ = crop_dataset(
            dataset, s.input_size, n_jobs=1, on_bad_image=self.run.on_bad_image
        )
        config = {"neighbours": s.neighbours, "input_size": s.input_size, "stride": s.stride}
        stage = NearestStage(config, thumbnails(crops), joints.astype(np.float32), labelled)
        self.model_ = PoseModel("nearest", dataset.skeleton, s.codec(), [stage])
        self.model_.record = TrainingRecord.for_dataset(dataset, self.run.seed, asdict(s))
        return self


# -- the toy dataset: synthetic figures found in a folder of the data root ----------------------


def load_dots(folder, split, protocol, on_bad_annotation, **options):
    from posemachines.data.synthetic import SyntheticDataset

    size = int((folder / "size.txt").read_text())
    data = SyntheticDataset(split="train", size=size, seed=5, protocol=protocol or "image")
    data.name = "dots"
    return data


@pytest.fixture
def nearest():
    register_backend(
        "nearest",
        settings=NearestSettings,
        trainer=NearestTrainer,
        stages={"nearest": NearestStage},
        summary="nearest training crops",
    )
    yield
    unregister_backend("nearest")


@pytest.fixture
def dots(tmp_path):
    register_dataset(
        "dots",
        splits=("all",),
        load=load_dots,
        splits_present=lambda folder: ("all",) if (folder / "size.txt").is_file() else (),
        expects="size.txt",
    )
    root = tmp_path / "data"
    (root / "dots").mkdir(parents=True)
    yield root
    unregister_dataset("dots")


def pm(*args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.mark.slow
def test_a_backend_registered_from_a_test_file_trains_evaluates_compares_and_stacks(
    nearest, tmp_path
):
    data = ["--dataset", "synthetic", "--synthetic-size", "60"]
    help_text = pm("train", "--help").output
    assert "--neighbours" in help_text and "[nearest]" in help_text
    pm("train", "--backend", "nearest", *data, "--neighbours", "2", "--out", tmp_path / "nn")
    manifest = json.loads((tmp_path / "nn" / "manifest.json").read_text())
    assert manifest["stages"][0]["kind"] == "nearest"
    assert manifest["training"]["settings"]["neighbours"] == 2

    from posemachines import load_model
    from posemachines.data import load_dataset

    model = load_model(tmp_path / "nn")  # loaded through the registry's stage class
    test = load_dataset("synthetic", "test", size=10, seed=0)
    assert model.predict(test).keypoints.shape == (1, 10, 14, 2)

    scores = json.loads(
        pm(
            "evaluate",
            tmp_path / "nn",
            "--dataset",
            "synthetic",
            "--synthetic-size",
            "20",
            "--json",
        )
        .output.strip()
        .splitlines()[-1]
    )
    pck = scores["metrics"]["pck@0.2"]
    assert 0.05 < pck <= 1.0  # scored through the shared decoding and metrics

    # Stacked under a forest: the forest learns from its cross-fitted beliefs.
    stack = ["--stack", "nearest:1,forest:1", "--trees", "4", "--folds", "2"]
    pm("train", *stack, *data, "--out", tmp_path / "stack")
    stacked = load_model(tmp_path / "stack")
    assert [s.kind for s in stacked.stages] == ["nearest", "forest"]
    parts = stacked.record.details["parts"]
    assert 0.0 < parts[0]["out_of_fold_pck@0.2"] <= 1.0

    report = tmp_path / "report"
    pm("compare", tmp_path / "nn", tmp_path / "stack", *data[:2], "--out", report)
    assert (report / "report.html").is_file()

    refused = pm("train", "--backend", "nearest", "--trees", "4", *data, ok=False)
    assert refused.exit_code == 1
    assert "--trees does not apply to --backend nearest (it is for --backend forest)" in (
        refused.output
    )


def test_an_unregistered_stage_kind_is_one_line(nearest, tmp_path):
    pm("train", "--backend", "nearest", "--dataset", "synthetic", "--synthetic-size", "20",
       "--out", tmp_path / "nn")  # fmt: skip
    unregister_backend("nearest")
    result = pm("evaluate", tmp_path / "nn", "--dataset", "synthetic", ok=False)
    assert result.exit_code == 1
    assert "unknown stage kind 'nearest'" in result.output and "Traceback" not in result.output


def test_a_dataset_registered_from_a_test_file_is_listed_and_trained_on(dots, tmp_path):
    listing = pm("data", "--data-root", dots).output
    assert "dots" in listing and "not found (expected" in listing  # no size.txt yet
    (dots / "dots" / "size.txt").write_text("12")
    listing = pm("data", "--data-root", dots).output
    assert [line for line in listing.splitlines() if "dots" in line][0].endswith("all 12")
    pm("train", "--backend", "mean", "--dataset", "dots", "--split", "all", "--data-root", dots,
       "--out", tmp_path / "m")  # fmt: skip
    record = json.loads((tmp_path / "m" / "manifest.json").read_text())["training"]
    assert record["dataset_name"] == "dots" and "12" in record["dataset"]
