"""A CNN run's checkpoint: weights and optimiser state as safetensors and JSON (nothing
pickled), written as one generation of ``training.checkpoint``."""

from __future__ import annotations

import json

import torch

from posemachines.errors import PoseMachinesError
from posemachines.files.owned import atomic_write_bytes, atomic_write_json
from posemachines.training.checkpoint import Checkpoint


def _optimizer_files(state: dict) -> tuple[bytes, dict]:
    """An optimizer's ``state_dict`` as safetensors (its tensors) and JSON (the rest): nothing
    is pickled."""
    from safetensors.torch import save

    tensors, plain = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                plain[f"{index}.{name}"] = value
    return save(tensors), {"param_groups": state["param_groups"], "values": plain}


def _optimizer_state(tensors: dict, doc: dict) -> dict:
    state: dict = {}
    for key, value in [*tensors.items(), *doc["values"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": doc["param_groups"]}


def save_checkpoint(checkpoint: Checkpoint, module, optimizer, progress: dict) -> None:
    from safetensors.torch import save

    weights = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    tensors, doc = _optimizer_files(optimizer.state_dict())
    folder = checkpoint.begin()
    atomic_write_bytes(folder / "weights.safetensors", save(weights))
    atomic_write_bytes(folder / "optimizer.safetensors", tensors)
    atomic_write_json(folder / "optimizer.json", doc)
    checkpoint.commit(progress)


def load_checkpoint(checkpoint: Checkpoint):
    from safetensors.torch import load_file

    state = checkpoint.load_state()
    folder = checkpoint.current
    try:
        weights = load_file(str(folder / "weights.safetensors"))
        tensors = load_file(str(folder / "optimizer.safetensors"))
        opt = _optimizer_state(tensors, json.loads((folder / "optimizer.json").read_text()))
    except Exception as exc:  # safetensors' own errors too: any unreadable file is one line
        raise PoseMachinesError(
            f"{folder}: an unreadable checkpoint ({exc}); train again without --resume"
        ) from None
    return state, weights, opt
