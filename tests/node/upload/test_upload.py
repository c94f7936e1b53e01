"""``incisive upload`` against a real server: a node whose door verifies (a Central Node tenant), served over HTTP.

What arrives is de-identified (no PHI value of the cohort anywhere the server wrote), a rerun sends nothing (the
journal), a rerun without the journal is answered with duplicates (same key, same bytes), a connection cut in the
middle of a request resumes, an identified instance posted directly is refused with the reason, and a cut-off
body stores nothing.
"""

from __future__ import annotations

import io
import json
import socket
import time
from pathlib import Path

import httpx
import pydicom
import pytest
from sqlalchemy import MetaData, func, select
from typer.testing import CliRunner

from incisive.cli import app
from incisive.common.errors import ConfigError
from incisive.node.catalogue.models import Instance, QuarantineItem
from incisive.node.home import Node
from incisive.node.net.tls import TlsFiles
from incisive.node.upload.client import ConnectionLost, RemoteRefused, multipart
from incisive.node.upload.home import Uploader
from incisive.node.upload.journal import Journal
from incisive.node.upload.run import upload
from tests.node.net.pki import make_ca
from tests.node.test_phi_scan import _needles
from tests.node.upload.conftest import Central, CuttingProxy, make_verify, serving

STOW = "/dicom-web/studies"


def _count(central: Central, model: type[Instance] | type[QuarantineItem] = Instance) -> int:
    with central.node.catalogue.session() as s:
        return s.scalar(select(func.count(model.id))) or 0


def _files(cohort: Path) -> list[Path]:
    return sorted(p for p in (cohort / "dicom").rglob("*") if p.is_file())


def _expected(cohort: Path) -> tuple[int, int]:
    """(instances the uploader sends, instances it holds back): US is a quarantine modality."""
    modalities = [str(pydicom.dcmread(p, stop_before_pixels=True).Modality) for p in _files(cohort)]
    held = sum(m == "US" for m in modalities)
    return len(modalities) - held, held


def _leaks(cohort: Path, central: Central, uploader: Uploader) -> list[tuple[str, str]]:
    central.node.catalogue.dispose()
    blobs: dict[str, bytes] = {}
    for root in (central.node.home, uploader.home):
        for path in root.rglob("*"):
            if path.is_file() and path.name != "pseudonym.key":
                blobs[str(path)] = path.read_bytes()
    if central.node.catalogue.dialect != "sqlite":
        meta = MetaData()
        meta.reflect(central.node.catalogue.engine)
        with central.node.catalogue.engine.connect() as conn:
            for t in meta.sorted_tables:
                blobs[f"db:{t.name}"] = repr(conn.execute(select(t)).all()).encode()
    needles = _needles(cohort)
    return sorted({(where, n.decode(errors="replace")) for where, blob in blobs.items() for n in needles
                   if n in blob})


def test_upload_arrives_deidentified_and_reruns_send_nothing(central: Central, uploader: Uploader,
                                                              cohort: Path) -> None:
    sent, held = _expected(cohort)
    first = upload(uploader, cohort / "dicom", central.url, central.token)
    assert (first.sent, first.duplicates, first.quarantined, first.skipped) == (sent, 0, held, 0)
    assert first.rejected == {} and first.unacknowledged == 0 and first.batches >= 3 and first.bytes > 0
    assert _count(central) == sent and _count(central, QuarantineItem) == 0
    assert [p for p in (central.node.home / "store" / "objects").rglob("*") if p.is_file()]
    assert _leaks(cohort, central, uploader) == []
    with central.node.catalogue.session() as s:
        pseudonyms = set(s.scalars(select(Instance.sop_uid)))
    assert all(uid.startswith("2.25.") for uid in pseudonyms)

    again = upload(uploader, cohort / "dicom", central.url, central.token)
    assert (again.sent, again.duplicates, again.batches, again.skipped) == (0, 0, 0, len(_files(cohort)))

    uploader.journal_path.unlink()
    for wal in uploader.home.glob("journal.db-*"):
        wal.unlink()
    fresh = upload(uploader, cohort / "dicom", central.url, central.token)
    assert (fresh.sent, fresh.duplicates, fresh.quarantined) == (0, sent, held)
    assert _count(central) == sent


