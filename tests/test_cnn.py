import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from posemachines.backends.cnn.batches import warp_batch  # noqa: E402
from posemachines.backends.cnn.config import CONFIGS  # noqa: E402
from posemachines.backends.cnn.network import CPM  # noqa: E402
from posemachines.backends.cnn.settings import CNNSettings  # noqa: E402
from posemachines.backends.cnn.trainer import train_cnn  # noqa: E402
from posemachines.core.crops import crop_transform, warp_image  # noqa: E402
from posemachines.data.pack import load_pack, pack_crops, save_pack  # noqa: E402
from posemachines.errors import PoseMachinesError  # noqa: E402


def tiny(device="cpu", **kw):
    options = dict(epochs=2, batch_size=8, checkpoint_every=3, val_fraction=0.1) | kw
    return CNNSettings(config="cpm-tiny", device=device, **options)


def test_every_stage_has_the_right_shape():
    for name in ("cpm-small", "cpm-tiny"):
        cfg = CONFIGS[name]
        out = CPM(cfg)(torch.zeros(2, 3, cfg.input_size, cfg.input_size))
        assert len(out) == cfg.stages
        side = cfg.input_size // cfg.stride
        assert all(o.shape == (2, cfg.num_joints + 1, side, side) for o in out)


def test_paper_network_size():
    n = sum(p.numel() for p in CPM(CONFIGS["cpm-paper"]).parameters())
    assert 30.0e6 < n < 31.5e6  # the paper's network is about 30.8 M parameters


def test_device_warp_matches_the_cpu_warp():
    img = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    m = crop_transform(np.array([20.0, 25.0]), 30.0, 24, scale=1.1, rotation=17, flip=True)
    ref = warp_image(img, m, 24).astype(float) / 255 - 0.5
    got = warp_batch(torch.tensor(img[None]), m[None], 24)[0].permute(1, 2, 0).numpy()
    inner = (slice(2, -2), slice(2, -2))  # borders differ only by padding rules
    assert np.abs(got[inner] - ref[inner]).mean() < 0.01


def test_training_loss_falls_and_model_predicts(synthetic_train, synthetic_test, tmp_path):
    s = tiny(lr=3e-3, epochs=6)
    model = train_cnn(synthetic_train, s, tmp_path)
    lines = (tmp_path / "train_log.jsonl").read_text().splitlines()
    log = [r for r in map(json.loads, lines) if "val_pck@0.2_per_stage" in r]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4, 5, 6]  # a validation per epoch
    assert log[-1]["loss"] < log[0]["loss"]
    assert len(log[0]["loss_per_stage"]) == 2 and len(log[0]["val_pck@0.2_per_stage"]) == 2
    preds = model.predict(synthetic_test)
    assert preds.keypoints.shape == (2, len(synthetic_test), 14, 2)
    assert np.isfinite(preds.keypoints).all()


def test_cpu_training_is_deterministic_and_resume_is_exact(synthetic_train, tmp_path):
    full = train_cnn(synthetic_train, tiny(), tmp_path / "a")
    again = train_cnn(synthetic_train, tiny(), tmp_path / "b")
    wa = full.stages[0].network.state_dict()
    wb = again.stages[0].network.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # interrupted after 4 steps (checkpoint at step 3), then resumed
    assert train_cnn(synthetic_train, tiny(), tmp_path / "c", max_steps=4) is None
    resumed = train_cnn(synthetic_train, tiny(), tmp_path / "c", resume=True)
    wc = resumed.stages[0].network.state_dict()
    assert all(torch.equal(wa[k], wc[k]) for k in wa)


def test_resume_with_a_different_configuration_is_refused(synthetic_train, tmp_path):
    train_cnn(synthetic_train, tiny(), tmp_path, max_steps=3)
    with pytest.raises(PoseMachinesError, match="refusing to resume.*batch_size"):
        train_cnn(synthetic_train, replace(tiny(), batch_size=4), tmp_path, resume=True)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(synthetic_train, tmp_path, monkeypatch):
    import posemachines.backends.cnn.steps as tc

    real = tc.stage_losses
    calls = {"n": 0}

    def poisoned(*args):
        calls["n"] += 1
        out = real(*args)
        return out * float("nan") if calls["n"] == 5 else out

    monkeypatch.setattr(tc, "stage_losses", poisoned)
    # Step 5 is poisoned; the losses are read at the checkpoint of step 6.
    with pytest.raises(
        PoseMachinesError,
        match=r"between step 3 and step 6.*last good checkpoint \(step 3\).*lower --lr",
    ):
        train_cnn(synthetic_train, tiny(), tmp_path)
    from posemachines.training.checkpoint import Checkpoint

    latest = Checkpoint(tmp_path / "checkpoint", {}).latest()
    assert json.loads((latest / "state.json").read_text())["step"] == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_suggests_auto():
    with pytest.raises(PoseMachinesError, match="--device auto"):
        CNNSettings.from_options(device="cuda")


