"""The node's systemd units (``incisive node install-services``): ``node serve``, ``node agent`` and the backup
timer with its service, written by :mod:`incisive.common.systemd` (hardening, user, installation).

* ``incisive-node-serve.service``: DICOM SCP + DICOMweb; ``CAP_NET_BIND_SERVICE`` only when ``dicom_port`` or
  ``http_port`` is below 1024; TLS files must be readable by the service user.
* ``incisive-node-agent.service``: the outbound link to the platform and the FL jobs it starts; relaxed where the
  bubblewrap sandbox of FL bundles and PyTorch need it (:class:`~incisive.common.systemd.Hardening` flags);
  exit 5 (revoked) does not restart. ``gpu=True`` lets it see the GPU.
* ``incisive-backup.timer`` + ``incisive-backup.service``: the daily check of :mod:`incisive.node.backup.schedule`
  (backs up when the newest snapshot is older than the policy interval); local targets are writable paths.
"""

from __future__ import annotations

from pathlib import Path

from incisive.common import systemd
from incisive.common.exit_codes import ExitCode
from incisive.node.backup import config as backup_config
from incisive.node.backup.schedule import UNIT as BACKUP_UNIT
from incisive.node.backup.schedule import Schedule
from incisive.node.home import Node

SERVE = "incisive-node-serve.service"
AGENT = "incisive-node-agent.service"
BACKUP_SERVICE = f"{BACKUP_UNIT}.service"
BACKUP_TIMER = f"{BACKUP_UNIT}.timer"
ENABLED = (SERVE, AGENT, BACKUP_TIMER)
"""The units ``install-services`` enables (the backup service is started by its timer) and the check reports."""


def _backup_paths(node: Node) -> tuple[Path, ...]:
    try:
        targets = backup_config.load(node.home).targets
    except Exception:  # a broken targets file is the backup's own error to report
        return ()
    return tuple(Path(t.location) for t in targets if t.location.startswith("/"))


def units(node: Node, user: str = systemd.DEFAULT_USER, exe: str | None = None, gpu: bool = False) -> dict[str, str]:
    """File name -> unit text for this node."""
    systemd.check_user(user)
    home, s = node.home, node.settings
    argv0 = (exe or systemd.incisive_executable()).split()
    low = any(0 < port < 1024 for port in (s.dicom_port, s.http_port))
    serve = systemd.Service(
        "incisive-node-serve", f"incisive node {s.node_id}: DICOM SCP and DICOMweb", [*argv0, "node", "serve",
                                                                                   "--home", str(home)],
        user, home, systemd.Hardening((home,), low_port=low))
    agent = systemd.Service(
        "incisive-node-agent", f"incisive node {s.node_id}: outbound link to the platform",
        [*argv0, "node", "agent", "--home", str(home)], user, home,
        systemd.Hardening((home,), jit=True, sandbox=True, netlink=True, devices=gpu),
        no_restart_codes=(ExitCode.INVALID, ExitCode.AGENT_REVOKED))
    try:
        every = backup_config.load(home).policy.every_days
    except Exception:
        every = backup_config.Policy().every_days
    schedule = Schedule(home, every)
    backup = systemd.Service(
        BACKUP_UNIT, f"incisive node {s.node_id}: backup when due",
        [*argv0, "backup", "run", "--verify", "--if-older", f"{every}d", "--home", str(home)],
        user, home, systemd.Hardening((home, *_backup_paths(node))), oneshot=True,
        after=("network-online.target", "local-fs.target"), extra=("Nice=10", "IOSchedulingClass=idle"))
    return {SERVE: serve.render(), AGENT: agent.render(), BACKUP_SERVICE: backup.render(),
            BACKUP_TIMER: schedule.timer()}


def install(node: Node, user: str = systemd.DEFAULT_USER, write_to: Path | None = None, gpu: bool = False,
            root: Path = Path("/")) -> systemd.Installed:
    """Write the units to ``write_to`` for review, or install and enable them under ``root``."""
    texts = units(node, user, gpu=gpu)
    if write_to is not None:
        paths = systemd.write(texts, write_to)
        (write_to / f"incisive-{user}.sysusers.conf").write_text(systemd.sysusers(user, "node"))
        return systemd.Installed(write_to, paths, [], [f"wrote {len(paths)} units to {write_to} (not installed)"])
    return systemd.install(texts, ENABLED, user, "node", owned=(node.home,), root=root)
