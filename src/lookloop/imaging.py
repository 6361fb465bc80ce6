"""Safe image decoding: content sniffing, byte and pixel limits, decompression-bomb guard."""

from __future__ import annotations

import io
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


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> Frame:
    """Decodes bytes into an RGB frame or raises a ``BadInput`` with a message a person can act on."""

    if not data:
        raise BadInput("the image is empty")
    if len(data) > max_bytes:
        raise TooLarge(f"the image is {len(data)} bytes; the limit is {max_bytes} bytes")
    media_type = sniff_image_type(data)
    if media_type is None:
        raise UnsupportedMedia("the upload is not an image (JPEG, PNG, WebP, GIF or BMP expected)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            # The header gives the size before any pixel is decoded: refuse bombs here.
            width, height = img.size
            if width * height > max_pixels:
                raise TooLarge(f"the image is {width}x{height} pixels; the limit is {max_pixels} pixels")
            if width < 8 or height < 8:
                raise BadInput(f"the image is too small ({width}x{height}); at least 8x8 pixels expected")
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
