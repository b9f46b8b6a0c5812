"""Reading images and annotation files: one line for what cannot be read."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from posemachines.errors import PoseMachinesError


class CorruptImageError(PoseMachinesError):
    pass


class TooManyPixels(CorruptImageError):
    """An image refused from its header alone: more pixels than the limit allows."""


def read_image(source: str | Path | bytes, *, max_pixels: int | None = None) -> np.ndarray:
    """Decode an image file (a path, or its bytes) as (H, W, 3) uint8, as it is meant to be
    seen, raising a one-line error when it is unreadable. Every way into the toolkit (predict,
    evaluate, pack, serve, the Python API) decodes through here, so a file gives the same
    pixels everywhere.

    EXIF orientation is applied (a phone's portrait photo stands upright); 16-bit and float
    images are scaled to 8 bits, not clipped; palette, CMYK, grey and alpha images become RGB
    (alpha dropped); a GIF gives its first frame. An image of more than ``max_pixels`` (or
    Pillow's decompression-bomb limit) is refused from its header, before its pixels are
    decoded.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    name = "the image" if isinstance(source, bytes) else str(source)
    if isinstance(source, bytes) and not source:
        raise CorruptImageError("the image is empty (no bytes)")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            width, height = im.size  # the header only: nothing decoded yet
            if max_pixels is not None and width * height > max_pixels:
                raise TooManyPixels(
                    f"{name} is {width} x {height} pixels; the limit is {max_pixels} pixels"
                )
            return _rgb8(ImageOps.exif_transpose(im))
    except FileNotFoundError:
        raise CorruptImageError(f"{name}: image file is missing") from None
    except Image.DecompressionBombError as exc:
        raise TooManyPixels(f"{name}: refused, too many pixels ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise CorruptImageError(f"{name}: cannot decode image ({exc})") from None


def _rgb8(im) -> np.ndarray:
    """A Pillow image as (H, W, 3) uint8; wide integer and float greys are scaled down."""
    if im.mode.startswith("I") or im.mode == "F":
        grey = np.asarray(im, dtype=np.float64)
        top = grey.max(initial=0.0)
        if im.mode.startswith("I;16") or (im.mode == "I" and top > 255):
            scale = 255.0 / 65535.0
        elif im.mode == "F":
            scale = 255.0 / (1.0 if top <= 1.0 else max(top, 255.0))
        else:
            scale = 1.0
        grey = np.clip(np.nan_to_num(grey) * scale + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def read_json(path: str | Path, kind: type, what: str):
    """A JSON annotation file whose top level is a ``kind``, or a one-line error."""
    import json

    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise PoseMachinesError(f"{path}: not readable JSON ({exc})") from None
    except RecursionError:
        raise PoseMachinesError(f"{path}: not readable JSON (nested too deeply)") from None
    if not isinstance(doc, kind):
        raise PoseMachinesError(f"{path}: expected {what}")
    return doc


def read_matlab(path: str | Path, variable: str, structs: bool = False):
    """The variable ``variable`` of a MATLAB file, or a one-line error; ``structs`` gives MATLAB
    structs as objects with attributes (and squeezes singleton dimensions)."""
    import scipy.io

    options = {"struct_as_record": False, "squeeze_me": True} if structs else {}
    try:
        mat = scipy.io.loadmat(path, **options)
    except Exception as exc:  # scipy raises several types for a broken file
        raise PoseMachinesError(f"{path}: not a readable MATLAB file ({exc})") from None
    if variable not in mat:
        raise PoseMachinesError(f"{path}: no {variable!r} in the file")
    return mat[variable]
