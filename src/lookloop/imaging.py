"""Safe image decoding: content sniffing, byte and pixel limits, decompression-bomb guard, bounded memory.

Memory: a decode holds at most one full-resolution buffer in the file's own mode (at most 4 bytes per pixel,
so 4 × ``max_pixels`` bytes: 160 MB at the default 40 megapixels) and shrinks to the working frame
(at most ``MAX_FRAME_SIDE`` pixels a side, 12 MB as RGB) before any copy is made. JPEGs are decoded at a
reduced scale straight away. At most ``MAX_DECODES`` run at once, so decoding never needs more than
about 2 × 4 × ``max_pixels`` bytes whatever arrives.
"""

from __future__ import annotations

import io
import threading
import warnings

import numpy as np
from PIL import Image, ImageOps

from lookloop.domain import Frame
from lookloop.errors import BadInput, TooLarge, UnsupportedMedia

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)


def sniff_image_type(data: bytes) -> str | None:
    """The media type from the bytes themselves, never from a declared header."""
    for magic, media_type in _MAGIC:
        if data.startswith(magic):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


# Every model reads far fewer pixels than this (identify 224 px, OCR about 960 px a side).
MAX_FRAME_SIDE = 2048
MAX_DECODES = 2
_decodes = threading.BoundedSemaphore(MAX_DECODES)


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int, max_side: int = MAX_FRAME_SIDE) -> Frame:
    """Decodes bytes into an RGB frame (at most ``max_side`` pixels a side) or raises a ``BadInput`` with a
    message a person can act on."""

    if not data:
        raise BadInput("the image is empty")
    if len(data) > max_bytes:
        raise TooLarge(f"the image is {len(data)} bytes; the limit is {max_bytes} bytes")
    media_type = sniff_image_type(data)
    if media_type is None:
        raise UnsupportedMedia("the upload is not an image (JPEG, PNG, WebP, GIF or BMP expected)")
    try:
        with _decodes, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            # The header gives the size before any pixel is decoded: refuse bombs here.
            width, height = img.size
            if width * height > max_pixels:
                raise TooLarge(f"the image is {width}x{height} pixels; the limit is {max_pixels} pixels")
            if width < 8 or height < 8:
                raise BadInput(f"the image is too small ({width}x{height}); at least 8x8 pixels expected")
            if img.format == "JPEG":
                img.draft("RGB", (max_side, max_side))  # decode at 1/2, 1/4 or 1/8 scale: never the full size
            img.thumbnail((max_side, max_side))  # in place, before any copy of the full-size pixels
            upright = ImageOps.exif_transpose(img.convert("RGB"))
            rgb = np.asarray(upright, dtype=np.uint8)
    except (TooLarge, BadInput):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TooLarge(f"the image is too large to decode safely: {exc}") from exc
    except Exception as exc:  # any decoder failure is the upload's fault, not ours
        raise BadInput(f"the image could not be decoded: {type(exc).__name__}") from exc
    return Frame(rgb=np.ascontiguousarray(rgb), data=data, media_type=media_type)


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    import cv2  # OpenCV's native libraries load on first use

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise BadInput("could not encode the image as JPEG")
    return bytes(buf)


def thumbnail_jpeg(data: bytes, side: int, quality: int = 80) -> bytes:
    """A small JPEG (at most ``side`` pixels a side) of a stored frame."""
    frame = decode_image(data, max_bytes=len(data) + 1, max_pixels=1 << 40, max_side=side)
    return encode_jpeg(frame.rgb, quality)
