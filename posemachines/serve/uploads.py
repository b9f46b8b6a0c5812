"""An uploaded image, read within limits: its size in bytes, then its pixel count from the
header alone (a decompression bomb is refused before its pixels are decoded)."""

from __future__ import annotations

import io

import numpy as np

MAX_BYTES = 10_000_000
MAX_PIXELS = 40_000_000


class BadUpload(Exception):
    """A request the server refuses: ``status`` and a one-line message for the JSON error."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an encoded image, EXIF orientation applied; ``BadUpload`` 400
    for what is not a readable image, 413 for more than ``max_pixels``."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise BadUpload(400, "the body is empty: send an image")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size  # the header only: nothing decoded yet
    except Image.DecompressionBombError:
        raise BadUpload(413, f"the image has more than {max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise BadUpload(400, "not an image this server can read (JPEG, PNG, WebP, ...)") from None
    if width * height > max_pixels:
        raise BadUpload(
            413, f"the image is {width} x {height} pixels; the limit is {max_pixels} pixels"
        )
    try:
        image = ImageOps.exif_transpose(image).convert("RGB")
        return np.asarray(image)
    except (OSError, ValueError, SyntaxError):
        raise BadUpload(400, "the image is truncated or damaged") from None
