"""The platform's federated-learning runner: one background thread, one job at a time, one Flower SuperLink.

For each job: start (or reuse) the SuperLink owned by this platform process, queue an ``fl-supernode`` agent job
for every participating node (SuperLink address, bundle name/version/sha256, deadline), wait until the agents
accepted or refused (a refusal is recorded with the node's reason), submit the Flower app, mirror the ServerApp's
``server.json`` / ``rounds.jsonl`` into the job row, then store the final model with its provenance and queue
``fl-stop`` for the nodes. Jobs run one after the other: every SuperNode on the SuperLink takes part in the run.

The SuperLink serves TLS with SuperNode authentication (:mod:`incisive.platform.pki`): the Flower public keys of
the active nodes are registered with it when it starts and before each job, and a revoked node's key is
unregistered within seconds (checked while a job runs), so its SuperNode is refused at its next request.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from incisive.common.fsio import atomic_write_bytes, atomic_write_text
from incisive.common.logging import get_logger
from incisive.common.protocol import JobType
from incisive.federated.deploy import BIN, Federation, FlowerError
from incisive.federated.jobs import Job, JobStore
from incisive.federated.service import provenance as job_provenance
from incisive.platform import pki
from incisive.platform.db import PlatformDb
from incisive.platform.hub import Hub
from incisive.platform.models import FlJob, JobResult, ModelBundle, Node
from incisive.platform.services import fl_jobs, jobs, models, utcnow
from incisive.platform.settings import PlatformSettings

log = get_logger("platform.fl")
SUPERNODE_JOB = JobType.FL_SUPERNODE
STOP_JOB = JobType.FL_STOP
SYNC_KEYS_S = 2.0  # while a job runs: how often revoked nodes' Flower keys are looked for


class JobFailed(Exception):
    pass


class FlRunner:
    def __init__(self, settings: PlatformSettings, db: PlatformDb, hub: Hub) -> None:
        self.settings, self.db, self.hub = settings, db, hub
        self.root = models.fl_home(settings.home)
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.federation: Federation | None = None
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.registered: dict[str, tuple[int, str]] = {}  # node id -> (Flower node id, public key) at the SuperLink
        self._synced = 0.0

    # -- lifecycle --------------------------------------------------------------------------------------------
    def recover(self) -> None:
        """Jobs a previous platform process left active are marked failed."""
        with self.db.session() as s:
            ids = fl_jobs.interrupted(s)
        if ids:
            log.warning("%d FL job(s) interrupted by a platform restart", len(ids))

    def submit(self, job_id: str) -> None:
        with self._lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._loop, name="platform-fl", daemon=True)
                self.thread.start()
        self.queue.put(job_id)

    def close(self) -> None:
        self.stopping.set()
        self.queue.put(None)
        if self.thread is not None:
            self.thread.join(30)
        if self.federation is not None:
            self.federation.stop()
            self.federation = None

    def _loop(self) -> None:
        while not self.stopping.is_set():
            job_id = self.queue.get()
            if job_id is None:
                return
            try:
                self.run(job_id)
            except Exception as exc:  # the job fails, the runner carries on
                log.exception("FL job %s failed", job_id)
                with self.db.session() as s:
                    fl_jobs.finish(s, job_id, "failed", f"{type(exc).__name__}: {exc}"[:500])

    def _tx(self, work: Callable[[Session], Any]) -> Any:
        with self.db.session() as s:
            return work(s)

    # -- the SuperLink ----------------------------------------------------------------------------------------
    def superlink(self) -> tuple[Federation, str]:
        fed = self.federation
        if fed is None or fed.superlink is None or not fed.superlink.alive():
            if fed is not None:
                fed.stop()
            fed = self.federation = Federation(self.root / "superlink", tls=pki.superlink_tls(self.settings))
            fed.start_superlink()
            self.registered = {}
            log.info("SuperLink started on port %d (%s)", fed.port,
                     "TLS, SuperNode authentication" if fed.tls else "plaintext, no SuperNode authentication")
        self.sync_keys(fed)
        return fed, self.settings.fl_superlink_address or f"127.0.0.1:{fed.port}"

    def sync_keys(self, fed: Federation) -> None:
        """Register the Flower keys of active nodes with the SuperLink; unregister revoked (or re-keyed) ones."""
        self._synced = time.monotonic()
        if fed.tls is None:
            return
        with self.db.session() as s:
            rows = s.query(Node.node_id, Node.revoked_at).all()
        active = {n: pki.node_key(self.settings, n) for n, revoked in rows if revoked is None}
        for node_id, (flower_id, key) in list(self.registered.items()):
            if active.get(node_id) != key:
                try:
                    fed.unregister_supernode(flower_id)
                    log.info("Flower key of node %s unregistered (revoked or re-keyed)", node_id)
                except FlowerError as exc:
                    log.warning("could not unregister node %s from the SuperLink: %s", node_id, exc)
                    continue
                del self.registered[node_id]
        for node_id, public in active.items():
            if public and node_id not in self.registered:
                try:
                    self.registered[node_id] = (fed.register_supernode(public, node_id), public)
                except FlowerError as exc:
                    log.warning("could not register node %s with the SuperLink: %s", node_id, exc)

    # -- one job ----------------------------------------------------------------------------------------------
    def run(self, job_id: str) -> None:
        with self.db.session() as s:
            job = fl_jobs.row(s, job_id)
            bundle_row = s.get(ModelBundle, job.bundle_id)
            assert bundle_row is not None
            bundle = models.materialise(bundle_row, self.settings.home)
            spec, op, source = dict(job.spec), job.op, job.source_job
            targets = [n for n, st in job.nodes.items() if st.get("status") == "pending"]
            init = self._trained_copy(s, source) if source else ""
            job.status, job.started_at = "starting", utcnow()
            requester = job.requested_by
        local = self._job_dir(job_id, spec)
        fed, address = self.superlink()
        deadline = time.time() + self.settings.fl_job_timeout_s
        payload = {"fl_job": job_id, "superlink": address, "tls": fed.tls is not None, "model": bundle.manifest.name,
                   "version": bundle.manifest.version, "sha256": bundle.digest, "requester": requester,
                   "project": spec.get("project"), "deadline": deadline}
        accepted: list[str] = []
        try:
            accepted = self._ask_nodes(job_id, targets, payload)
            min_nodes = int(spec.get("min_nodes") or len(accepted))
            if len(accepted) < max(1, min_nodes):
                raise JobFailed(f"{len(accepted)} node(s) accepted; the job needs {max(1, min_nodes)}")
            run_config = self._run_config(local, spec, op, bundle.manifest.name, bundle.manifest.version,
                                          bundle.digest, min_nodes, init)
            run_id = fed.submit(local, run_config)
            self._tx(lambda s: fl_jobs.update(s, job_id, status="running", flower_run_id=run_id))
            state = self._mirror(job_id, local, deadline)
            if state.get("phase") != "completed":
                raise JobFailed(str(state.get("error") or "the ServerApp did not complete"))
            self._complete(job_id, local, op)
        except JobFailed as exc:
            self._stop_run(fed, job_id)
            with self.db.session() as s:
                fl_jobs.finish(s, job_id, "failed", str(exc), self._provenance(s, job_id, local))
        finally:
            self._queue(accepted, STOP_JOB, {"fl_job": job_id}, 600.0)

    def _job_dir(self, job_id: str, spec: dict[str, Any]) -> Job:
        store = JobStore(self.root / "jobs")
        path = store.root / job_id
        path.mkdir(parents=True, exist_ok=True)
        job = Job(path)
        atomic_write_text(path / "job.json", "{}")
        job.update(id=job_id, **spec)
        return job

    def _trained_copy(self, s: Session, source: str) -> str:
        """The source job's final parameters where the ServerApp reads them (``<dir>/model.npz``)."""
        path = self.root / "trained" / source
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path / "model.npz", models.trained(s, source).weights)
        return str(path)

    def _queue(self, node_ids: list[str], kind: str, payload: dict[str, Any], ttl_s: float) -> dict[str, str]:
        if not node_ids:
            return {}
        with self.db.session() as s:
            created = jobs.create(s, None, kind, payload, node_ids, ttl_s)
        loop = self.hub.loop
        for node_id in node_ids:
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self.hub.job_queued, node_id)
        return {n: str(j["id"]) for n, j in created.items()}

    def _ask_nodes(self, job_id: str, targets: list[str], payload: dict[str, Any]) -> list[str]:
        """Queue ``fl-supernode`` for each node; wait for every answer (or the start timeout)."""
        agent_jobs = self._queue(targets, SUPERNODE_JOB, payload, self.settings.fl_start_timeout_s)

        def record(s: Session) -> None:
            for node_id, agent_job in agent_jobs.items():
                fl_jobs.set_node(s, job_id, node_id, agent_job=agent_job, status="asked")
        self._tx(record)
        answers: dict[str, dict[str, Any]] = {}
        end = time.monotonic() + self.settings.fl_start_timeout_s
        while len(answers) < len(agent_jobs) and time.monotonic() < end and not self.stopping.is_set():
            time.sleep(0.3)
            with self.db.session() as s:
                for node_id, agent_job in agent_jobs.items():
                    result = s.get(JobResult, agent_job) if node_id not in answers else None
                    if result is not None:
                        answers[node_id] = dict(result.body)
                        fl_jobs.set_node(s, job_id, node_id, **_answer(result.body))
        missing = [n for n in agent_jobs if n not in answers]
        with self.db.session() as s:
            for node_id in missing:
                fl_jobs.set_node(s, job_id, node_id, status="missing")
        return sorted(n for n, body in answers.items() if body.get("status") == "ok")

    def _run_config(self, local: Job, spec: dict[str, Any], op: str, name: str, version: str, digest: str,
                    min_nodes: int, init: str) -> dict[str, Any]:
        return {"job-dir": str(local.path), "job-id": local.id, "registry": str(models.registry(self.settings.home)
                                                                                 .root),
                "model": name, "version": version, "sha256": digest, "op": op,
                "num-rounds": int(spec.get("rounds", 5)), "strategy": spec.get("strategy", "fedavg"),
                "proximal-mu": float(spec.get("proximal_mu", 0.1)),
                "round-timeout": float(spec.get("round_timeout", 120.0)), "min-nodes": min_nodes,
                "local-epochs": int(spec.get("local_epochs", 0)), "dp-epsilon": float(spec.get("dp_epsilon", 0.0)),
                "dp-delta": float(spec.get("dp_delta", 1e-5)), "secagg": bool(spec.get("secagg", False)),
                "init-model": init, "seed": int(spec.get("seed", 0))}

    def _mirror(self, job_id: str, local: Job, deadline: float) -> dict[str, Any]:
        """Copy the ServerApp's state and rounds into the job row until it finishes; the start and job timeouts
        bound the wait (a SuperNode that never connects must not hold the platform's runner)."""
        start_by = time.monotonic() + self.settings.fl_start_timeout_s
        seen: tuple[int, str] = (-1, "")
        while True:
            state = local.server_state()
            rounds = local.rounds()
            key = (len(rounds), str(state.get("updated_at", "")))
            if key != seen:
                seen = key
                with self.db.session() as s:
                    fl_jobs.update(s, job_id, server=state, rounds=rounds)
            if state.get("finished"):
                return state
            if self.stopping.is_set():
                raise JobFailed("the platform is shutting down")
            if time.time() > deadline:
                raise JobFailed("the job ran past its deadline")
            if not rounds and time.monotonic() > start_by:
                raise JobFailed("training did not start in time (SuperNodes did not connect)")
            if self.federation is not None and time.monotonic() - self._synced > SYNC_KEYS_S:
                self.sync_keys(self.federation)  # a node revoked during the job is cut off now
            time.sleep(0.5)

    def _provenance(self, s: Session, job_id: str, local: Job) -> dict[str, Any]:
        job = fl_jobs.row(s, job_id)
        prov = job_provenance(local)
        prov["refused"] = {**prov["refused"], **{n: st.get("reason", st.get("status")) for n, st in job.nodes.items()
                                                 if st.get("status") in ("refused", "error", "missing", "offline")}}
        prov.update(model=job.spec.get("model"), sha256=job.spec.get("sha256"), op=job.op,
                    rounds=len([r for r in local.rounds() if r.get("phase") == "fit"]),
                    strategy=job.spec.get("strategy", "fedavg"), proximal_mu=job.spec.get("proximal_mu"),
                    privacy={"dp_epsilon": job.spec.get("dp_epsilon") or None,
                             "dp_delta": job.spec.get("dp_delta", 1e-5), "secagg": bool(job.spec.get("secagg"))},
                    source_job=job.source_job, requested_by=job.requested_by)
        return prov

    def _complete(self, job_id: str, local: Job, op: str) -> None:
        def work(s: Session) -> None:
            prov = self._provenance(s, job_id, local)
            job: FlJob = fl_jobs.update(s, job_id, server=local.server_state(), rounds=local.rounds())
            if op == "train":
                if not local.model_path.exists():
                    raise JobFailed("the ServerApp wrote no final model")
                models.add_trained(s, job, local.model_path.read_bytes(), prov)
            fl_jobs.finish(s, job_id, "completed", None, prov)
        self._tx(work)

    def _stop_run(self, fed: Federation, job_id: str) -> None:
        """Stop the job's Flower run (if it was submitted) so that the SuperLink is free for the next job."""
        run_id = self._tx(lambda s: fl_jobs.row(s, job_id).flower_run_id)
        if run_id and fed.superlink is not None and fed.superlink.alive():
            subprocess.run([str(BIN / "flwr"), "stop", str(run_id), "local"], env=fed.env, capture_output=True,
                           timeout=60, check=False)


def _answer(body: dict[str, Any]) -> dict[str, Any]:
    status = body.get("status")
    if status == "ok":
        return {"status": "accepted"}
    return {"status": "refused" if status == "refused" else "error", "reason": str(body.get("error") or "")[:300]}