def test_a_cut_in_the_middle_of_a_request_resumes(proxy: CuttingProxy, sqlite_central: Central,
                                                  uploader: Uploader, cohort: Path) -> None:
    sent, held = _expected(cohort)
    uploader.settings.batch_bytes = 32 * 1024
    proxy.cut_after(int(3.5 * 32 * 1024))  # inside the fourth request's body
    with pytest.raises(ConnectionLost) as lost:
        upload(uploader, cohort / "dicom", proxy.url, sqlite_central.token)
    assert "run the same command again" in str(lost.value) and sqlite_central.token not in str(lost.value)
    journal = Journal(uploader.journal_path, uploader.pseudonymiser.digest("upload-destination", proxy.url))
    acknowledged = journal.counts().get("sent", 0)
    journal.close()
    assert 0 < acknowledged < sent
    assert _count(sqlite_central) == acknowledged  # the cut-off body stored nothing
    proxy.restore()
    resumed = upload(uploader, cohort / "dicom", proxy.url, sqlite_central.token)
    assert resumed.sent + acknowledged == sent and resumed.duplicates == 0
    assert resumed.skipped >= acknowledged and resumed.quarantined <= held
    assert _count(sqlite_central) == sent
    assert _count(sqlite_central, QuarantineItem) == 0


def _post(central: Central, parts: list[bytes]) -> httpx.Response:
    body, content_type = multipart(parts)
    return httpx.post(central.url + STOW, content=body, timeout=60,
                      headers={"Content-Type": content_type, "Authorization": f"Bearer {central.token}"})


def test_identified_instances_are_refused_at_the_door(sqlite_central: Central, uploader: Uploader,
                                                      cohort: Path) -> None:
    raw = _files(cohort)[0].read_bytes()
    refused = _post(sqlite_central, [raw])
    assert refused.status_code == 400
    assert refused.json()["detail"] == ("part 1 rejected: not de-identified: PatientIdentityRemoved is not YES; "
                                        "nothing stored")
    claimed = pydicom.dcmread(io.BytesIO(raw))
    claimed.PatientIdentityRemoved, claimed.DeidentificationMethod = "YES", "claimed"
    out = io.BytesIO()
    claimed.save_as(out, enforce_file_format=True)
    detail = _post(sqlite_central, [out.getvalue()]).json()["detail"]
    assert detail.startswith("part 1 rejected: not de-identified: ") and "present" in detail
    assert not any(n.decode(errors="ignore") in detail for n in _needles(cohort))
    assert _count(sqlite_central) == 0

    # a misconfigured uploader keeps a private attribute (an MRN) the tenant does not accept: every instance is
    # refused by the door, with the attribute named, and nothing of it is stored
    sent, held = _expected(cohort)
    uploader.settings.safe_private_tags = ["ACME HOSPITAL PACS:0029,1011"]
    report = upload(uploader, cohort / "dicom", sqlite_central.url, sqlite_central.token)
    reason = ("Central Node: not de-identified: private attribute (0029,1011) present (private attributes are "
              "removed)")
    assert (report.sent, dict(report.rejected), report.quarantined) == (0, {reason: sent}, held)
    assert _count(sqlite_central) == 0 and _leaks(cohort, sqlite_central, uploader) == []
    uploader.settings.safe_private_tags = []  # fixed: the refused ones are sent again, the rest stays done
    fixed = upload(uploader, cohort / "dicom", sqlite_central.url, sqlite_central.token)
    assert (fixed.sent, fixed.skipped, dict(fixed.rejected)) == (sent, held, {})
    assert _count(sqlite_central) == sent


