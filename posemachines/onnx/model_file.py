"""Models that leave Python: an exported ONNX file, run by ONNX Runtime behind the same
``PoseModel`` (the same crops, decoding and test-time views; no torch needed).

The file explains itself: its metadata (``posemachines``, a JSON document) holds the skeleton,
the belief-map codec, the input (name, layout, channel order, pixel range), the crop protocol,
the stages' output names, the training record and the scores; and the SHA-256 of the whole
file (graph, weights and metadata), so that a file edited anywhere is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from posemachines.core.model import PoseModel, TrainingRecord
from posemachines.core.skeletons import Skeleton
from posemachines.core.targets import BeliefCodec
from posemachines.errors import PoseMachinesError

METADATA_KEY = "posemachines"
DIGEST_KEY = "posemachines_sha256"  # of the whole file, this value written as UNSIGNED
UNSIGNED = "0" * 64
FORMAT = "posemachines-onnx"
CROP_PROTOCOL = (
    "a square crop around the person, resampled to input_size: centred on the person box, its "
    "side 1.25 times a detected box's longer side (COCO's crop), or the whole image's longer "
    "side; crop pixel (i, j) samples image point A^-1 (j, i) bilinearly"
)
BELIEFS = (
    "each output is (N, P+1, g, g): one map per joint in skeleton order, then the background; "
    "cell (u, v) covers crop pixels [u*stride, (u+1)*stride); a joint is the peak cell's centre "
    "refined to sub-cell precision, its confidence the belief there"
)


def describe(model: PoseModel, int8: bool = False) -> dict:
    """The metadata document of ``model`` as an ONNX file."""
    return {
        "format": FORMAT,
        "format_version": 2,
        "backend": model.backend,
        "skeleton": model.skeleton.to_dict(),
        "codec": model.codec.to_dict(),
        "input": {
            "name": "crop",
            "shape": ["batch", model.input_size, model.input_size, 3],
            "layout": "NHWC",
            "channels": "RGB",
            "dtype": "float32",
            "range": [0, 255],
        },
        "outputs": [f"stage{t + 1}" for t in range(model.num_stages)],
        "beliefs": BELIEFS,
        "crop_protocol": CROP_PROTOCOL,
        "quantised": "int8 (static, QDQ)" if int8 else None,
        "training": model.record.to_dict(),
        "evaluations": model.info.get("evaluations", {}),
    }


def file_digest(data: bytes, digest: str) -> str | None:
    """The SHA-256 of an exported file with its own digest (found once in it) written as
    zeros, or None when the digest is not found exactly once. It covers every byte of the
    file: the graph, the weights and the metadata."""
    if len(digest) != len(UNSIGNED) or data.count(digest.encode()) != 1:
        return None
    return hashlib.sha256(data.replace(digest.encode(), UNSIGNED.encode())).hexdigest()


def with_metadata(data: bytes, doc: dict) -> bytes:
    """The ONNX file ``data`` checked by ``onnx.checker``, with ``doc`` in its metadata and
    the SHA-256 of the whole file (``DIGEST_KEY``), so that no byte of it can change unseen."""
    import onnx

    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto)
    del proto.metadata_props[:]
    flat = {"skeleton": doc["skeleton"]["name"], "joints": ",".join(doc["skeleton"]["joints"])}
    for key, value in {METADATA_KEY: json.dumps(doc), **flat, DIGEST_KEY: UNSIGNED}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    unsigned = proto.SerializeToString()
    if unsigned.count(UNSIGNED.encode()) != 1:  # the weights happen to hold the placeholder
        raise PoseMachinesError("cannot sign this ONNX file; export it again")
    digest = hashlib.sha256(unsigned).hexdigest()
    return unsigned.replace(UNSIGNED.encode(), digest.encode())


def read_onnx(data: bytes, where: str) -> tuple[dict, bytes]:
    """The metadata and the bytes of an ONNX file of ours, every byte checked against its
    digest."""
    try:
        import onnx
    except ImportError:
        raise PoseMachinesError(
            f"{where}: running an ONNX model needs onnx and onnxruntime: pip install "
            "'posemachines[onnx]'"
        ) from None
    try:
        proto = onnx.load_from_string(data)
    except Exception:  # protobuf's DecodeError and friends: any unreadable file
        raise PoseMachinesError(f"{where}: not a readable ONNX file (truncated?)") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    try:
        doc = json.loads(meta.get(METADATA_KEY, ""))
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise PoseMachinesError(f"{where}: an ONNX file, but not one pm export wrote")
    if DIGEST_KEY not in meta:
        raise PoseMachinesError(
            f"{where}: written by an older pm export, whose digest covers the graph only; "
            "export the model again"
        )
    if file_digest(data, meta[DIGEST_KEY]) != meta[DIGEST_KEY]:
        raise PoseMachinesError(f"{where}: the file was changed since pm export wrote it")
    return doc, data


class OnnxNetwork:
    """An ONNX Runtime session over every stage's beliefs, shared by the model's stages."""

    def __init__(self, data: bytes, where: str, device: str = "cpu"):
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(data, providers=providers)
        except Exception as exc:  # onnxruntime's own error types
            first = str(exc).splitlines()[0][:200]
            raise PoseMachinesError(f"{where}: ONNX Runtime cannot load it ({first})") from None
        self.device = "cuda" if providers[0].startswith("CUDA") else "cpu"

    def run(self, crops) -> list[np.ndarray]:
        return self.session.run(None, {"crop": np.asarray(crops, dtype=np.float32)})


class OnnxStage:
    """Stage ``index`` of an exported model: the session runs once per batch of crops, and
    every stage reads its output."""

    kind = "onnx"

    def __init__(self, network: OnnxNetwork, index: int):
        self.network = network
        self.index = index

    def beliefs(self, crops, previous, cache) -> np.ndarray:
        key = ("onnx", id(self.network))
        if key not in cache:
            cache[key] = self.network.run(crops)
        return cache[key][self.index]


def onnx_pose_model(data: bytes, where: str, device: str = "cpu") -> PoseModel:
    """A ``PoseModel`` whose stages run in ONNX Runtime."""
    doc, data = read_onnx(data, where)
    try:
        skeleton = Skeleton.from_dict(doc["skeleton"])
        codec = BeliefCodec(**doc["codec"])
        count = len(doc["outputs"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PoseMachinesError(f"{where}: malformed posemachines metadata ({exc})") from None
    network = OnnxNetwork(data, where, device)
    stages = [OnnxStage(network, t) for t in range(count)]
    info = {
        "evaluations": doc.get("evaluations") or {},
        "onnx": {"quantised": doc.get("quantised")},
    }
    record = TrainingRecord.from_manifest({"training": doc.get("training") or {}})
    return PoseModel(doc.get("backend", "cnn"), skeleton, codec, stages, info, record)


def load_onnx_model(path: str | Path, device: str = "cpu") -> PoseModel:
    """An exported ``.onnx`` file as a ``PoseModel``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PoseMachinesError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return onnx_pose_model(data, str(path), device)
