"""Training options of the people model."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from posemachines.devices import resolve_device
from posemachines.options import option

DEFAULT_EPOCHS = 20


@dataclass(frozen=True)
class PeopleSettings:
    """What decides a people model; stored in its manifest."""

    input_size: int = field(
        default=128,
        metadata=option(
            "Side of the square the whole image is shrunk into (a multiple of 32).",
            minimum=32,
        ),
    )
    width: int = field(
        default=32, metadata=option("Channels of the network's first layers.", minimum=4)
    )
    epochs: int = field(
        default=DEFAULT_EPOCHS, metadata=option("Training epochs (default 20).", minimum=1)
    )
    batch_size: int = field(default=16, metadata=option("Batch size (default 16).", minimum=1))
    lr: float = field(default=2e-3, metadata=option("Peak learning rate of AdamW (default 2e-3)."))
    device: str = field(default="cpu", metadata=option("cpu, cuda or auto (default)."))
    seed: int = 0

    @classmethod
    def from_options(cls, device="auto", **options) -> PeopleSettings:
        settings = cls(device=resolve_device(device), **options)
        if settings.input_size % 32:
            from posemachines.errors import PoseMachinesError

            raise PoseMachinesError(
                f"--input-size must be a multiple of 32, got {settings.input_size}"
            )
        return settings

    def to_dict(self) -> dict:
        return asdict(self)

    def on(self, device: str) -> PeopleSettings:
        return replace(self, device=device)

    def validate(self) -> None:
        if not self.lr > 0:
            from posemachines.errors import PoseMachinesError

            raise PoseMachinesError(f"--lr must be positive, got {self.lr}")
