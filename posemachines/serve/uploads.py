"""An uploaded image, read within limits: every byte of the body counted as it arrives,
whatever its framing (a Content-Length, chunked, a multipart form), so nothing beyond
``max_bytes`` reaches memory or disk; then decoded by the toolkit's one decoder
(``data.read_image``), which refuses more than ``max_pixels`` from the header alone."""

from __future__ import annotations

import numpy as np

from posemachines.data.reading import CorruptImageError, TooManyPixels, read_image

MAX_BYTES = 10_000_000
MAX_PIXELS = 40_000_000
MAX_PARTS = 4  # parts of a multipart form: the image and a few small fields


class BadUpload(Exception):
    """A request the server refuses: ``status`` and a one-line message for the JSON error."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def decode_upload(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an uploaded image; ``BadUpload`` 400 for what is not a readable
    image, 413 for more than ``max_pixels``."""
    try:
        return read_image(data, max_pixels=max_pixels)
    except TooManyPixels as exc:
        raise BadUpload(413, str(exc)) from None
    except CorruptImageError as exc:
        raise BadUpload(400, f"not an image this server can read ({exc})") from None


async def read_upload(headers, chunks, max_bytes: int) -> bytes:
    """The image's bytes from a body (image/* or application/octet-stream) or from the
    multipart field ``image``, read from the async iterator ``chunks``; ``BadUpload`` 413 as
    soon as more than ``max_bytes`` of the body have arrived."""
    content_type = headers.get("content-type", "")
    kind = content_type.split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        body = MultipartImage(content_type)
    elif kind.startswith("image/") or kind == "application/octet-stream":
        body = RawImage()
    else:
        raise BadUpload(415, f"send an image (image/jpeg, image/png, ...), not {kind or 'nothing'}")
    announced = headers.get("content-length", "")
    if announced.isdigit() and int(announced) > max_bytes:
        raise BadUpload(413, f"the body is over the limit of {max_bytes} bytes")
    read = 0
    async for chunk in chunks:
        read += len(chunk)
        if read > max_bytes:
            raise BadUpload(413, f"the body is over the limit of {max_bytes} bytes")
        body.feed(chunk)
    return body.image()


class RawImage:
    """A body that is the image itself."""

    def __init__(self):
        self.data = bytearray()

    def feed(self, chunk: bytes) -> None:
        self.data += chunk

    def image(self) -> bytes:
        return bytes(self.data)


class MultipartImage:
    """The field ``image`` of a multipart/form-data body, parsed as the chunks arrive; the
    other fields are read past, not kept."""

    def __init__(self, content_type: str):
        from python_multipart.multipart import MultipartParser, parse_options_header

        boundary = parse_options_header(content_type)[1].get(b"boundary")
        if not boundary:
            raise BadUpload(400, "the multipart body has no boundary in its Content-Type")
        self.parts, self.header, self.value, self.field = 0, b"", b"", None
        self.data: bytearray | None = None
        self.current = bytearray()
        callbacks = {
            "on_part_begin": self._begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_part_data": self._part_data,
            "on_part_end": self._end,
        }
        self.parser = MultipartParser(boundary, callbacks)

    def feed(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except BadUpload:
            raise
        except Exception as exc:  # python-multipart's errors: a malformed body
            raise BadUpload(400, f"the multipart body is malformed ({exc})") from None

    def image(self) -> bytes:
        if self.data is None:
            raise BadUpload(400, "the multipart body has no file field 'image'")
        return bytes(self.data)

    def _begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise BadUpload(400, f"the multipart body has more than {MAX_PARTS} parts")
        self.header, self.value, self.field, self.current = b"", b"", None, bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self.header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def _header_end(self) -> None:
        from python_multipart.multipart import parse_options_header

        if self.header.lower() == b"content-disposition":
            self.field = parse_options_header(self.value)[1].get(b"name")
        self.header, self.value = b"", b""

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.field == b"image":
            self.current += data[start:end]

    def _end(self) -> None:
        if self.field == b"image" and self.data is None:
            self.data = self.current
