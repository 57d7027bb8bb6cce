"""Fixtures for the browser app's tests: the real app served in-process, real files, Debian's Chromium.

Each test module starts the apps it needs once (`start_app`) on a free port with the real MiniLM, the
tiny random CLIP and, for speed, the tiny random Llama as generator; they close at the module's end.
"""

from __future__ import annotations

import io
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

AURORA_MD = """# Aurora station handbook

## Seed vault

The Aurora research station keeps its seed vault at minus eighteen degrees Celsius. The vault holds
4,200 seed samples from alpine plants, and only the station botanist may open it.

## Supply flights

Supply flights land on the ice runway every second Tuesday, weather permitting. Each flight brings
fuel, fresh food and the mail. The runway is cleared of snow by the night shift.

## Radio schedule

The radio operator calls the mainland at 07:00 and 19:00 every day. Emergency calls go out on the
red channel, which is monitored around the clock.
"""

LIGHTHOUSE_TXT = """The Kestrel Point lighthouse was built in 1871 from granite quarried on the island.
Its lamp was converted to electricity in 1952 and automated in 1989.
The keeper's cottage is now a small museum about shipwrecks along the northern coast.
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def png_bytes(seed: int, size: int = 64) -> bytes:
    """A distinct noisy picture per seed."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class LiveApp:
    url: str
    demo: object
    service: object
    settings: object

    def close(self) -> None:
        self.demo.close()
        self.service.close()


@pytest.fixture(scope="session", autouse=True)
def gradio_temp_dir(tmp_path_factory) -> Iterator[Path]:
    """Uploads land in a temporary folder of their own, not in the system's /tmp/gradio."""
    folder = tmp_path_factory.mktemp("gradio-temp")
    previous = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("GRADIO_TEMP_DIR", None)
    else:
        os.environ["GRADIO_TEMP_DIR"] = previous


@pytest.fixture(scope="module")
def start_app(text_embedder, image_embedder, tiny_generator_dir) -> Iterator[Callable[..., LiveApp]]:
    """start_app(store, clip=True, port=None, **settings) -> a running app; all are closed at module end."""
    from app import create_app, launch
    from rag.components import Models
    from tests.conftest import make_settings

    started: list[LiveApp] = []

    def start(store: Path, clip: bool = True, port: int | None = None, **changes) -> LiveApp:
        values = {"generator_model": str(tiny_generator_dir), "max_new_tokens": 24, "host": "127.0.0.1",
                  "port": port or free_port(), **changes}
        settings = make_settings(store, **values)
        models = (Models(settings, text_embedder, image_embedder, "") if clip else
                  Models(settings, text_embedder, None, "Image search by text is off: no CLIP weights in this test."))
        demo, service = create_app(settings, models)
        url = launch(demo, service, quiet=True)
        app = LiveApp(url.rstrip("/"), demo, service, settings)
        started.append(app)
        return app

    yield start
    for app in started:
        try:
            app.close()
        except Exception:  # already closed by the test (restart)
            pass


@pytest.fixture(scope="session")
def docs_dir(tmp_path_factory) -> Path:
    """Real files to upload: two good documents, a picture, a truncated PDF and an unsupported file."""
    from fpdf import FPDF

    folder = tmp_path_factory.mktemp("docs")
    (folder / "aurora.md").write_text(AURORA_MD)
    (folder / "lighthouse.txt").write_text(LIGHTHOUSE_TXT)
    (folder / "photo.png").write_bytes(png_bytes(1))
    (folder / "other.png").write_bytes(png_bytes(2))
    pdf = FPDF()
    for text in ("The broken report starts here.", "Its second page never arrives."):
        pdf.add_page()
        pdf.set_font("Helvetica", size=14)
        pdf.cell(0, 10, text)
    whole = bytes(pdf.output())
    (folder / "broken.pdf").write_bytes(whole[: len(whole) // 3])
    (folder / "notes.xyz").write_text("not a supported type")
    return folder


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args) -> dict:
    """Debian's Chromium (scripts/setup.sh --dev installs it); Playwright's own download can't work offline."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/setup.sh --dev` (apt-get install chromium)")
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "args": CHROMIUM_ARGS}


@pytest.fixture
def page(page):
    """Generous waits: two cores run the server, the models and the browser together."""
    page.set_default_timeout(60_000)
    expect.set_options(timeout=20_000)
    return page
