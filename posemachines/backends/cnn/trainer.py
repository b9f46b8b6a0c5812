"""End-to-end training of the Convolutional Pose Machine with intermediate supervision.

One path: crops are decoded once into memory (a ``pm data pack`` file or the dataset packed on
the fly); every step draws scale/rotation/flip per sample, warps the batch on the training
device with ``grid_sample``, renders the Gaussian targets there with the shared codec, and
minimises the sum over stages of the masked L2 loss. The host never waits for the device
inside a step: what a step needs goes over in pinned, asynchronous copies, and the losses are
summed on the device and read every ``log_every`` steps.

The length of a run is ``epochs``, or a ``time_budget`` in minutes: then the speed of the first
steps (compilation excluded) fixes the number of steps, so that the learning-rate schedule,
the validations and the final save all fit in the budget; the plan is corrected at every
validation if the speed changes.

Checkpoints (weights as safetensors, optimiser state loadable with ``torch.load(weights_only=
True)``) are written atomically; the data order and augmentation of step s depend only on
``(seed, s)``, so ``--resume`` continues exactly (a time-budget run resumes its planned
steps). Under ``torchrun`` the same code trains with DistributedDataParallel, each rank taking
its share of every batch; rank 0 writes.
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from posemachines.backends.cnn.batches import BatchMaker, training_data
from posemachines.backends.cnn.checkpoint import load_checkpoint, save_checkpoint
from posemachines.backends.cnn.finetune import start_from
from posemachines.backends.cnn.gradients import gradient_summary
from posemachines.backends.cnn.log import (
    TrainingLog,
    agree,
    distributed_world,
    end_distributed,
    start_distributed,
)
from posemachines.backends.cnn.network import CPM
from posemachines.backends.cnn.settings import DEFAULT_EPOCHS, VALIDATIONS_PER_BUDGET, CNNSettings
from posemachines.backends.cnn.stage import CPMNetwork, CPMStage
from posemachines.backends.cnn.steps import (
    Budget,
    learning_rate,
    make_optimizer,
    measure_speed,
    train_step,
    validate_pck,
)
from posemachines.core.crops import Augmentation
from posemachines.core.model import PoseModel, TrainingRecord
from posemachines.devices import autocast, training_environment
from posemachines.errors import PoseMachinesError
from posemachines.files.owned import make_folder
from posemachines.registry import TrainingRun
from posemachines.training.checkpoint import Checkpoint


def train_cnn(
    dataset,
    settings: CNNSettings,
    out_dir: str | Path,
    packed: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    max_steps: int | None = None,
    on_bad_image: str = "skip",
    below: np.ndarray | None = None,
    grid: int | None = None,
) -> PoseModel | None:
    """Train a CPM; returns the model on rank 0 (None on other ranks).

    ``max_steps`` stops early after that many steps in this call (for tests of resume). The
    seed and torch's global flags are set for the run and restored afterwards. A network on
    foreign beliefs (``overrides={"foreign_input": True}``) learns to refine ``below``, the
    beliefs (N, P+1, g, g) that the stages under it gave on each sample's person box; ``grid``
    is the belief grid of the model it will be part of, when not its own.
    """
    settings.validate()
    started = time.perf_counter()
    world, rank = distributed_world()
    device = start_distributed(torch.device(settings.device), world)
    try:
        with training_environment(device, settings.seed):
            run = _CNNRun(settings, Path(out_dir), device, world, rank, started)
            run.below, run.grid = below, grid
            model = run.train(dataset, packed, resume, progress, max_steps, on_bad_image)
    finally:
        end_distributed(world)
    return model if rank == 0 else None


class _CNNRun:
    """One training run: set up, plan, step, look at the log, build the model."""

    def __init__(self, settings, out_dir: Path, device, world: int, rank: int, started: float):
        self.s, self.out_dir, self.device = settings, out_dir, device
        self.world, self.rank, self.started = world, rank, started
        self.budget = None
        if settings.time_budget is not None:
            self.budget = Budget(60.0 * settings.time_budget, started)
        self.autocast = autocast(device)
        self.plan: dict = {}
        self.below, self.grid = None, None
        self.gradient_seconds = 0.0

    def train(self, dataset, packed, resume, progress, max_steps, on_bad_image):
        from posemachines.progress import say

        self.prepare(dataset, packed, on_bad_image)
        if self.init is not None and progress and self.rank == 0:
            say(self.init["note"])
        checkpoint = Checkpoint(self.out_dir / "checkpoint", self.identity())
        step, total = 0, None
        if resume and not checkpoint.exists() and progress and self.rank == 0:
            say("no complete checkpoint to resume from: training from the start")
        resume = resume and checkpoint.exists()
        if resume:
            state, weights, opt_state = load_checkpoint(checkpoint)
            self.module.load_state_dict(weights)
            self.opt.load_state_dict(opt_state)
            step, total = state["step"], state.get("total_steps")
        self.runner = self.make_runner()
        self.batches = self.make_batches()
        per_epoch = self.batches.steps_per_epoch
        self.total = total if total is not None else self.planned_steps(per_epoch)
        if self.rank == 0:
            make_folder(self.out_dir)
        self.log = TrainingLog(
            self.out_dir / "train_log.jsonl", self.cfg.stages, self.device, resume, self.rank == 0
        )
        self.log.checked_at = step
        step = self.loop(step, checkpoint, resume, progress, max_steps, per_epoch)
        if step < self.total or self.rank != 0:
            return None  # stopped early on purpose (max_steps): the checkpoint holds it
        return self.model(dataset, packed, step, per_epoch)

    def prepare(self, dataset, packed, on_bad_image) -> None:
        """The crops, the network for their skeleton, and its optimiser."""
        s, device = self.s, self.device
        cfg = s.network_config()
        if cfg.foreign_input != (self.below is not None):
            raise PoseMachinesError(
                "a network on foreign beliefs trains with the beliefs below it, and only it"
            )
        data = training_data(dataset, packed, cfg, s, on_bad_image, self.below)
        if data.skeleton.num_joints != cfg.num_joints:
            cfg = replace(cfg, num_joints=data.skeleton.num_joints)
        self.cfg, self.codec, self.data = cfg, cfg.codec(), data
        self.batch = min(s.batch_size, len(data.train))
        if self.batch < self.world:
            raise PoseMachinesError(
                f"batch of {self.batch} cannot be shared by {self.world} processes"
            )
        # channels_last is faster on CUDA and, through oneDNN, about 1.7x faster on the CPU.
        module = CPM(cfg)
        self.init = None
        if s.init is not None:
            self.init = start_from(module, s.init, cfg, data.skeleton)
        self.module = module.to(device).to(memory_format=torch.channels_last)
        self.opt = make_optimizer(self.module, s, device)

    def identity(self) -> dict:
        """What a checkpoint must match to be resumed."""
        ignored = ("device", "checkpoint_every", "compile", "log_every", "grad_every")
        return {
            "settings": {k: v for k, v in self.s.to_dict().items() if k not in ignored},
            "network": self.cfg.to_dict(),
            "data": self.data.source,
            "n_train": len(self.data.train),
        }

    def make_runner(self):
        runner = self.module
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device] if self.device.type == "cuda" else None
            runner = DistributedDataParallel(self.module, device_ids=ids)
        if self.s.compile and self.device.type == "cuda":
            runner = torch.compile(runner)
        return runner

    def make_batches(self) -> BatchMaker:
        s, data, device = self.s, self.data, self.device
        below = data.below_train
        return BatchMaker(
            data.train,
            torch.as_tensor(data.train.images, device=device),  # decoded once, on the device
            self.codec,
            Augmentation(scale=tuple(s.scale), rotation=s.rotation, flip=s.flip),
            data.skeleton.flip_permutation(),
            s.seed,
            self.batch,
            self.rank,
            self.world,
            below=None if below is None else torch.as_tensor(below, device=device),
        )

    def loop(self, step, checkpoint, resume, progress, max_steps, per_epoch) -> int:
        """Steps until the plan's end (or ``max_steps`` more); returns the step reached."""
        from posemachines.progress import progress_bar

        s, log = self.s, self.log
        val_every = per_epoch
        if self.budget is not None:
            val_every = max(s.log_every, self.total // VALIDATIONS_PER_BUDGET)
        ckpt_every = s.checkpoint_every or (
            200 if self.budget is None else max(200, self.total // 10)
        )
        bar = progress_bar(
            total=self.total,
            initial=step,
            desc="train",
            unit="step",
            disable=not progress or self.rank != 0,
        )
        self.last_good = step if resume else None
        stop_at = None if max_steps is None else step + max_steps
        self.module.train()
        while step < self.total and (stop_at is None or step < stop_at):
            log.add(self.step(step), self.batch * self.world)
            step += 1
            bar.update()
            at_val = step % val_every == 0 or step == self.total
            at_ckpt = step % ckpt_every == 0 or step == self.total
            if step % s.log_every == 0 or at_val or at_ckpt:
                self.look(step, per_epoch, at_val, at_ckpt, checkpoint, bar)
                if at_val and self.budget is not None and not resume and step < self.total:
                    self.replan(step)
                    bar.total = self.total
        bar.close()
        return step

    def look(self, step, per_epoch, at_val, at_ckpt, checkpoint, bar) -> None:
        """Read the losses (a NaN stops the run), validate, checkpoint, write the log line."""
        log, rank = self.log, self.rank
        note = (
            f"the last good checkpoint (step {self.last_good}) is in {checkpoint.folder}"
            if self.last_good is not None
            else "no checkpoint had been written yet"
        )
        losses, rate = log.read(step, note)
        record = {
            "step": step,
            "epoch": round(step / per_epoch, 3),
            "loss": float(losses.sum()),
            "loss_per_stage": losses.round(6).tolist(),
            "lr": learning_rate(step - 1, self.total, self.s),
            "images_per_s": round(rate, 1),
        }
        if self.budget is not None:
            record["elapsed_s"] = round(self.budget.elapsed(), 1)
        if at_val and rank == 0:
            record["val_pck@0.2_per_stage"] = self.validate()
        if at_ckpt and rank == 0:
            progress_state = {"step": step, "total_steps": self.total}
            save_checkpoint(checkpoint, self.module, self.opt, progress_state)
            self.last_good = step
        log.append(record)
        if at_val and rank == 0:
            pck = [round(100 * v, 1) for v in record.get("val_pck@0.2_per_stage", [])]
            bar.write(
                f"step {step}/{self.total} (epoch {record['epoch']:.1f}): loss "
                f"{record['loss']:.4f}, val PCK@0.2 {pck}, {rate:.0f} img/s"
            )
        log.restart_clock()

    def step(self, k: int, lr: float | None = None) -> torch.Tensor:
        for group in self.opt.param_groups:
            group["lr"] = learning_rate(k, self.total or 1, self.s) if lr is None else lr
        inspect = None
        every = self.s.grad_every
        if every and lr is None and (k + 1) % every == 0 and self.rank == 0:
            inspect = lambda: self.record_gradients(k + 1)  # noqa: E731
        try:
            return train_step(
                self.runner,
                self.opt,
                *self.batches(k),
                self.autocast,
                final_only=self.s.supervision == "final",
                inspect=inspect,
            )
        except torch.OutOfMemoryError:
            batch = self.batches.batch
            raise PoseMachinesError(
                f"out of GPU memory at batch size {batch}; try --batch-size {max(1, batch // 2)}"
            ) from None

    def record_gradients(self, step: int) -> None:
        """Summarise each stage's gradients into the log (the time it takes is counted)."""
        t = time.perf_counter()
        summary = gradient_summary(self.module.stage_parameters())
        self.log.append({"step": step, "gradients": summary})
        self.gradient_seconds += time.perf_counter() - t

    def validate(self) -> list:
        data = self.data
        return validate_pck(
            self.module, data.val, self.codec, data.skeleton, self.autocast, below=data.below_val
        )

    def planned_steps(self, per_epoch: int) -> int:
        """Epochs times their steps; with a time budget, the steps that fit in it.

        The real step is timed on a copy of the start: weights, statistics and optimiser are
        put back afterwards, so the run itself starts from step 0 with its full schedule.
        """
        if self.budget is None:
            return per_epoch * (self.s.epochs or DEFAULT_EPOCHS)
        self.total = None
        start_state = copy.deepcopy(self.module.state_dict())
        # Under DDP every rank must take the same steps: a fixed count, not a time.
        min_seconds = 0.0 if self.world > 1 else 0.01 * self.budget.seconds
        step_s = measure_speed(lambda k: self.step(k, lr=0.0), self.device, min_seconds)
        t = time.perf_counter()
        if self.rank == 0:
            self.validate()
        val_s = time.perf_counter() - t
        self.module.load_state_dict(start_state)
        self.opt = make_optimizer(self.module, self.s, self.device)
        fit = self.budget.steps_that_fit(step_s, val_s, VALIDATIONS_PER_BUDGET + 1)
        self.plan = {
            "seconds_per_step": step_s,
            "seconds_per_validation": val_s,
            "replanned_at_s": self.budget.elapsed(),
            "replanned_at_step": 0,
        }
        return agree(fit, self.device, self.world)

    def replan(self, step: int) -> None:
        """Correct the planned steps if the speed changed (checkpoints and validations
        included in the speed measured since the last correction)."""
        plan, budget = self.plan, self.budget
        step_s = (budget.elapsed() - plan["replanned_at_s"]) / (step - plan["replanned_at_step"])
        left = budget.steps_that_fit(step_s, 0.0, 1)
        new_total = agree(max(step + 1, step + left), self.device, self.world)
        if abs(new_total - self.total) > 0.01 * self.total:
            self.total = new_total
        plan.update(replanned_at_s=budget.elapsed(), replanned_at_step=step)

    def model(self, dataset, packed, steps: int, per_epoch: int) -> PoseModel:
        cfg, data, s = self.cfg, self.data, self.s
        network = CPMNetwork(cfg, self.module.to("cpu"), "cpu")
        grid = self.grid if self.grid not in (None, self.codec.map_size) else None
        stages = [CPMStage(network, t, grid) for t in range(cfg.stages)]
        model = PoseModel("cnn", data.skeleton, self.codec, stages)
        details = {
            "steps": steps,
            "epochs": round(steps / per_epoch, 2),
            "images": len(data.train),
            "validation_images": len(data.val),
        }
        if self.init is not None:
            details["started_from"] = {k: v for k, v in self.init.items() if k != "note"}
        if s.grad_every:
            seconds = time.perf_counter() - self.started
            details["gradient_summaries_share_of_time"] = round(self.gradient_seconds / seconds, 4)
        if self.budget is not None:
            details["time_budget_s"] = self.budget.seconds
            details["planned_from"] = {
                k: round(v, 4) for k, v in self.plan.items() if k.startswith("seconds")
            }
        settings = {**s.to_dict(), "network": cfg.to_dict()}
        fields = dict(seconds=round(time.perf_counter() - self.started, 1), details=details)
        if packed is None:
            model.record = TrainingRecord.for_dataset(
                dataset, s.seed, settings, skipped_images=data.skipped.names, **fields
            )
        else:
            model.record = TrainingRecord(
                data.source, "packed", "packed", s.seed, settings=settings, **fields
            )
        return model


class CNNTrainer:
    """Trains a CPM end to end (``train_cnn``); ``model_`` is the model (None on a ``torchrun``
    rank other than 0, which writes nothing). In a stack, ``below["plain"]`` are the beliefs
    the network learns to refine; the stack cross-fits it for the part above."""

    gives_out_of_fold = False
    keeps_checkpoint = True  # a longer run can start from it
    trains_on_device = True

    def __init__(self, settings: CNNSettings, run: TrainingRun):
        self.settings = settings
        self.run = run

    def fit(
        self, dataset, below: dict | None = None, fold_of=None, out_of_fold=False
    ) -> CNNTrainer:
        run = self.run
        self.model_ = train_cnn(
            dataset,
            self.settings,
            run.out_dir,
            packed=self.settings.packed,
            resume=run.resume,
            progress=run.progress,
            on_bad_image=run.on_bad_image,
            below=None if below is None else below["plain"],
            grid=self.settings.grid,
        )
        return self
