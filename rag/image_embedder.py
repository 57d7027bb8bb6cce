"""CLIP embeddings through open_clip: images, and text queries into the same space (text-to-image search).

No package registry ships CLIP weights. When they can't be loaded (offline, no local copy), Loupe runs
without image embeddings: images are still stored and OCR'd, and embedded later (`python -m rag
embed-images`) once weights are available. `load_image_embedder` returns the reason instead of raising.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rag.errors import TooLarge
from rag.records import ModelId

logger = logging.getLogger(__name__)
DEFAULT_MAX_PIXELS = 64_000_000  # Settings.max_image_megapixels; a query image is untrusted input


class ImageEmbedder:
    def __init__(self, model: str, pretrained: str, device: str = "cpu",
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        import open_clip
        import torch

        self.device = device
        self.max_pixels = max_pixels
        # A 'local-dir:' model carries its own weights; `pretrained` then means nothing to open_clip.
        pretrained_arg = None if model.startswith("local-dir:") else (pretrained or None)
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(
            model, pretrained=pretrained_arg, device=device)
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        with torch.no_grad():
            probe = self.model.encode_text(self.tokenizer(["probe"]).to(device))
        self.model_id = ModelId(f"{model}|{_weights_label(pretrained_arg)}", int(probe.shape[-1]))

    @property
    def dim(self) -> int:
        return self.model_id.dim

    def embed_images(self, images: Sequence[bytes], batch_size: int = 32) -> np.ndarray:
        """Unit-length vectors for encoded images (PNG, JPEG, ...)."""
        import torch
        from PIL import Image

        rows = []
        for start in range(0, len(images), batch_size):
            batch = []
            for data in images[start:start + batch_size]:
                with Image.open(io.BytesIO(data)) as image:
                    # the header's size, checked before a single pixel is decoded
                    if image.width * image.height > self.max_pixels:
                        raise TooLarge(f"the image is {image.width}x{image.height} pixels, over the "
                                       f"{self.max_pixels / 1e6:g}-megapixel limit (LOUPE_MAX_IMAGE_MEGAPIXELS)")
                    batch.append(self.preprocess(image.convert("RGB")))
            with torch.no_grad():
                rows.append(self.model.encode_image(torch.stack(batch).to(self.device)).float().cpu().numpy())
        return _normalise(np.concatenate(rows) if rows else np.zeros((0, self.dim), np.float32))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.no_grad():
            vectors = self.model.encode_text(self.tokenizer(list(texts)).to(self.device)).float().cpu().numpy()
        return _normalise(vectors)


def load_image_embedder(model: str, pretrained: str, device: str = "cpu",
                        max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[ImageEmbedder | None, str]:
    """The CLIP embedder, or None and a one-line reason why image search by text is off."""
    logging.disable(logging.ERROR)  # open_clip logs the failed download itself; the reason below says it once
    try:
        return ImageEmbedder(model, pretrained, device, max_pixels), ""
    except Exception as error:  # offline hub, missing file, unknown architecture: all mean "no CLIP"
        logging.disable(logging.NOTSET)
        # expected without weights (the status line says so); the traceback is for debugging a local copy
        logger.debug("CLIP did not load", exc_info=True)
        reason = _short(str(error)) or type(error).__name__
        return None, (
            f"Image search by text is off: CLIP weights for {model} ({pretrained or 'no weights named'}) "
            f"could not be loaded ({reason}). Images are still stored and OCR'd; run "
            f"`python -m rag embed-images` once the weights are available (internet, or "
            f"LOUPE_CLIP_PRETRAINED=/path/to/weights)."
        )
    finally:
        logging.disable(logging.NOTSET)


def _short(message: str, limit: int = 120) -> str:
    """The first line of an error, cut at a word boundary: hub errors run to several sentences."""
    line = message.strip().splitlines()[0] if message.strip() else ""
    return line if len(line) <= limit else line[:limit].rsplit(" ", 1)[0] + " …"


def _weights_label(pretrained: str | None) -> str:
    if not pretrained:
        return "own-weights"
    return Path(pretrained).name if ("/" in pretrained or "\\" in pretrained) else pretrained


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
