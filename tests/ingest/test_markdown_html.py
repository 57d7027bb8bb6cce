"""Markdown (markdown-it-py) and HTML (lxml + trafilatura) readers: structure, main content, hostile input."""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Callable
from pathlib import Path

from ingest.parsed import ParsedFile, TextBlock
from ingest.readers.html import read_html
from ingest.readers.text import read_markdown

Reader = Callable[[Path, bytes, None], ParsedFile]
Blocks = list[tuple[str | None, str]]

# Product-style bounds with a huge margin, not speed checks: the fixed readers need well under a second
# for these files. The old Markdown heading regex needed many minutes, the old stdlib HTML parser minutes.
PARSE_LIMIT_S = 60
# The old <meta charset> regex needed about 40 s on its 4 KB window (2 cores); the fixed one a millisecond.
CHARSET_LIMIT_S = 10


def blocks_of(reader: Reader, name: str, data: bytes) -> Blocks:
    items = list(reader(Path(name), data, None).items)
    assert all(isinstance(item, TextBlock) and item.page == 1 for item in items)
    return [(item.heading, item.text) for item in items]


def _read_into(results: multiprocessing.Queue, reader: Reader, name: str, data: bytes) -> None:
    results.put(blocks_of(reader, name, data))


def blocks_in_child(reader: Reader, name: str, data: bytes, limit_s: float = PARSE_LIMIT_S) -> Blocks:
    """Parses in a child process, so a reader that runs away fails this test instead of hanging the suite."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_read_into, args=(results, reader, name, data), daemon=True)
    child.start()
    try:
        return results.get(timeout=limit_s)
    except queue.Empty:
        raise AssertionError(f"reading {name} did not finish within {limit_s} s") from None
    finally:
        child.kill()
        child.join()


# --- Markdown ---------------------------------------------------------------------------------


def test_markdown_lists_tables_quotes_and_inline_markup_become_readable_text() -> None:
    source = """# Guide to *Harbor*

