"""The node's DICOMweb token check is throttled too (issue 16 item 4): guessed tokens get 429 with Retry-After
after a few failures, and the node's audit log holds one aggregated entry per source and window, not one each."""

from __future__ import annotations

from collections import Counter

import httpx

from incisive.common.audit_log import NodeAudit
from tests.node.api.conftest import Api


def test_guessed_tokens_are_throttled_and_aggregated(sqlite_api: Api) -> None:
    api = sqlite_api
    log = NodeAudit(api.node.home)
    before = len(list(log.entries())) if log.path.exists() else 0
    codes: Counter[int] = Counter()
    retry = set()
    with httpx.Client(base_url=api.url, timeout=30) as client:
        for i in range(60):
            r = client.get("/dicom-web/studies", headers={"Authorization": f"Bearer inc_guess{i}"})
            codes[r.status_code] += 1
            if r.status_code == 429:
                retry.add(r.headers.get("retry-after"))
        assert codes[429] >= 40 and set(codes) <= {401, 429}, dict(codes)
        assert None not in retry
        r = client.get("/dicom-web/studies", headers={"Authorization": f"Bearer {api.viewer}"})
        assert r.status_code == 429, "a source in back-off is refused even with a valid token"
    entries = [e for e in log.entries()][before:]
    failed = [e for e in entries if e["action"] == "api.auth"]
    assert 1 <= len(failed) <= 2, [e["action"] for e in entries]
    assert failed[0]["outcome"] == "refused" and failed[0]["details"]["kind"] == "token"
