"""Fine-tuning (mmpose's ``load_from``): a new run starts from a trained model's weights."""

from __future__ import annotations

from dataclasses import replace

from posemachines.backends.cnn.config import CPMConfig
from posemachines.backends.cnn.network import CPM
from posemachines.errors import PoseMachinesError
from posemachines.training.checkpoint import differences, first_items


def start_from(module: CPM, reference: str, cfg: CPMConfig, skeleton) -> dict:
    """Copy the weights of the model ``reference`` (a directory or a zoo name) into
    ``module``: all of them when it predicts ``skeleton``, else the image trunk (x') alone,
    whose shapes do not depend on the joints. Returns what was loaded, for the record and the
    line that says it."""
    from posemachines.core.model import load_model_directory

    model = load_model_directory(reference)
    network = getattr(model.stages[0], "network", None)
    if model.backend != "cnn" or network is None:
        raise PoseMachinesError(f"--init {reference}: a {model.backend} model; give a CNN model")
    theirs = replace(network.cfg, num_joints=cfg.num_joints)
    if theirs != cfg:
        differ = differences(theirs.to_dict(), cfg.to_dict(), labels=("its", "here"))
        raise PoseMachinesError(
            f"--init {reference}: its network is not the one being trained "
            f"({first_items(differ)}); give the --config it was trained with"
        )
    state = network.module.state_dict()
    if model.skeleton.matches(skeleton):
        module.load_state_dict(state)
        part, why = "all", f"the same skeleton, {skeleton.describe()}"
    else:
        state = {k: v for k, v in state.items() if k.startswith("features.")}
        module.load_state_dict(state, strict=False)
        part = "image trunk"
        why = f"it predicts {model.skeleton.describe()}, this data is {skeleton.describe()}"
    return {
        "model": str(reference),
        "loaded": part,
        "tensors": len(state),
        "note": f"starting from {reference}: {part} of its weights ({why})",
    }