def test_pack_round_trip(synthetic_train, tmp_path):
    crops = pack_crops([synthetic_train.subset(range(5))], side=48, n_jobs=1)
    info = save_pack(crops, tmp_path / "p.npz", quality=95)
    back = load_pack(tmp_path / "p.npz")
    assert info["n"] == 5 and back.images.shape == (5, 48, 48, 3)
    np.testing.assert_allclose(back.joints, crops.joints, atol=1e-4)
    assert np.abs(back.images.astype(int) - crops.images).mean() < 12  # JPEG: close, not equal
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(PoseMachinesError, match="not a posemachines training cache"):
        load_pack(tmp_path / "bad.npz")


def test_train_from_pack_via_cli(tmp_path):
    from click.testing import CliRunner
    from posemachines.cli.main import cli

    r = CliRunner()
    pack = tmp_path / "p.npz"
    res = r.invoke(
        cli,
        [
            "data",
            "pack",
            "synthetic:train",
            "--synthetic-size",
            "24",
            "--side",
            "48",
            "--out",
            str(pack),
        ],
    )
    assert res.exit_code == 0, res.output
    res = r.invoke(
        cli,
        [
            "train",
            "--backend",
            "cnn",
            "--config",
            "cpm-tiny",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--data",
            str(pack),
            "--out",
            str(tmp_path / "m"),
        ],
    )
    assert res.exit_code == 0, res.output
    res = r.invoke(
        cli,
        [
            "evaluate",
            str(tmp_path / "m"),
            "--dataset",
            "synthetic",
            "--synthetic-size",
            "4",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output


@pytest.mark.slow
def test_distributed_training_with_two_processes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29533",
        "-m",
        "posemachines.cli.main",
        "train",
        "--backend",
        "cnn",
        "--config",
        "cpm-tiny",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--dataset",
        "synthetic",
        "--synthetic-size",
        "24",
        "--out",
        str(tmp_path / "ddp"),
    ]
    done = subprocess.run(cmd, env=env, timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "ddp" / "manifest.json").is_file()


def test_cuda_training_step(device, synthetic_train, tmp_path):
    if device != "cuda":
        pytest.skip("run with --device cuda on a GPU machine")
    model = train_cnn(synthetic_train, tiny(device="cuda", compile=True), tmp_path)
    log = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 12 and np.isfinite(log[-1]["loss"])
    assert model.stages[0].network.device.type == "cpu"  # saved from the CPU
    preds = model.predict([np.zeros((40, 30, 3), np.uint8)]).keypoints
    assert preds.shape == (2, 1, 14, 2) and np.isfinite(preds).all()


def test_batch_norm_network_predicts_each_image_alone(synthetic_test):
    """cpm-small has BatchNorm: prediction must use its running statistics, so an image's
    beliefs do not depend on the other images in the batch."""
    from posemachines.backends.cnn.stage import CPMNetwork, CPMStage
    from posemachines.core.runner import run_stages
    from posemachines.training import crop_dataset

    cfg = CONFIGS["cpm-small"]
    assert cfg.batch_norm
    network = CPMNetwork(cfg)
    stages = [CPMStage(network, t) for t in range(cfg.stages)]
    crops = crop_dataset(synthetic_test, cfg.input_size)[0]
    together = run_stages(stages, crops)[-1]
    alone = run_stages(stages, crops[:1])[-1]
    np.testing.assert_allclose(alone[0], together[0], rtol=1e-4, atol=1e-5)


def test_time_budget_plans_the_steps_that_fit():
    import time

    from posemachines.backends.cnn.steps import Budget

    budget = Budget(100.0, time.perf_counter() - 9.8)  # 9.8 s already gone
    # 100 - 9.8 - 3 validations of 2 s - 1 % reserve (1 s) - 2 s = 81.2 s at 0.5 s per step
    assert budget.steps_that_fit(0.5, 2.0, 3) == 162
    assert Budget(1.0, time.perf_counter() - 5.0).steps_that_fit(0.5, 0.0, 1) == 1


def test_epochs_and_time_budget_are_exclusive():
    with pytest.raises(PoseMachinesError, match="exclusive"):
        CNNSettings.from_options(device="cpu", epochs=3, time_budget=1.0)
    with pytest.raises(PoseMachinesError, match="--time-budget must be positive"):
        CNNSettings.from_options(device="cpu", time_budget=0)
    with pytest.raises(PoseMachinesError, match="--lr must be positive"):
        CNNSettings.from_options(device="cpu", lr=-1.0)


@pytest.mark.slow
def test_time_budget_run_keeps_its_log_and_records_the_plan(tmp_path):
    from click.testing import CliRunner
    from posemachines.cli.main import cli

    out = tmp_path / "d"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["train", "--backend", "cnn", "--config", "cpm-tiny", "--dataset", "synthetic"]
    args += ["--synthetic-size", "40", "--device", "cpu", "--time-budget", "0.1"]
    res = CliRunner().invoke(cli, [*args, "--out", str(out), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert (out / "notes.txt").read_text() == "mine"
    records = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert records and records[-1]["step"] >= 1 and "elapsed_s" in records[-1]
    training = json.loads((out / "manifest.json").read_text())["training"]
    details = training["details"]
    assert details["time_budget_s"] == 6.0 and details["steps"] == records[-1]["step"]
    assert details["planned_from"]["seconds_per_step"] > 0
    assert training["dataset_name"] == "synthetic" and training["command"].startswith("pm ")
    res = CliRunner().invoke(cli, [*args, "--epochs", "2", "--out", str(tmp_path / "e")])
    assert res.exit_code == 1 and "exclusive" in res.output
    assert not (tmp_path / "e").exists()


def test_the_log_is_read_every_log_every_steps(synthetic_train, tmp_path):
    train_cnn(synthetic_train, tiny(log_every=2), tmp_path)
    log = (tmp_path / "train_log.jsonl").read_text().splitlines()
    steps = [json.loads(x)["step"] for x in log]
    assert steps == [2, 3, 4, 6, 8, 9, 10, 12]  # every 2 steps, and checkpoints every 3


def test_gpu_network_shapes_and_old_configs_keep_their_layers():
    from posemachines.backends.cnn.config import CPMConfig

    cfg = CONFIGS["cpm-gpu"]
    out = CPM(cfg)(torch.zeros(1, 3, cfg.input_size, cfg.input_size))
    assert len(out) == cfg.stages and out[0].shape == (1, 15, 32, 32)
    # a configuration saved before the trunk options existed builds the same layers
    new_fields = {"block_channels", "block_convs", "feature_kernel", "shared_features"}
    new_fields.add("refine_convs")
    old = {k: v for k, v in CONFIGS["cpm-small"].to_dict().items() if k not in new_fields}
    names = list(CPM(CPMConfig(**old)).state_dict())
    assert names == list(CPM(CONFIGS["cpm-small"]).state_dict())
    assert "stage1.net.0.weight" in names and "features.0.weight" in names


def test_learning_rate_warms_up_then_decays():
    from posemachines.backends.cnn.steps import learning_rate

    s = CNNSettings(lr=1e-3, warmup=0.1)
    lrs = [learning_rate(k, 100, s) for k in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 1e-6
    sgd = CNNSettings(optimizer="sgd", lr=0.01)
    assert [learning_rate(k, 100, sgd) for k in (0, 25, 50, 99)] == pytest.approx(
        [0.01, 0.01 / 3, 0.01 / 9, 0.01 / 27]
    )


def test_device_augmentation_matches_person_crop(synthetic_test):
    """The CNN's path (pack the person once, then warp the packed crop on the device) gives
    the crop and joints person_crop gives, for the same draw."""
    from posemachines.backends.cnn.batches import BatchMaker, crop_matrices
    from posemachines.core.crops import Augmentation, person_crop
    from posemachines.core.skeletons import LSP14
    from posemachines.core.targets import BeliefCodec

    sample = synthetic_test[3]
    pack = pack_crops([synthetic_test.subset([3])], side=192, pad=1.5, n_jobs=1)
    aug = Augmentation(scale=(0.8, 1.2), rotation=30, flip=0.5, shift=0.05)
    perm = LSP14.flip_permutation()
    codec = BeliefCodec(64, 4, 4.0)
    maker = BatchMaker(pack, torch.as_tensor(pack.images), codec, aug, perm, 0, 1)
    for seed in range(4):
        mats, flips = crop_matrices(pack, 64, np.array([0]), aug, np.random.default_rng(seed))
        (x,), _, _ = maker.make(np.array([0]), mats, flips)
        crop = person_crop(sample, 64, LSP14, aug, np.random.default_rng(seed))
        from posemachines.backends.cnn.batches import target_joints

        joints, labelled = target_joints(pack, np.array([0]), mats, flips, perm)
        np.testing.assert_allclose(joints[0], crop.joints, atol=1e-3)
        assert np.array_equal(labelled[0], crop.labelled)
        got = (x[0].permute(1, 2, 0).numpy() + 0.5) * 255
        inner = (slice(3, -3), slice(3, -3))  # the borders differ only by padding rules
        assert np.abs(got[inner] - crop.image[inner]).mean() < 6.0


def test_training_restores_the_global_torch_state(synthetic_train, tmp_path):
    torch.use_deterministic_algorithms(False)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_cnn(synthetic_train, tiny(epochs=1), tmp_path)
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.equal(torch.rand(3), expected)  # the caller's random stream goes on as if


def test_receptive_field_of_the_papers_stage_1_is_the_hand_computed_one():
    """cpm-paper, stage 1: 9x9 conv (9 px), 3x3 pool stride 2 (+2 -> 11), 9x9 conv at stride 2
    (+16 -> 27), pool (+4 -> 31), 9x9 conv at stride 4 (+32 -> 63), pool (+8 -> 71), 5x5 conv
    at stride 8 (+32 -> 103), 9x9 conv (+64 -> 167), two 1x1 convs: 167 px. Each later stage
    adds three 11x11 convs at stride 8: +240 px."""
    from posemachines.backends.cnn.analysis import receptive_fields

    assert receptive_fields(CONFIGS["cpm-paper"]) == [167, 407, 647, 887, 1127, 1367]
    # cpm-gpu shares its trunk: stage 1 = trunk + 3x3 feature conv + 1x1 head
    assert receptive_fields(CONFIGS["cpm-gpu"])[0] == 115


def test_final_supervision_starves_the_first_stage_of_gradient(synthetic_train, tmp_path):
    """The paper's argument, on a fixed seed: with the loss on the last stage only, the
    gradients reaching stage 1 are smaller than with a loss at every stage."""

    def median_of_stage_1(supervision):
        out = tmp_path / supervision
        train_cnn(synthetic_train, tiny(supervision=supervision, grad_every=3), out)
        lines = (out / "train_log.jsonl").read_text().splitlines()
        records = [r for r in map(json.loads, lines) if "gradients" in r]
        assert len(records) == 4 and set(records[0]["gradients"]) == {"stage 1", "x'", "stage 2"}
        return np.median([r["gradients"]["stage 1"]["q50"] for r in records])

    assert median_of_stage_1("final") < median_of_stage_1("all")


def test_recording_gradients_leaves_the_weights_alone(synthetic_train, tmp_path):
    plain = train_cnn(synthetic_train, tiny(), tmp_path / "a")
    watched = train_cnn(synthetic_train, tiny(grad_every=2), tmp_path / "b")
    wa, wb = plain.stages[0].network.state_dict(), watched.stages[0].network.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_inspect_prints_receptive_fields_and_draws_the_effective_ones(tmp_path):
    from click.testing import CliRunner
    from posemachines.cli.main import cli

    out = tmp_path / "m"
    args = ["train", "--backend", "cnn", "--config", "cpm-tiny", "--dataset", "synthetic"]
    args += ["--synthetic-size", "30", "--epochs", "1", "--device", "cpu", "--out", str(out)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    res = CliRunner().invoke(cli, ["inspect", str(out), "--erf", str(tmp_path / "erf.png")])
    assert res.exit_code == 0, res.output
    assert "stage 1: 37 px" in res.output and "stage 2: 61 px" in res.output
    assert "parameters  9,638" in res.output and (tmp_path / "erf.png").stat().st_size > 1000
    doc = json.loads(CliRunner().invoke(cli, ["inspect", str(out), "--json"]).output)
    assert doc["receptive_field_px"] == [37, 61] and doc["training"]["dataset_name"] == "synthetic"
    # drawn again over its own figure; never over a file of the user's
    erf = ["inspect", str(out), "--erf"]
    assert CliRunner().invoke(cli, [*erf, str(tmp_path / "erf.png")]).exit_code == 0
    (tmp_path / "photo.png").write_bytes(b"not ours")
    res = CliRunner().invoke(cli, [*erf, str(tmp_path / "photo.png")])
    assert res.exit_code == 1 and "not written by posemachines" in res.output
    assert (tmp_path / "photo.png").read_bytes() == b"not ours"
