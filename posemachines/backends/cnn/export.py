"""A model of CNN stages as one ONNX graph: the crop in, every stage's beliefs out.

The graph chains the stages as the runner does, through the same ``CPM.stage``: the image
features of each network computed once, a refinement stage fed its own network's last beliefs
(or, from another network of a stack, the previous beliefs resampled to its grid), each
stage's beliefs resampled to the model's grid.
"""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn

from posemachines.backends.cnn.stage import CPMStage, resample
from posemachines.errors import PoseMachinesError

OPSET = 18


class StagesGraph(nn.Module):
    """crop (N, S, S, 3) float RGB in 0-255 -> (stage1, ..., stageT), each (N, P+1, g, g)."""

    def __init__(self, stages: list[CPMStage]):
        super().__init__()
        networks = list(dict.fromkeys(s.network for s in stages))
        self.networks = nn.ModuleList(n.module for n in networks)
        self.plan = [(networks.index(s.network), s.index, s.grid) for s in stages]

    def forward(self, crop: torch.Tensor):
        image = crop.permute(0, 3, 1, 2) / 255.0 - 0.5
        computed: dict[int, dict] = {}
        outputs: list[torch.Tensor] = []
        own, last_net = None, None
        for net, t, grid in self.plan:
            mine = own if last_net == net else None

            def previous(side: int, mine=mine, last=outputs[-1] if outputs else None):
                return mine if mine is not None else resample(last, side)

            out = self.networks[net].stage(t, image, computed.setdefault(net, {}), previous)
            own, last_net = out, net
            outputs.append(resample(out, grid or out.shape[-1]))
        return tuple(outputs)


def onnx_bytes(stages, input_size: int) -> bytes:
    """The ONNX file of ``stages`` (CNN stages only): opset ``OPSET``, a dynamic batch."""
    if not all(isinstance(s, CPMStage) for s in stages):
        kinds = sorted({s.kind for s in stages if not isinstance(s, CPMStage)})
        raise PoseMachinesError(
            f"only CNN stages export to ONNX; this model has {', '.join(kinds)} stages, whose "
            "features are computed outside a network (run it with pm predict, or export a "
            "CNN or a stack of CNN parts)"
        )
    graph = StagesGraph(stages).float().eval()
    for module in graph.networks:
        module.to(device="cpu", memory_format=torch.contiguous_format)
    names = [f"stage{t + 1}" for t in range(len(stages))]
    example = torch.zeros(2, input_size, input_size, 3)
    buffer = io.BytesIO()
    # The tracer warns about Python comparisons of sizes (a square grid's resampling, fixed
    # by the model) and about its own deprecation; neither concerns the user.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (example,),
            buffer,
            input_names=["crop"],
            output_names=names,
            dynamic_axes={name: {0: "batch"} for name in ["crop", *names]},
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()
