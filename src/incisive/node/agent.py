"""``incisive node agent``: the node's outbound-only link to the platform.

* long-polls ``POST /agent/v1/exchange`` (results delivered and jobs fetched in one signed request; the platform
  holds it until a job is there or the wait ends);
* runs each job **at most once** (its id is recorded durably in ``agent/state.db`` before it runs) after checking
  the node's own policy, and delivers the result **at least once** (kept and re-sent until acknowledged);
* runs a Flower SuperNode in the background for ``fl-supernode`` jobs (see :mod:`incisive.node.fl.supernodes`);
* runs inference for ``infer`` jobs; results stay at the node, at most a summary goes back
  (see :mod:`incisive.node.fl.infer_jobs`);
* sends heartbeats (software version, free disk, last verified backup age, readiness summary, data summary,
  whether bundle code can be sandboxed here: ``sandbox`` ok / off / unavailable with the reason, open
  personal-data breaches with their 72 h deadlines: ``breaches``);
* reconnects with exponential backoff and full jitter when the platform is unreachable or restarting; stops
  when the platform says this node is revoked (401/403).
"""

from __future__ import annotations

import random
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any

from incisive import __version__
from incisive.common import signing
from incisive.common.audit_log import NodeAudit
from incisive.common.errors import IncisiveError
from incisive.common.exit_codes import ExitCode
from incisive.common.logging import get_logger
from incisive.common.protocol import Job, JobType, Result, UnknownJobType
from incisive.federated.sandbox import unavailable as sandbox_unavailable
from incisive.node import aggregates
from incisive.node.agent_link import AGENT_DIR, AgentSettings, LinkError, SignedClient, agent_key_path
from incisive.node.agent_state import AgentState
from incisive.node.catalogue import queries
from incisive.node.compliance.breach import heartbeat_summary
from incisive.node.disclosure import Guard, Refused
from incisive.node.fl.infer_jobs import run_infer
from incisive.node.fl.supernodes import Supernodes
from incisive.node.home import Node
from incisive.node.overlap import OverlapLog
from incisive.node.policy import Policy, load_policy

log = get_logger("agent")
SANDBOX_PROBE_S = 300.0


class AgentRevoked(IncisiveError):
    exit_code = ExitCode.AGENT_REVOKED


def backoff_delay(failures: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, min(cap, base·2^(failures-1))]."""
    ceiling = min(cap, base * (2 ** max(0, failures - 1)))
    return (rng or random).uniform(0, ceiling)


def _guard(policy: Policy, payload: dict[str, Any], overlap: OverlapLog | None) -> Guard:
    k = policy.effective_k(int(payload.get("k") or 0))
    epsilon = payload.get("epsilon")
    if epsilon is None and policy.require_dp:
        raise Refused("require_dp", "refused by rule require_dp: this node answers noisy counts only (give ε)")
    session = None
    if policy.overlap_control and epsilon is None and overlap is not None:
        session = overlap.session(str(payload.get("requester", "")), payload.get("project"),
                                  str(payload.get("unit", "patients")), k)
    return Guard(k=k, min_subset=policy.min_subset, rounding=policy.rounding, overlap=session,
                 epsilon=None if epsilon is None else float(epsilon), key=overlap.key if overlap else b"")


def run_job(node: Node, job: dict[str, Any], overlap: OverlapLog | None = None) -> dict[str, Any]:
    """A federated aggregate (``count`` / ``summary``): policy first, then the computation; the reply body
    (:class:`incisive.common.protocol.Result`) is what goes back to the platform. Any other job type is refused
    here by name (the agent dispatches those: :meth:`Agent.handlers`).

    ``overlap``: the node's overlap log (opened here for this one job when not given)."""
    return run_query(node, Job.parse(job), overlap).body()


def run_query(node: Node, job: Job, overlap: OverlapLog | None = None) -> Result:
    try:
        kind = job.kind()
    except UnknownJobType as exc:
        return Result.refused(str(exc))
    if kind not in (JobType.COUNT, JobType.SUMMARY):
        return Result.refused(f"job type {kind.value!r} is not a federated aggregate")
    payload = job.payload
    policy = load_policy(node.home)
    refusal = policy.check(kind.value, str(payload.get("requester", "")), payload.get("project"))
    if refusal is not None:
        return Result.refused(refusal[1], rule=refusal[0])
    k = policy.effective_k(int(payload.get("k") or 0))
    own = overlap is None and kind is JobType.COUNT
    overlap_log = OverlapLog(node.home) if own else overlap
    try:
        with node.catalogue.session() as s:
            if kind is JobType.COUNT:
                result = aggregates.count(s, list(payload.get("by") or []), payload.get("where"),
                                         str(payload.get("unit", "patients")), k,
                                         _guard(policy, payload, overlap_log))
            else:
                result = aggregates.summary(s, str(payload.get("metric", "")), k)
    except Refused as exc:
        return Result.refused(str(exc)[:300], rule=exc.rule)
    except ValueError as exc:
        return Result.failed(str(exc)[:300])
    except Exception as exc:  # never ship a traceback (it could quote data); the type is enough
        log.exception("job %s failed", job.id)
        return Result.failed(f"job failed on the node ({type(exc).__name__})")
    finally:
        if own and overlap_log is not None:
            overlap_log.close()
    return Result.ok(result)


