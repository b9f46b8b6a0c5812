"""``pm export``: a model of CNN stages written as one ONNX file, optionally quantised to int8
(ONNX Runtime's static quantisation, calibrated on person crops of the model's own data)."""

from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from posemachines.core.crops import person_crop
from posemachines.core.model import PoseModel
from posemachines.errors import PoseMachinesError
from posemachines.files.owned import check_owned_file, write_owned_file
from posemachines.onnx.model_file import describe, with_metadata


def onnx_file_bytes(model: PoseModel) -> bytes:
    """The float32 ONNX file of ``model`` with its metadata (CNN stages only)."""
    from posemachines.backends.cnn.export import onnx_bytes

    return with_metadata(onnx_bytes(model.stages, model.input_size), describe(model))


def calibration_crops(model: PoseModel, dataset, count: int) -> np.ndarray:
    """``count`` person crops (float32, NHWC, 0-255) spread over ``dataset``."""
    picks = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).astype(int)
    crops = [person_crop(dataset[int(i)], model.input_size, model.skeleton).image for i in picks]
    return np.stack(crops).astype(np.float32)


def quantised(data: bytes, crops: np.ndarray, batch: int = 8) -> bytes:
    """``data`` (float32 ONNX) quantised to int8 weights and activations (QDQ, weights per
    channel), the activation ranges calibrated on ``crops``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Crops(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(np.array_split(crops, max(1, len(crops) // batch)))

        def get_next(self):
            part = next(self.batches, None)
            return None if part is None else {"crop": part}

    with tempfile.TemporaryDirectory(prefix="posemachines-int8-") as tmp, _quiet():
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        prepared = Path(tmp) / "prepared.onnx"
        source.write_bytes(data)
        # BatchNorm folded into the convolutions first: quantised apart, it would cost a
        # dequantise-multiply-quantise round trip per layer and undo the gain.
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target),
            Crops(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
        )
        return target.read_bytes()


@contextmanager
def _quiet():
    """ONNX Runtime's quantiser logs advice on the root logger; the command says what counts."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def export_onnx(
    model: PoseModel,
    out: str | Path,
    *,
    int8: bool = False,
    calibration=None,
    overwrite: bool = False,
    hint: str = "",
) -> Path:
    """Write ``model`` to ``out`` as ONNX (``int8``: quantised, calibrated on the crops of
    ``calibration``, a dataset). An existing ``out`` is replaced only with ``overwrite``, and
    only when its folder's record says posemachines wrote it."""
    out = Path(out)
    check_owned_file(out, replace=overwrite, hint=hint)
    data = onnx_file_bytes(model)
    if int8:
        if calibration is None:
            raise PoseMachinesError("--int8 needs crops to calibrate on: a dataset")
        crops = calibration_crops(model, calibration[0], calibration[1])
        data = with_metadata(quantised(data, crops), describe(model, int8=True))
    write_owned_file(out, data, "export", replace=overwrite, hint=hint)
    return out