def test_a_cut_off_body_stores_nothing(sqlite_central: Central, uploader: Uploader, cohort: Path) -> None:
    parts = _deidentified(uploader, cohort)[:3]
    assert len(parts) == 3
    body, content_type = multipart(parts)
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {sqlite_central.token}"}
    no_end = httpx.post(sqlite_central.url + STOW, content=body[:-len(b"--\r\n") - 40], headers=headers, timeout=60)
    assert no_end.status_code == 400 and "truncated upload" in no_end.json()["detail"]
    # the connection closes before the declared Content-Length arrived
    host, port = "127.0.0.1", sqlite_central.port
    with socket.create_connection((host, port)) as s:
        head = (f"POST {STOW} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
                f"Authorization: Bearer {sqlite_central.token}\r\nContent-Length: {len(body)}\r\n\r\n")
        s.sendall(head.encode() + body[:len(body) // 2])
    time.sleep(1.0)
    objects = sqlite_central.node.home / "store" / "objects"
    assert _count(sqlite_central) == 0 and not [p for p in objects.rglob("*") if p.is_file()]
    assert httpx.get(sqlite_central.url + "/health").status_code == 200
    assert _post(sqlite_central, parts).status_code == 200 and _count(sqlite_central) == 3


def _deidentified(uploader: Uploader, cohort: Path) -> list[bytes]:
    from incisive.node.upload.run import _outcomes

    paths = [p for p in _files(cohort) if "US" not in str(pydicom.dcmread(p, stop_before_pixels=True).Modality)]
    return [o.data for o in _outcomes(paths[:5], uploader.worker_config(), 2) if o.status == "stored"]


def test_cli_upload_and_init(sqlite_central: Central, tmp_path: Path, cohort: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    made = runner.invoke(app, ["upload", "init", str(tmp_path / "up"), "--provider", "Test Hospital", "--json"])
    assert made.exit_code == 0, made.output
    home = tmp_path / "up"
    assert home.stat().st_mode & 0o777 == 0o700 and (home / "secrets" / "pseudonym.key").stat().st_mode & 0o777 == 0o600
    again = runner.invoke(app, ["upload", "init", str(home), "--provider", "Test Hospital"])
    assert again.exit_code != 0
    monkeypatch.setenv("INCISIVE_UPLOADER", str(home))
    monkeypatch.setenv("INCISIVE_UPLOAD_TOKEN", sqlite_central.token)
    done = runner.invoke(app, ["upload", str(cohort / "dicom"), "--clinical", str(cohort / "clinical.csv"),
                               "--drop", "patient_name", "--to", sqlite_central.url, "--json"])
    # a plain node has no /tenant/v1/clinical route: the run stops with the status before any DICOM is sent
    assert isinstance(done.exception, RemoteRefused) and "404" in str(done.exception), done.output
    assert RemoteRefused.exit_code == 2 and _count(sqlite_central) == 0
    assert sqlite_central.token not in done.output and sqlite_central.token not in str(done.exception)
    result = runner.invoke(app, ["upload", str(cohort / "dicom"), "--to", sqlite_central.url, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    sent, held = _expected(cohort)
    assert (summary["sent"], summary["quarantined"], summary["rejected_total"]) == (sent, held, 0)
    assert set(summary) >= {"sent", "duplicates", "rejected", "quarantined", "bytes", "seconds"}
    assert sqlite_central.token not in result.output
    (home / "journal.db").unlink()  # else nothing is left to send
    bad = runner.invoke(app, ["upload", str(cohort / "dicom"), "--to", sqlite_central.url, "--token", "inc_wrong"])
    assert isinstance(bad.exception, RemoteRefused) and "401" in str(bad.exception)
    assert "inc_wrong" not in bad.output + str(bad.exception)
    plain = runner.invoke(app, ["upload", str(cohort / "dicom"), "--to", "http://central.example"])
    assert isinstance(plain.exception, ConfigError) and "https" in str(plain.exception)


def test_https_with_a_private_ca(sqlite_node: Node, uploader: Uploader, cohort: Path, tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "pki", "central-ca")
    server = ca.issue("central", server=True)
    with serving(make_verify(sqlite_node), TlsFiles(server.cert, server.key)) as central:
        with pytest.raises(RemoteRefused, match="TLS certificate is not trusted"):  # no retries: a trust problem
            upload(uploader, cohort / "dicom", central.url, central.token)
        report = upload(uploader, cohort / "dicom", central.url, central.token, ca_file=ca.cert)
        assert report.sent == _expected(cohort)[0] and report.retries == 0
