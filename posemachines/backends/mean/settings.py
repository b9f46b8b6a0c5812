"""The mean-pose prior's settings: only the crop and belief grid it averages on."""

from __future__ import annotations

from dataclasses import dataclass

from posemachines.core.targets import BeliefCodec


@dataclass(frozen=True)
class MeanSettings:
    input_size: int = 160
    stride: int = 4
    sigma: float = 6.0

    def codec(self) -> BeliefCodec:
        return BeliefCodec(self.input_size, self.stride, self.sigma)

    def to_dict(self) -> dict:
        return self.codec().to_dict()
