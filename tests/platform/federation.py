"""A small federation for the disclosure tests: a real platform over HTTP (uvicorn in a thread), real node agents
(each in a thread, each with its own catalogue), and the 38-patient cohort of issue 13, written straight into the
catalogue so that every count is known in advance.

The cohort (one study and one series per patient; cancer type from the clinical record):

| cancer type | F  | M  | modality | note                                                 |
|-------------|----|----|----------|------------------------------------------------------|
| unknown     | 5  | 1  | CT/MR    | the one man is 70-79 with an MR: the differencing target |
| breast      | 10 |    | MG       |                                                      |
| lung        | 5  | 7  | CT       |                                                      |
| prostate    |    | 8  | MR       |                                                      |
| colorectal  |    | 2  | CT       | below k: suppressed                                  |

Age bands cycle over five bands within each group, so every (modality, cancer type, sex, age band) combination
has fewer than 5 patients.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from incisive.node.agent import Agent
from incisive.node.agent_link import enrol
from incisive.node.catalogue.models import ClinicalRecord, Patient, Series, Study
from incisive.node.home import Node
from incisive.platform.home import Platform
from incisive.platform.server import ThreadedServer
from incisive.platform.services import nodes, users
from tests.node.test_agent import Running, fast_settings, wait_for
from tests.platform.conftest import invite, make_platform

BANDS = ("40-49", "50-59", "60-69", "70-79", "80-89")
GROUPS: list[tuple[str | None, str, int, tuple[str, ...]]] = [  # cancer type, sex, patients, modalities (cycled)
    (None, "F", 5, ("CT", "MR")),
    ("breast", "F", 10, ("MG",)),
    ("lung", "F", 5, ("CT",)),
    ("lung", "M", 7, ("CT",)),
    ("prostate", "M", 8, ("MR",)),
    ("colorectal", "M", 2, ("CT",)),
]
PATIENTS = 38


def fill_attack_cohort(node: Node, prefix: str = "P") -> None:
    """Write the 38 patients into the node's catalogue (pseudonyms ``<prefix>000``...)."""
    rows: list[tuple[str | None, str, str, str]] = []
    for cancer, sex, n, modalities in GROUPS:
        rows += [(cancer, sex, BANDS[i % len(BANDS)], modalities[i % len(modalities)]) for i in range(n)]
    rows.append((None, "M", "70-79", "MR"))  # the one man whose cancer type is unknown
    assert len(rows) == PATIENTS
    with node.catalogue.session() as s:
        for i, (cancer, sex, band, modality) in enumerate(rows):
            pseudonym = f"{prefix}{i:03d}"
            patient = Patient(pseudonym=pseudonym, sex=sex, age_band=band)
            s.add(patient)
            s.flush()
            study = Study(study_uid=f"2.25.{prefix.encode().hex()}{i}1", patient_id=patient.id)
            s.add(study)
            s.flush()
            s.add(Series(series_uid=f"2.25.{prefix.encode().hex()}{i}2", study_id=study.id, modality=modality))
            s.add(ClinicalRecord(pseudonym=pseudonym, cancer_type=cancer, sex=sex, age_band=band, labels={},
                                 fields={}))


@dataclass
class Federation:
    platform: Platform
    server: ThreadedServer
    nodes: list[Node]
    agents: list[Running] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)

    def post(self, path: str, body: dict[str, Any], user: str = "rita", method: str = "POST") -> httpx.Response:
        return httpx.request(method, self.server.url + path, json=body, timeout=60,
                             headers={"Authorization": f"Bearer {self.tokens[user]}"})

    def count(self, by: list[str], **extra: Any) -> httpx.Response:
        return self.post("/api/v1/queries/count", {"by": by, **extra})

    def ok(self, by: list[str], **extra: Any) -> dict[str, Any]:
        r = self.count(by, **extra)
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    def audit(self) -> list[dict[str, Any]]:
        r = httpx.get(self.server.url + "/api/v1/audit/export", timeout=30,
                      headers={"Authorization": f"Bearer {self.tokens['audrey']}"})
        assert r.status_code == 200, r.text
        return [json.loads(line) for line in r.text.splitlines() if line.strip()]


def node_ids(fed: Federation) -> list[str]:
    return [n.settings.node_id for n in fed.nodes]


@contextlib.contextmanager
def federation(root: Path, platform_url: str, catalogue_urls: list[str], agent_class: list[type[Agent]] | None = None,
               budget: float = 1.0, **platform_settings: Any) -> Iterator[Federation]:
    """Platform + one real agent per catalogue URL, each node filled with the attack cohort; all online."""
    p = make_platform(root / "platform", platform_url, **platform_settings)
    server = ThreadedServer(p.settings, p.db).start()
    fed = Federation(p, server, [])
    try:
        with p.db.session() as s:
            fed.tokens["rita"] = users.add_user(s, "rita", "researcher", budget, "test")[1]
            fed.tokens["dora"] = users.add_user(s, "dora", "dp-manager", 0.0, "test")[1]
            fed.tokens["audrey"] = users.add_user(s, "audrey", "auditor", 0.0, "test")[1]
        for i, url in enumerate(catalogue_urls):
            node = Node.init(root / f"node{i}", provider=f"Hospital {'ABCDEFGH'[i]}", catalogue_url=url)
            fill_attack_cohort(node, prefix="ABCDEFGH"[i])
            enrol(node, server.url, invite(p, node.settings.provider))
            fed.nodes.append(node)
            cls = (agent_class or [])[i] if agent_class and i < len(agent_class) else Agent
            fed.agents.append(Running(cls(node, fast_settings(node))))

        def online() -> bool:
            with p.db.session() as s:
                listed = nodes.list_nodes(s, 60)
            return len(listed) == len(fed.nodes) and all(n["status"] == "online" for n in listed)

        wait_for(online, 60, "agents online")
        yield fed
    finally:
        for running in fed.agents:
            running.stop()
        server.stop()
        for node in fed.nodes:
            node.catalogue.dispose()
        p.db.dispose()
    for running in fed.agents:
        assert running.error is None, running.error