Intro with **bold**, a [link](https://example.org) and `inline code`.
Next line ![diagram of the relay](relay.png) ends.

- first item
- second item
  continued here
  1. nested one
  2. nested two

> A quoted tip
> on two lines.

| Port | Use |
|------|-----|
| 7411 | sensors |
| 9464 | metrics |

<details><summary>More</summary><p>Hidden <b>detail</b> text.</p><script>alert(1)</script></details>

## Empty heading below
##

Still under the previous heading.
"""
    assert blocks_of(read_markdown, "guide.md", source.encode()) == [
        ("Guide to Harbor", "Intro with bold, a link and `inline code`.\nNext line diagram of the relay ends."),
        ("Guide to Harbor", "- first item\n- second item\n  continued here\n  1. nested one\n  2. nested two"),
        ("Guide to Harbor", "A quoted tip\non two lines."),
        ("Guide to Harbor", "Port | Use\n7411 | sensors\n9464 | metrics"),
        ("Guide to Harbor", "More\nHidden detail text."),
        ("Empty heading below", "Still under the previous heading."),
    ]


def test_markdown_heading_lines_with_long_space_runs_parse() -> None:
    """Regression: the old ATX heading regex was quadratic in a run of spaces inside a heading line
    (about 1.3 s for 5,000 spaces and 4 s for 10,000 on 2 cores, so minutes for this 200 KB file)."""
    line = "# a" + " " * 50_000 + "x"
    count = 200_000 // len(line) + 1
    source = "".join(f"{line}\nbody {index}\n\n" for index in range(count))
    assert len(source) > 200_000
    blocks = blocks_in_child(read_markdown, "spaces.md", source.encode())
    assert blocks == [("a" + " " * 50_000 + "x", f"body {index}") for index in range(count)]


# --- HTML -------------------------------------------------------------------------------------

_NAV = ["Home", "Products", "Pricing", "Blog", "Community", "Careers", "Support", "Status", "Changelog",
        "Roadmap", "Partners", "Contact"]
_TOC = ["Installation", "Configuration", "Ports", "Frequently asked"] + [f"Appendix {n}" for n in range(1, 9)]
_NAV_LINKS = "".join(f'<li><a href="/{word.lower()}">{word}</a></li>' for word in _NAV)
_TOC_LINKS = "".join(f'<li><a href="#s{n}">{title}</a></li>' for n, title in enumerate(_TOC))
_INTRO = ("The relay forwards telemetry from edge sensors to the central harbor server. This guide walks through a "
          "production deployment on a single Linux host, from installing the binary to tuning its buffers.")
_INSTALL = ("Download the static binary for your architecture and place it in a directory on the search path. "
            "The relay has no runtime dependencies and runs as an unprivileged user.")
_CODE = "curl -LO https://example.org/relay.tar.gz\ntar xzf relay.tar.gz\n    sudo install relay /usr/local/bin/"
_CONFIG = ("The relay reads its settings from a TOML file. Every option has a default, so an empty file is valid "
           "and starts a relay that listens on all interfaces.")
_PORTS = ("By default the relay listens on port 7411 for sensors and exposes metrics on port 9464. Change either "
          "with the listen and metrics keys when another service already uses them.")
_FAQ = ("Buffers fill up when the central server is unreachable. The relay then spills the oldest batches to "
        "disk and replays them in order once the connection comes back.")

# A documentation page as site generators write them: header navigation, a sidebar table of contents,
# the article (with Sphinx-style permalink anchors on its headings), and a footer.
DOC_PAGE = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Harbor Docs: Deploying the relay</title>
<link rel="stylesheet" href="/site.css"><script>window.analytics = "tracking";</script></head>
<body>
<header class="site-header"><nav class="navbar"><a class="logo" href="/">Harbor</a><ul>{_NAV_LINKS}</ul>
<form role="search"><input placeholder="Search the docs"></form></nav></header>
<div class="container">
<aside class="sidebar"><h4>On this page</h4><ul class="toc">{_TOC_LINKS}</ul></aside>
<main><article class="content">
<h1>Deploying the relay</h1>
<p>{_INTRO}</p>
<h2 id="s0">Installation<a class="headerlink" href="#s0" title="Link to this heading">¶</a></h2>
<p>{_INSTALL}</p>
<pre><code>{_CODE}</code></pre>
<h2 id="s1">Configuration<a class="headerlink" href="#s1" title="Link to this heading">¶</a></h2>
<p>{_CONFIG}</p>
<h3 id="s2">Ports</h3>
<p>{_PORTS}</p>
<ul><li>listen: the sensor port, 7411 by default</li><li>metrics: the Prometheus port, 9464 by default</li></ul>
<h2 id="s3">Frequently asked</h2>
<p>{_FAQ}</p>
</article></main></div>
<footer class="site-footer"><p>Copyright 2026 Harbor Foundation. All rights reserved.</p>
<ul><li><a href="/privacy">Privacy policy</a></li><li><a href="/terms">Terms of service</a></li>
<li><a href="/cookies">Cookie settings</a></li></ul></footer>
</body></html>"""


def test_documentation_page_keeps_the_article_under_its_headings_and_drops_the_site_around_it() -> None:
    title = "Harbor Docs: Deploying the relay"
    blocks = blocks_of(read_html, "deploy.html", DOC_PAGE.encode())
    assert blocks == [
        ("Deploying the relay", _INTRO),
        ("Installation {#s0}", _INSTALL),  # each heading keeps its anchor, for the citation
        ("Installation {#s0}", _CODE),
        ("Configuration {#s1}", _CONFIG),
        ("Ports {#s2}", _PORTS),
        ("Ports {#s2}", "- listen: the sensor port, 7411 by default\n- metrics: the Prometheus port, 9464 by default"),
        ("Frequently asked {#s3}", _FAQ),
    ]
    text = " ".join(text for _, text in blocks)
    assert title not in text  # the page's title names it (the first heading's place), it is no passage
    for boilerplate in [*_NAV, "Appendix", "On this page", "Search the docs", "Copyright", "Privacy policy",
                        "Terms of service", "Cookie settings", "tracking", "¶"]:
        assert boilerplate not in text


def test_heading_permalink_anchors_are_not_part_of_the_heading() -> None:
    page = b'<html><body><h2 id="setup">Setup<a class="anchor" href="#setup">#</a></h2><p>Run it.</p></body></html>'
    assert blocks_of(read_html, "small.html", page) == [("Setup {#setup}", "Run it.")]


def test_a_section_keeps_its_anchor_and_the_address_the_page_gives_itself() -> None:
    """The citation of a web page's passage names its section and opens it: the heading's anchor (its id, an
    <a name> before it, or the id of the <section> it opens) on the page's canonical address."""
    page = """<html><head><meta charset="utf-8"><title>Relay FAQ</title>
<link rel="canonical" href="https://docs.example.org/relay/faq.html#top"></head><body>
<p>Answers to what people ask about the relay most often.</p>
<a name="buffers"></a><h2>Buffers</h2><p>Buffers spill to disk.</p>
<section id="ports"><h2>Ports</h2><p>Port 7411 takes sensors.</p></section>
<h2 id="café &amp; tea">Cafe</h2><p>Unicode ids are encoded.</p>
<h2>No anchor</h2><p>Only the page itself.</p></body></html>""".encode()
    address = "https://docs.example.org/relay/faq.html"
    assert blocks_of(read_html, "faq.html", page) == [
        (f"Relay FAQ {{{address}}}", "Answers to what people ask about the relay most often."),
        (f"Buffers {{{address}#buffers}}", "Buffers spill to disk."),
        (f"Ports {{{address}#ports}}", "Port 7411 takes sensors."),
        (f"Cafe {{{address}#caf%C3%A9%20&%20tea}}", "Unicode ids are encoded."),
        (f"No anchor {{{address}}}", "Only the page itself."),
    ]


def test_only_an_http_address_is_kept_and_without_one_the_anchor_stands_alone() -> None:
    page = (b'<html><head><meta property="og:url" content="javascript:alert(1)"></head>'
            b'<body><h2 id="setup">Setup</h2><p>Run it.</p></body></html>')
    assert blocks_of(read_html, "small.html", page) == [("Setup {#setup}", "Run it.")]


def test_unclosed_tags_parse() -> None:
    """Regression: the stdlib HTML parser took minutes on a 100 KB run of unclosed tags."""
    page = "<html><head><title>Broken</title></head><body><p>Real text survives.</p>" + "<div " * 20_000
    blocks = blocks_in_child(read_html, "broken.html", page.encode())
    assert blocks[:1] == [("Broken", "Real text survives.")]


def test_hostile_meta_charset_declaration_parses() -> None:
    """Regression: the <meta charset> regex was cubic in a run of spaces after 'charset=' in the first 4 KB."""
    head = b"<html><head>" + b"<meta " * 227 + b"charset="
    page = head + b" " * (4096 - len(head)) + b"\n</head><body><p>Real text survives.</p></body></html>"
    blocks = blocks_in_child(read_html, "charset.html", page, limit_s=CHARSET_LIMIT_S)
    assert blocks == [(None, "Real text survives.")]


def _sphinx_code(*parts: str) -> str:
    """Inline code as Sphinx writes it: each literal piece in a <span>, each placeholder in an <em>."""
    pieces = (f"<em><span class='pre'>{part[1:]}</span></em>" if part.startswith("*") else
              f"<span class='pre'>{part}</span>" for part in parts)
    return f"<code class='file docutils literal notranslate'>{''.join(pieces)}</code>"


_MODULE_PATH = (f"Public Python 2 modules must be installed in the system Python 2 modules directory "
                f"{_sphinx_code('/usr/lib/python2.', '*Y', '/dist-packages')}, where "
                f"<kbd>Ctrl+<b>Y</b></kbd> or {_sphinx_code('2.', '*Y')} is the Python 2 version.")


def test_formatting_inside_inline_code_keeps_its_text_in_order() -> None:
    """Regression: trafilatura moved the text of an <em> inside <code> to the end of the paragraph:
    "directory /usr/lib/python2., where Y/dist-packages2. is the Python 2 version.Y" (python-policy.html)."""
    page = DOC_PAGE.replace(f"<p>{_PORTS}</p>", f"<p>{_PORTS}</p>\n<p>{_MODULE_PATH}</p>")
    blocks = blocks_of(read_html, "python-policy.html", page.encode())
    assert "Home" not in " ".join(text for _, text in blocks)  # the main-content path, not the whole page
    assert ("Ports {#s2}", "Public Python 2 modules must be installed in the system Python 2 modules directory "
            "/usr/lib/python2.Y/dist-packages, where Ctrl+Y or 2.Y is the Python 2 version.") in blocks
