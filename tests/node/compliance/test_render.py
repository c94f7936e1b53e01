"""The RoPA as HTML (jinja2, autoescaped) and PDF (headless Debian chromium; content read back with pdftotext),
built from a node holding the synthetic cohort: every Art. 30 section is there, what a person typed stays text,
and neither the HTML nor the PDF holds any PHI value of the cohort. Chromium missing, failing or hanging is a
clear error. Needs /usr/bin/chromium and pdftotext (.ci/run installs chromium and poppler-utils)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from incisive.cli.compliance import app
from incisive.common.errors import ConfigError, InputError
from incisive.node.compliance import processors, render, store
from incisive.node.compliance.ropa import build_ropa
from incisive.node.home import Node
from tests.node.compliance import complete_record, fill, make_pdf
from tests.node.test_phi_scan import _needles

runner = CliRunner()


def tools() -> None:
    missing = [t for t in ("chromium", "pdftotext") if shutil.which(t) is None]
    if missing and not os.environ.get("CI"):
        pytest.skip(f"needs {', '.join(missing)} (apt-get install chromium poppler-utils)")


def pdf_text(path: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True,
                          timeout=60).stdout


def leaks(cohort: Path, blob: bytes) -> list[str]:
    return sorted({n.decode(errors="replace") for n in _needles(cohort) if n in blob})


def test_html_and_pdf_content_without_phi(node: Node, cohort: Path, tmp_path: Path) -> None:
    tools()
    fill(node, cohort)
    complete_record(node.home)
    processors.add_processor(node.home, "CloudCo Inc", "hosting", "US", "2026-01-10",
                             make_pdf(tmp_path / "dpa.pdf"), checklist=["all=yes"])
    html_path, pdf_path = tmp_path / "ropa.html", tmp_path / "ropa.pdf"
    r = runner.invoke(app, ["ropa", "--html", str(html_path), "--pdf", str(pdf_path), "--home", str(node.home)])
    assert r.exit_code == 0, r.output
    html = html_path.read_text()
    assert pdf_path.read_bytes().startswith(b"%PDF-")
    text = pdf_text(pdf_path)
    flat = " ".join(text.split())
    for section in ("Record of processing activities (GDPR Art. 30)", "1. Controller, contact person",
                    "2. Purposes and legal basis", "3. Categories of data subjects", "4. Recipients",
                    "5. Transfers to third countries", "6. Time limits for erasure",
                    "7. Technical and organisational measures", "8. Processors (Art. 28)"):
        assert section in html and section in flat, section
    assert "TRANSFER WITHOUT SAFEGUARDS" in html
    for fact in ("Test Hospital Foundation", "Dora Protect", "Art. 6(1)(e)", "10 years", "CloudCo", "TRANSFER",
                 "lesion", "Pseudonymisation", "Audit chain"):
        assert fact in flat, fact
    for modality in ("CT", "MR", "MG"):
        assert f"{modality} (" in flat
    assert "MISSING" not in flat
    assert leaks(cohort, html.encode()) == []
    assert leaks(cohort, text.encode()) == []
    assert leaks(cohort, pdf_path.read_bytes()) == []


def test_missing_facts_marked_and_typed_text_escaped(sqlite_node: Node, tmp_path: Path) -> None:
    tools()
    store.set_field(sqlite_node.home, "controller-name", '<script>alert("x")</script> & Co')
    html = render.render_ropa(build_ropa(sqlite_node))
    assert "<script>" not in html and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co" in html
    assert "MISSING: record with <code>incisive compliance set legal-basis" in html
    pdf = render.write_report(html, pdf_out=tmp_path / "ropa.pdf")[0]
    flat = " ".join(pdf_text(pdf).split())
    assert '<script>alert("x")</script> & Co' in flat
    assert "MISSING: record with incisive compliance set legal-basis" in flat
    assert "Incomplete: 6 fact(s)" in flat


def test_chromium_missing_failing_or_hanging(sqlite_node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    html = render.render_ropa(build_ropa(sqlite_node))
    monkeypatch.setenv(render.CHROMIUM_ENV, str(tmp_path / "no-such-browser"))
    with pytest.raises(ConfigError, match="apt-get install chromium"):
        render.to_pdf(html, tmp_path / "out.pdf")
    r = runner.invoke(app, ["ropa", "--pdf", str(tmp_path / "out.pdf"), "--home", str(sqlite_node.home)])
    assert isinstance(r.exception, ConfigError)
    monkeypatch.setenv(render.CHROMIUM_ENV, shutil.which("false") or "/bin/false")
    with pytest.raises(render.PdfError, match="printed no PDF"):
        render.to_pdf(html, tmp_path / "out.pdf")
    slow = tmp_path / "slow-browser"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    monkeypatch.setenv(render.CHROMIUM_ENV, str(slow))
    with pytest.raises(render.PdfError, match="within 1 s"):
        render.to_pdf(html, tmp_path / "out.pdf", timeout_s=1)
    assert not (tmp_path / "out.pdf").exists()


def test_output_names_checked(sqlite_node: Node, tmp_path: Path) -> None:
    html = render.render_ropa(build_ropa(sqlite_node))
    with pytest.raises(InputError, match=r"expected a \.pdf"):
        render.write_report(html, pdf_out=tmp_path / "ropa.html")
    with pytest.raises(InputError, match="is a directory"):
        render.write_report(html, html_out=tmp_path)
    assert render.write_report(html, html_out=tmp_path / "ropa.htm") == [tmp_path / "ropa.htm"]