def query_spec(job: dict[str, Any]) -> dict[str, Any]:
    """The whole question of a job, as recorded in the node's audit log."""
    payload = job.get("payload") or {}
    if job.get("type") == JobType.COUNT:
        return {name: payload.get(name) for name in ("by", "where", "unit", "epsilon", "project", "k")}
    if job.get("type") == JobType.SUMMARY:
        return {name: payload.get(name) for name in ("metric", "project", "k")}
    return {"project": payload.get("project")}


class Agent:
    def __init__(self, node: Node, settings: AgentSettings | None = None) -> None:
        self.node = node
        self.settings = settings or AgentSettings.load(node.home)
        self.client = SignedClient(self.settings, signing.read_private_key(agent_key_path(node)),
                                   timeout_s=self.settings.poll_wait_s + 15)
        self.state = AgentState(node.home / AGENT_DIR / "state.db")
        self.fl = Supernodes(node, self.client)
        self.audit = NodeAudit(node.home)
        self.stop_event = threading.Event()
        self.overlap = OverlapLog(node.home)
        self._readiness: dict[str, Any] | None = None
        self._readiness_at = 0.0
        self._sandbox: dict[str, Any] | None = None
        self._sandbox_at = 0.0
        # the one dispatch table: every JobType has its handler here; a type not in it is refused by name
        self.handlers: dict[JobType, Callable[[Job], Result]] = {
            JobType.COUNT: self._query, JobType.SUMMARY: self._query,
            JobType.FL_SUPERNODE: self.fl.run, JobType.FL_STOP: self.fl.run,
            JobType.INFER: self._infer,  # runs here, in the poll loop: one inference at a time per node
        }

    # -- health -----------------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"version": __version__,
                                   "disk_free_bytes": shutil.disk_usage(self.node.home).free}
        try:
            from incisive.node.backup.health import backup_health
            payload["backup_age_days"] = backup_health(self.node.home).get("verified_age_days")
        except Exception:
            payload["backup_age_days"] = None
        try:
            with self.node.catalogue.session() as s:
                stats = queries.stats(s)
            payload["data"] = {k: v for k, v in stats.items() if k != "by_modality"}
            payload["data"]["modalities"] = sorted(m["modality"] for m in stats["by_modality"])
        except IncisiveError:
            payload["data"] = None
        policy = load_policy(self.node.home)
        payload["policy"] = {"participate": policy.participate, "min_cell_count": policy.min_cell_count,
                             "job_types": policy.job_types}
        payload["readiness"] = self._readiness_summary()
        payload["sandbox"] = self._sandbox_summary(policy)
        try:  # open personal-data breaches: id, 72 h deadline, hours left, authority notified (no free text)
            payload["breaches"] = heartbeat_summary(self.node)
        except Exception:  # an unreadable breach directory must not stop heartbeats
            log.exception("breach summary failed")
            payload["breaches"] = None
        return payload

    def _sandbox_summary(self, policy: Policy) -> dict[str, Any]:
        """``{"state": "ok" | "off" | "unavailable", "reason": …}``: can this node run bundle code caged (the bwrap
        probe is re-run at most every SANDBOX_PROBE_S)."""
        mode = policy.sandbox.mode
        if mode == "off":
            return {"state": "off", "reason": "the operator set [sandbox] mode = \"off\": bundle code runs uncaged"}
        if self._sandbox is None or time.monotonic() - self._sandbox_at > SANDBOX_PROBE_S:
            self._sandbox_at = time.monotonic()
            try:
                reason = sandbox_unavailable(mode)
            except Exception as exc:  # a probe bug must not stop heartbeats
                reason = f"sandbox probe failed ({type(exc).__name__})"
            self._sandbox = {"state": "unavailable", "reason": reason} if reason else {"state": "ok"}
        return self._sandbox

    def _readiness_summary(self) -> dict[str, Any] | None:
        interval = self.settings.readiness_interval_s
        if interval and (self._readiness is None or time.monotonic() - self._readiness_at > interval):
            self._readiness_at = time.monotonic()
            try:
                from incisive.node.check.profiles import DEFAULT_PROFILE, CheckContext, get_profile
                from incisive.node.check.runner import run_check
                from incisive.node.check.system import LiveSystem
                ctx = CheckContext(store_path=str(self.node.home), platform_url=self.settings.platform_url)
                report = run_check(LiveSystem(), get_profile(DEFAULT_PROFILE), ctx)
                self._readiness = {"profile": report.profile, **report.counts(), "exit_code": report.exit_code,
                                   "generated_at": report.generated_at}
            except Exception:
                log.exception("readiness check failed")
        return self._readiness

    def heartbeat(self) -> None:
        self.client.request("POST", "/agent/v1/heartbeat", self.health(), timeout_s=30)

    def _heartbeats(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.heartbeat()
            except LinkError as exc:
                if exc.status in (401, 403):
                    log.error("heartbeat refused: node revoked or unknown")
                    self.stop_event.set()
                    return
            except Exception:
                log.exception("heartbeat failed")
            self.stop_event.wait(self.settings.heartbeat_s)

    # -- jobs -------------------------------------------------------------------------------------------------
    def _query(self, job: Job) -> Result:
        return run_query(self.node, job, self.overlap)

    def _infer(self, job: Job) -> Result:
        return run_infer(self.node, self.client, job)

    def dispatch(self, job: Job) -> Result:
        """The job's handler from :attr:`handlers`; an unknown type is refused with a clear error."""
        try:
            handler = self.handlers[job.kind()]
        except (UnknownJobType, KeyError):
            return Result.refused(str(UnknownJobType(job.type)))
        return handler(job)

    def handle(self, job: dict[str, Any]) -> None:
        job_id = str(job["id"])
        if self.state.begin(job_id, str(job.get("type")), time.time()):
            try:
                parsed = Job.parse(job)
            except ValueError:  # pydantic's ValidationError: not a job at all
                result = Result.refused("invalid job: not an agent protocol job").body()
            else:
                result = self.dispatch(parsed).body()
            self.write_audit(job, result)  # fsync'd before the result can leave (it goes with the next exchange)
            self.state.finish(job_id, result)
        elif self.state.state(job_id) == "running":  # a crash while it ran: never run it a second time
            self.state.finish(job_id, Result.failed("interrupted on the node; not run again").body())

    def write_audit(self, job: dict[str, Any], result: dict[str, Any]) -> None:
        """The job's audit entry (the whole question, the outcome, the rule that withheld cells), appended and
        fsync'd *before* the result is recorded for delivery: every answer that leaves the node is in its audit
        log, also after a crash (a crash between the two leaves an entry for a job that is then reported
        interrupted, never an answer without an entry). One fsync per job, a few ms beside the query itself."""
        payload = job.get("payload") or {}
        details: dict[str, Any] = {"query": query_spec(job)}
        if result.get("rule"):
            details["rule"] = result["rule"]
        withheld = (result.get("result") or {}).get("withheld_by") if isinstance(result, dict) else None
        if withheld:
            details["withheld_by"] = withheld
        if job.get("type") == JobType.INFER:
            details["model"] = f"{payload.get('model')}:{payload.get('version')}@{payload.get('job')}"
        self.audit.append(f"researcher:{payload.get('requester', '')}", f"job.{job.get('type')}",
                          target=str(job["id"]), node=self.settings.node_id, outcome=str(result["status"]),
                          details=details)

    def deliver(self) -> None:
        for job_id, result in self.state.undelivered():
            try:
                self.client.request("POST", f"/agent/v1/jobs/{job_id}/result", result, timeout_s=30)
            except LinkError as exc:
                if exc.status in (404, 409, 410):  # the platform no longer wants it
                    self.state.ack(job_id)
                    continue
                raise
            self.state.ack(job_id)

    def poll_once(self) -> int:
        """One exchange: deliver the unacknowledged results and long-poll for jobs in the same signed request."""
        pending = dict(self.state.undelivered()[:100])
        wait = self.settings.poll_wait_s
        data = self.client.request("POST", f"/agent/v1/exchange?wait={wait:g}", {"results": pending},
                                   timeout_s=wait + 15) or {}
        for job_id in data.get("acked", []):
            self.state.ack(str(job_id))
        jobs = data.get("jobs", [])
        for job in jobs:
            self.handle(job)
        return len(jobs)

    def run(self) -> None:
        """Run until :meth:`stop`; raises AgentRevoked when the platform refuses this node."""
        beats = threading.Thread(target=self._heartbeats, name="agent-heartbeat", daemon=True)
        beats.start()
        supernodes = threading.Thread(target=self.fl.watch, args=(self.stop_event,), name="agent-fl", daemon=True)
        supernodes.start()
        failures = 0
        try:
            while not self.stop_event.is_set():
                try:
                    self.poll_once()
                    failures = 0
                except LinkError as exc:
                    if exc.status in (401, 403):
                        self.audit.append("platform", "agent.refused", node=self.settings.node_id,
                                          outcome=str(exc.status))
                        raise AgentRevoked("the platform refused this node (revoked or unknown)") from None
                    failures += 1
                    delay = backoff_delay(failures, self.settings.backoff_base_s, self.settings.backoff_max_s)
                    log.warning("platform link down (%s); retry in %.1f s", exc, delay)
                    self.stop_event.wait(delay)
        finally:
            self.stop_event.set()
            self.fl.stop_all()
            beats.join(5)
            self.client.close()
            self.state.close()
            self.overlap.close()

    def stop(self) -> None:
        self.stop_event.set()
