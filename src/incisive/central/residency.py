"""``incisive central check``: where the Central Node and its backups are, judged against EU/EEA residency.

Rows are the readiness check's (:class:`incisive.node.check.model.Row`, verdicts, exit code, report JSON), area
``residency``:

* ``residency.hosting``: the hosting country (``central.toml`` ``country``) inside the EU/EEA passes. Outside it
  fails unless the operator recorded the transfer safeguards: ``transfer_scc = true`` (standard contractual
  clauses signed) and ``transfer_tia`` naming an existing document inside the central directory (the transfer
  impact assessment); then it warns, with ``residency.keys``: the master key and the tenants' key rings must stay
  in the EU/EEA (an external KMS there), so that what is hosted abroad is ciphertext only.
* ``residency.backup.<target>``: every backup target of every tenant (``<tenant>/backup/targets.json``) needs its
  country in ``central.toml`` ``backup_locations = {target = "DE"}``, judged like the hosting country.
"""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime
from pathlib import Path

from incisive import __version__
from incisive.central.home import Central
from incisive.common.countries import EU, EU_EEA, in_eu_eea
from incisive.node.backup import config as backup_config
from incisive.node.check.model import Report, Row, Verdict

__all__ = ["EU", "EU_EEA", "check_residency", "in_eu_eea"]

AREA = "residency"


def _tia(central: Central) -> Path | None:
    """The transfer impact assessment, when it names an existing file inside the central directory."""
    name = central.settings.transfer_tia.strip()
    if not name:
        return None
    path = (central.dir / name).resolve()
    if not path.is_relative_to(central.dir) or not path.is_file():
        return None
    return path


def _judge(central: Central, row_id: str, what: str, country: str) -> Row:
    requirement = f"{what} in the EU/EEA, or transfer safeguards recorded"
    if in_eu_eea(country):
        return Row(row_id, AREA, requirement, f"{country} (EU/EEA)", Verdict.PASS)
    scc, tia = central.settings.transfer_scc, _tia(central)
    if scc and tia is not None:
        return Row(row_id, AREA, requirement, f"{country}: outside the EU/EEA; SCC signed, TIA {tia.name}",
                   Verdict.WARN, "keep the master key and key rings in the EU/EEA (only ciphertext abroad)")
    missing = [m for m, ok in (("transfer_scc = true", scc), ("transfer_tia = <document in the central dir>",
                                                              tia is not None)) if not ok]
    return Row(row_id, AREA, requirement, f"{country}: outside the EU/EEA, no transfer safeguards", Verdict.FAIL,
               f"host in the EU/EEA, or record {' and '.join(missing)} in central.toml")


def residency_rows(central: Central) -> list[Row]:
    settings = central.settings
    rows = [_judge(central, "residency.hosting", "Hosting country", settings.country)]
    abroad = not in_eu_eea(settings.country)
    targets: dict[str, list[str]] = {}
    for record in central.tenants():
        for target in backup_config.load(central.tenant_dir(record.id)).targets:
            targets.setdefault(target.name, []).append(record.id)
    for name in sorted(set(targets) | set(settings.backup_locations)):
        country = settings.backup_locations.get(name)
        row_id = f"residency.backup.{name}"
        if country is None:
            rows.append(Row(row_id, AREA, f"Backup target {name!r} location recorded", "no country recorded",
                            Verdict.FAIL, f"add {name} = \"<country>\" to backup_locations in central.toml"))
            continue
        rows.append(_judge(central, row_id, f"Backup target {name!r}", country))
        abroad = abroad or not in_eu_eea(country)
    keys = "Master key and key rings held in the EU/EEA"
    if abroad:
        rows.append(Row("residency.keys", AREA, keys, "data hosted or backed up outside the EU/EEA", Verdict.WARN,
                        "keep secrets/ and keys/ (or the KMS) on EU/EEA premises; abroad holds ciphertext only"))
    else:
        rows.append(Row("residency.keys", AREA, keys, f"with the data in {settings.country}", Verdict.PASS))
    return rows


def check_residency(central: Central) -> Report:
    """The residency report (exit code as ``node check``: 0 pass, 1 warnings, 2 a failure)."""
    started = time.monotonic()
    rows = residency_rows(central)
    return Report(profile="central-residency", host=socket.gethostname(),
                  generated_at=datetime.now(UTC).isoformat(timespec="seconds"), tool_version=__version__,
                  duration_s=time.monotonic() - started, areas=[AREA], rows=rows)
