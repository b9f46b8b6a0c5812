"""Run a model exported by `pm export` on one image with ONNX Runtime, numpy and Pillow alone.

    python examples/onnx_predict.py model.onnx photo.jpg

Everything this needs is in the file's metadata: the input size, the belief-map stride, the
joint names. The file is checked first: its metadata holds the SHA-256 of the whole file (with
that value written as 64 zeros), so a file changed anywhere, weights or metadata, is refused.
The person is taken to fill the image (the crop is the whole image, padded to a square), as
`pm predict` does without --people or --boxes. Prints one line per joint: its
name, x and y in image pixels and its confidence (the belief at the peak).
"""

import hashlib
import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps


def verified(data: bytes, digest: str) -> bool:
    """Whether ``data`` hashes to ``digest`` with ``digest`` itself written as zeros."""
    if len(digest) != 64 or data.count(digest.encode()) != 1:
        return False
    return hashlib.sha256(data.replace(digest.encode(), b"0" * 64)).hexdigest() == digest


def main(model_path: str, image_path: str) -> None:
    with open(model_path, "rb") as f:
        data = f.read()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    if not verified(data, metadata.get("posemachines_sha256", "")):
        sys.exit(f"{model_path}: the file was changed since pm export wrote it")
    meta = json.loads(metadata["posemachines"])
    size, stride = meta["codec"]["input_size"], meta["codec"]["stride"]
    joints = meta["skeleton"]["joints"]

    image = ImageOps.exif_transpose(Image.open(image_path)).convert("RGB")  # upright
    side = max(image.size)
    # The square crop centred on the image: pad to a square, then resize to the input size.
    square = Image.new("RGB", (side, side))
    left, top = (side - image.width) // 2, (side - image.height) // 2
    square.paste(image, (left, top))
    crop = np.asarray(square.resize((size, size), Image.Resampling.BILINEAR), np.float32)

    beliefs = session.run(None, {"crop": crop[None]})[-1][0]  # the last stage: (P+1, g, g)
    scale = side / size
    print(f"{'joint':12s} {'x':>7s} {'y':>7s} {'confidence':>10s}")
    for name, belief in zip(joints, beliefs):
        v, u = np.unravel_index(np.argmax(belief), belief.shape)
        x = (u * stride + (stride - 1) / 2 + 0.5) * scale - 0.5 - left
        y = (v * stride + (stride - 1) / 2 + 0.5) * scale - 0.5 - top
        print(f"{name:12s} {x:7.1f} {y:7.1f} {belief[v, u]:10.3f}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
