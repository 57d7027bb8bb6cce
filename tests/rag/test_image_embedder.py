"""CLIP's image side on the tiny random CLIP: a query image is untrusted, so its size is checked first."""

from __future__ import annotations

import zlib

import pytest

from rag.errors import TooLarge


def png_header(width: int, height: int) -> bytes:
    """A PNG declaring width x height grey pixels whose data holds one row: decoding it would allocate the lot."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(width + 1)))
            + chunk(b"IEND", b""))


def test_an_image_over_the_pixel_cap_is_refused_from_its_header(image_embedder, monkeypatch):
    monkeypatch.setattr(image_embedder, "max_pixels", 1_000_000)
    with pytest.raises(TooLarge, match=r"2000x1000 pixels, over the 1-megapixel limit"):
        image_embedder.embed_images([png_header(2000, 1000)])


def test_an_image_within_the_cap_is_embedded(image_embedder, monkeypatch):
    from tests.builders import png_bytes, sample_image

    monkeypatch.setattr(image_embedder, "max_pixels", 1_000_000)
    vectors = image_embedder.embed_images([png_bytes(sample_image("chelsea"))])
    assert vectors.shape == (1, image_embedder.dim)
