"""Stacks of forest and CNN stages with cross-fitting (backends.stack)."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from posemachines.api import evaluate  # noqa: E402
from posemachines.backends.cnn.settings import CNNSettings  # noqa: E402
from posemachines.backends.stack import Part, parse_stack, train_stack  # noqa: E402
from posemachines.data import load_dataset  # noqa: E402
from posemachines.errors import PoseMachinesError  # noqa: E402
from posemachines.registry import TrainingRun  # noqa: E402

# A CNN that fits its training images well (no augmentation, many epochs): its beliefs on
# them flatter it, as a real CPM's do on its own training set.
CNN = CNNSettings(
    config="cpm-small",
    epochs=40,
    batch_size=16,
    lr=3e-3,
    scale=(1.0, 1.0),
    rotation=0.0,
    flip=0.0,
)


def test_specs_are_parsed_and_refused_clearly():
    assert parse_stack("cnn:1,forest:2") == [Part("cnn", 1), Part("forest", 2)]
    for bad, message in (
        ("cnn:0", "at least 1"),
        ("tree:1", "'tree' is not a kind of pose stage"),
        ("forest", "needs a number of stages"),
        ("cnn:1,", "'' is not a kind of pose stage"),
    ):
        with pytest.raises(PoseMachinesError, match=message):
            parse_stack(bad)


@pytest.fixture(scope="module")
def stacks(tmp_path_factory, tiny_forest_settings):
    """The same stack with cross-fitting (3 folds) and without (1), in a small geometry so
    that four CNN trainings and a forest fit the suite's budget."""
    from dataclasses import replace

    forest = replace(tiny_forest_settings, depth=None, background=60, similarity=((3, 5), (6, 3)))
    train = load_dataset("synthetic", "train", size=100, seed=0)
    out = tmp_path_factory.mktemp("stacks")
    return {
        folds: train_stack(
            train,
            "cnn:1,forest:1",
            {"cnn": CNN, "forest": forest},
            TrainingRun(out / str(folds)),
            folds=folds,
        )
        for folds in (3, 1)
    }


@pytest.mark.slow
def test_cross_fitted_upper_stage_keeps_what_the_cnn_below_found(stacks):
    """The forest stage on the CNN's out-of-fold beliefs is trained and used on them: it ends
    where the CNN below it ended or better, never far below.

    How much it gains is a close call on 100 synthetic test figures and moves with the seed and
    the CPU: benchmarks/stack_cross_fitting.py measured gains of +2.2, +4.7, +3.8, -0.6 and
    +1.8 points for seeds 0-4 (median +2.2; in sample, folds=1: median +3.1), so the test
    asserts what holds on every seed with a margin, and the benchmark keeps the gain."""
    model = stacks[3]
    assert model.backend == "hybrid" and [s.kind for s in model.stages] == ["cnn", "forest"]
    test = load_dataset("synthetic", "test", size=100, seed=0)
    stage1, stage2 = (s["pck@0.2"] for s in evaluate(model, test).per_stage)
    naive1 = evaluate(stacks[1], test).per_stage[0]["pck@0.2"]
    assert naive1 == stage1  # the same CNN below: trained on all the data either way
    assert stage2 > stage1 - 0.03
    parts = model.record.details["parts"]
    assert [p["part"] for p in parts] == ["cnn:1", "forest:1"] and model.record.settings[
        "folds"
    ] == 3


@pytest.mark.slow
def test_in_sample_beliefs_flatter_the_lower_part(stacks):
    """What cross-fitting changes: without it (folds=1) the part above learns from the CNN's
    beliefs on its own training images, which score far better than out of fold (the
    optimism that made the old hybrid copy its CNN)."""
    cross = stacks[3].record.details["parts"][0]["out_of_fold_pck@0.2"]
    naive = stacks[1].record.details["parts"][0]["in_sample_pck@0.2"]
    assert naive > cross + 0.2


