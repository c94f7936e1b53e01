"""The platform's systemd unit (``incisive platform install-services``): ``platform serve`` as a dedicated user,
hardened by :mod:`incisive.common.systemd`. ``CAP_NET_BIND_SERVICE`` only when ``port`` is below 1024 (e.g. 443
without a proxy); writable: the platform directory only (a PostgreSQL database is reached over the network, and the
unit orders itself after ``postgresql.service`` then). The Flower SuperLink and ServerApp it starts run inside the
same sandbox, so PyTorch's generated kernels keep writable+executable memory (``jit``)."""

from __future__ import annotations

from pathlib import Path

from incisive.common import systemd
from incisive.platform.home import Platform

SERVE = "incisive-platform.service"


def units(platform: Platform, user: str = systemd.DEFAULT_USER, exe: str | None = None) -> dict[str, str]:
    systemd.check_user(user)
    s = platform.settings
    home = platform.home
    argv0 = (exe or systemd.incisive_executable()).split()
    after: tuple[str, ...] = ("network-online.target",)
    if s.effective_db_url.startswith("postgresql"):
        after += ("postgresql.service",)
    serve = systemd.Service(
        "incisive-platform", "incisive platform: API, job queue and Flower SuperLink",
        [*argv0, "platform", "serve", "--home", str(home)], user, home,
        systemd.Hardening((home,), low_port=0 < s.port < 1024, jit=True), after=after)
    return {SERVE: serve.render()}


def install(platform: Platform, user: str = systemd.DEFAULT_USER, write_to: Path | None = None,
            root: Path = Path("/")) -> systemd.Installed:
    texts = units(platform, user)
    if write_to is not None:
        paths = systemd.write(texts, write_to)
        (write_to / f"incisive-{user}.sysusers.conf").write_text(systemd.sysusers(user, "platform"))
        return systemd.Installed(write_to, paths, [], [f"wrote {len(paths)} unit to {write_to} (not installed)"])
    return systemd.install(texts, (SERVE,), user, "platform", owned=(platform.home,), root=root)
