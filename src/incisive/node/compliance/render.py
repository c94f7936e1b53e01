"""Reports for people: HTML from jinja2 templates (``node/templates``, autoescaped) and PDF by headless Chromium.

:func:`render_html` renders any compliance template (the RoPA here; the breach report uses the same); :func:`to_pdf`
prints an HTML document to PDF with Debian's ``chromium`` (``--headless --print-to-pdf``), in a fresh profile
directory that is removed afterwards, with no network (``--proxy-server`` to nowhere) and a time limit. Chromium
missing is a :class:`ConfigError` that says which package to install.

The templates get the record only; the record holds no PHI, and autoescaping keeps whatever a person typed into
a field (a controller's name) text, never markup.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from incisive.common.errors import ConfigError, IncisiveError, InputError
from incisive.common.fsio import atomic_write_bytes, atomic_write_text

__all__ = ["CHROMIUM_ENV", "PdfError", "chromium", "render_html", "render_ropa", "to_pdf", "write_report"]

CHROMIUM_ENV = "INCISIVE_CHROMIUM"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
PDF_TIMEOUT_S = 90.0

_env = Environment(loader=PackageLoader("incisive.node", "templates"), autoescape=True, undefined=StrictUndefined,
                   trim_blocks=True, lstrip_blocks=True)


class PdfError(IncisiveError):
    """Chromium did not produce the PDF."""


def render_html(template: str, context: Mapping[str, Any]) -> str:
    """A template of ``incisive/node/templates`` rendered with ``context`` (autoescaped)."""
    return _env.get_template(template).render(**context)


def render_ropa(record: Mapping[str, Any]) -> str:
    """The Art. 30 record as one self-contained HTML page (print styles for A4)."""
    return render_html("ropa.html.j2", {"r": record, "title": "Record of processing activities (GDPR Art. 30)"})


def chromium() -> str:
    """The headless browser that prints PDFs: ``$INCISIVE_CHROMIUM``, else Debian's ``/usr/bin/chromium``."""
    configured = os.environ.get(CHROMIUM_ENV)
    for candidate in ((configured,) if configured else CHROMIUM_CANDIDATES):
        found = shutil.which(candidate)
        if found:
            return found
    raise ConfigError("PDF output needs Chromium: apt-get install chromium (or set $INCISIVE_CHROMIUM to a "
                      "Chromium/Chrome binary); HTML output works without it")


def to_pdf(html: str, out: Path, timeout_s: float = PDF_TIMEOUT_S) -> Path:
    """Print ``html`` to the PDF file ``out`` (replaced atomically) with headless Chromium."""
    binary = chromium()
    with tempfile.TemporaryDirectory(prefix="incisive-pdf-") as tmp:
        page, pdf, profile = Path(tmp) / "report.html", Path(tmp) / "report.pdf", Path(tmp) / "profile"
        page.write_text(html, encoding="utf-8")
        argv = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-extensions",
                "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
                "--disable-sync", "--metrics-recording-only", "--proxy-server=127.0.0.1:9",
                "--no-pdf-header-footer", f"--user-data-dir={profile}", f"--print-to-pdf={pdf}",
                page.as_uri()]
        env = {**os.environ, "HOME": tmp, "XDG_CONFIG_HOME": tmp, "XDG_CACHE_HOME": tmp}
        try:
            proc = subprocess.run(argv, capture_output=True, timeout=timeout_s, env=env, check=False,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise PdfError(f"Chromium did not print the PDF within {timeout_s:.0f} s") from None
        data = pdf.read_bytes() if pdf.is_file() else b""
        if not data.startswith(b"%PDF-"):
            tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise PdfError(f"Chromium printed no PDF (exit {proc.returncode}): {tail[0][:200]}")
    atomic_write_bytes(out, data)
    return out


def write_report(html: str, *, html_out: Path | None = None, pdf_out: Path | None = None) -> list[Path]:
    """Write the HTML and/or the PDF of a rendered report; returns what was written."""
    written = []
    for path, suffix in ((html_out, ".html"), (pdf_out, ".pdf")):
        if path is not None and path.is_dir():
            raise InputError(f"{path.name} is a directory")
        if path is not None and path.suffix.lower() not in (suffix, ".htm" if suffix == ".html" else suffix):
            raise InputError(f"{path.name}: expected a {suffix} file name")
    if html_out is not None:
        atomic_write_text(html_out, html)
        written.append(html_out)
    if pdf_out is not None:
        written.append(to_pdf(html, pdf_out))
    return written