@pytest.mark.slow
def test_stack_via_cli_and_evaluate(tmp_path):
    from click.testing import CliRunner
    from posemachines.cli.main import cli

    for spec in ("cnn:1,forest:1", "forest:1,cnn:1"):
        out = tmp_path / spec.replace(":", "").replace(",", "-")
        args = ["train", "--stack", spec, "--dataset", "synthetic", "--synthetic-size", "40"]
        args += ["--epochs", "1", "--trees", "4", "--device", "cpu", "--out", str(out)]
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 0, res.output
        res = CliRunner().invoke(cli, ["evaluate", str(out), "--synthetic-size", "6", "--json"])
        assert res.exit_code == 0, res.output
        assert len(json.loads(res.stdout)["per_stage"]) == 2
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["training"]["settings"]["stack"] == spec
        assert manifest["backend"] == "hybrid"
        assert not list(out.rglob("checkpoint"))  # the parts' scratch went, their logs stayed
    # pm compare shows each stack beside its lower part, made from the same model
    folders = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    res = CliRunner().invoke(
        cli,
        [
            "compare",
            *map(str, folders),
            "--synthetic-size",
            "6",
            "--timing-images",
            "2",
            "--out",
            str(tmp_path / "report"),
        ],
    )
    assert res.exit_code == 0, res.output
    entries = json.loads((tmp_path / "report" / "results.json").read_text())["entries"]
    labels = [e["label"] for e in entries]
    assert labels == [
        "cnn1-forest1",
        "cnn1-forest1 [cnn:1]",
        "forest1-cnn1",
        "forest1-cnn1 [forest:1]",
    ]
    whole, part = entries[0]["result"]["per_stage"], entries[1]["result"]["per_stage"]
    assert len(part) == 1 and part[0] == whole[0] and entries[1]["megabytes"] is None


def test_cnn_refinement_reads_the_beliefs_below(tmp_path):
    """A CNN part on foreign beliefs: its first stage's output changes with the beliefs it is
    given (it really reads them), and they are resampled from the model's grid to its own."""
    from dataclasses import replace

    from posemachines.backends.cnn.config import CONFIGS
    from posemachines.backends.cnn.stage import CPMNetwork, CPMStage
    from posemachines.core.runner import run_stages

    torch.manual_seed(0)
    cfg = replace(CONFIGS["cpm-tiny"], foreign_input=True, stages=1)
    network = CPMNetwork(cfg)
    with torch.no_grad():
        for p in network.module.parameters():
            p.normal_(0.0, 0.3)
    stage = CPMStage(network, 0, grid=16)  # the network's own grid is 8 x 8
    crops = np.zeros((2, 32, 32, 3), np.uint8)
    a, b = np.zeros((2, 15, 16, 16), np.float32), np.zeros((2, 15, 16, 16), np.float32)
    b[:, 3, 5, 5] = 1.0
    out_a = run_stages([stage], crops, previous=a)[-1]
    out_b = run_stages([stage], crops, previous=b)[-1]
    assert out_a.shape == (2, 15, 16, 16) and np.abs(out_a - out_b).max() > 1e-3


def test_residual_refinement_starts_from_the_beliefs_it_reads():
    """A stack's CNN part on foreign beliefs adds a correction to them: with its output layer
    at zero it passes the beliefs below through unchanged (a plain one would output zero)."""
    from dataclasses import replace

    from posemachines.backends.cnn.config import CONFIGS
    from posemachines.backends.cnn.network import CPM

    torch.manual_seed(0)
    below = torch.rand(2, 15, 8, 8)
    image = torch.rand(2, 3, 32, 32) - 0.5
    for residual in (True, False):
        cfg = replace(CONFIGS["cpm-tiny"], foreign_input=True, stages=2, residual=residual)
        net = CPM(cfg).eval()
        for stage in net.refine:
            torch.nn.init.zeros_(stage.net[-1].weight)
            torch.nn.init.zeros_(stage.net[-1].bias)
        with torch.no_grad():
            out = net(image, below)
        expected = below if residual else torch.zeros_like(below)
        for beliefs in out:
            torch.testing.assert_close(beliefs, expected)
    part = parse_stack("forest:1,cnn:2")[1]
    settings = CNNSettings.from_options(config="cpm-tiny")
    cfg = settings.for_stack(part.stages, CONFIGS["cpm-tiny"].codec(), on_beliefs=True)
    assert cfg.network_config().residual and cfg.network_config().foreign_input
