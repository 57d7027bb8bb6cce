"""CLIP's image side on the tiny random CLIP: a query image is untrusted, so its size is checked first."""

from __future__ import annotations

import pytest

from rag.errors import TooLarge
from tests.builders import png_bytes, png_header, sample_image


def test_an_image_over_the_pixel_cap_is_refused_from_its_header(image_embedder, monkeypatch):
    monkeypatch.setattr(image_embedder, "max_pixels", 1_000_000)
    with pytest.raises(TooLarge, match=r"2000x1000 pixels, over the 1-megapixel limit"):
        image_embedder.embed_images([png_header(2000, 1000)])


def test_an_image_within_the_cap_is_embedded(image_embedder, monkeypatch):
    monkeypatch.setattr(image_embedder, "max_pixels", 1_000_000)
    vectors = image_embedder.embed_images([png_bytes(sample_image("chelsea"))])
    assert vectors.shape == (1, image_embedder.dim)
