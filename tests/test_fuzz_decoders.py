"""Fuzzing the image and audio decoders: any bytes give a frame or one of our clear errors, never a crash."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lookloop.errors import BadInput
from lookloop.imaging import decode_image, sniff_image_type

LIMITS = {"max_bytes": 2_000_000, "max_pixels": 4_000_000}
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def _encoded(fmt: str, w: int = 24, h: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


SEEDS = [_encoded(f) for f in ("PNG", "JPEG", "GIF", "BMP", "WEBP")]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid image with bytes flipped, cut or spliced: reaches deep into the decoders."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(1, len(data)))]
    return bytes(data)


def _decode_ok_or_clear_error(data: bytes) -> None:
    try:
        frame = decode_image(data, **LIMITS)
    except BadInput as exc:  # TooLarge and UnsupportedMedia are BadInput too
        assert exc.message and 400 <= exc.status_code < 500
        return
    assert frame.rgb.ndim == 3 and frame.rgb.shape[2] == 3 and frame.rgb.dtype == np.uint8
    assert frame.media_type == sniff_image_type(data)


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    _decode_ok_or_clear_error(data)


@FUZZ
@given(mutated())
def test_mutated_images(data: bytes) -> None:
    _decode_ok_or_clear_error(data)


@FUZZ
@given(st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"RIFF\0\0\0\0WEBP"]),
       st.binary(max_size=2048))
def test_right_magic_wrong_body(magic: bytes, body: bytes) -> None:
    _decode_ok_or_clear_error(magic + body)


def test_decompression_bomb_is_refused_from_the_header() -> None:
    # A PNG header claiming 100k x 100k pixels: refused before any pixel is decoded.
    png = bytearray(_encoded("PNG"))
    png[16:24] = struct.pack(">II", 100_000, 100_000)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))  # a valid IHDR, only the size lies
    with pytest.raises(BadInput) as err:
        decode_image(bytes(png), **LIMITS)
    assert err.value.status_code == 413


# -- audio --------------------------------------------------------------------------------------------------

speech = pytest.importorskip("lookloop.models.speech")


def _wav() -> bytes:
    return bytes(speech.encode_wav(np.zeros(1600, np.float32)))


@st.composite
def mutated_wav(draw: st.DrawFn) -> bytes:
    data = bytearray(_wav())
    for _ in range(draw(st.integers(1, 8))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(1, len(data)))]
    return bytes(data)


def _audio_ok_or_clear_error(data: bytes) -> None:
    try:
        audio = speech.decode_audio(data, max_seconds=5.0)
    except BadInput as exc:
        assert exc.message
        return
    assert audio.dtype == np.float32 and audio.ndim == 1


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=2048))
def test_audio_random_bytes(data: bytes) -> None:
    _audio_ok_or_clear_error(data)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated_wav())
def test_audio_mutated_wav(data: bytes) -> None:
    _audio_ok_or_clear_error(data)
