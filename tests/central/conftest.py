"""Fixtures of the Central Node tests (and of the serve, upload and federation tests that reuse them).

* ``central``: a new Central Node on SQLite (one catalogue file per tenant), file master key;
* ``central_pg``: the same on a throw-away PostgreSQL database (one schema per tenant);
* ``central_db``: ``central`` and ``central_pg`` in turn (parametrized; the PostgreSQL case is marked);
* ``two_tenants``: ``(central, [(record, manager_token), (record, manager_token)])`` with "Hospital D" (IT) and
  "Hospital E" (ES), parametrized over SQLite and PostgreSQL;
* ``small_cohort``: a few synthetic patients (identified DICOM + clinical CSV), made once per session;
* :func:`fill_tenant` puts a cohort into a tenant through the node's own import (de-identified there, sealed
  under the tenant's key): the data a tenant holds after its provider uploaded it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from incisive.central.home import Central
from incisive.central.registry import TenantRecord
from incisive.central.tenants import add_tenant
from incisive.demo.synth import CohortSpec, generate_cohort
from incisive.node.home import Node
from incisive.node.ingest.clinical import import_clinical
from incisive.node.ingest.dicom_import import import_dicom

Tenants = tuple[Central, list[tuple[TenantRecord, str]]]


def make_central(path: Path, catalogue_url: str = "", **kwargs: Any) -> Central:
    return Central.init(path, country=kwargs.pop("country", "DE"), provider="Hosting GmbH", region="eu-central",
                        catalogue_url=catalogue_url, **kwargs)


@pytest.fixture
def central(tmp_path: Path) -> Iterator[Central]:
    c = make_central(tmp_path / "central")
    yield c
    c.close()


@pytest.fixture
def central_pg(tmp_path: Path, pg_database: str) -> Iterator[Central]:
    c = make_central(tmp_path / "central", pg_database)
    yield c
    c.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def central_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Central]:
    """A Central Node on each catalogue backend in turn."""
    url = "" if request.param == "sqlite" else str(request.getfixturevalue("pg_database"))
    c = make_central(tmp_path / "central", url)
    yield c
    c.close()


@pytest.fixture
def two_tenants(central_db: Central) -> Tenants:
    d = add_tenant(central_db, "Hospital D", "IT", "IT lead <it@hospital-d.example>", allowed_aes=["PACS_D"])
    e = add_tenant(central_db, "Hospital E", "ES", "IT lead <it@hospital-e.example>", allowed_aes=["PACS_E"])
    return central_db, [d, e]


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("central-cohort")
    generate_cohort(out, CohortSpec(patients=5, seed=5, size=16, ct_slices=2, mr_slices=1))
    return out


def fill_tenant(central: Central, tenant_id: str, cohort: Path) -> Node:
    """Import ``cohort`` into the tenant (its node de-identifies it with the tenant's key, then seals it)."""
    node = central.tenant_node(tenant_id)
    importer = Node(node.settings.model_copy(update={"door": "deidentify"}))
    try:
        report = import_dicom(importer, cohort / "dicom", workers=1)
        assert report.counts["imported"] > 0, report.as_dict()
        import_clinical(importer, cohort / "clinical.csv", drop=["patient_name"])
    finally:
        if "catalogue" in importer.__dict__:
            importer.catalogue.dispose()
    return node
