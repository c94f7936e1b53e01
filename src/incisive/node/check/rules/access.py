"""Rules for SSH access, the integration user, the password policy, Docker, redundancy and the manual list."""

from __future__ import annotations

from incisive.node.check.model import Facts, Row, Verdict
from incisive.node.check.profiles import CheckContext, Profile
from incisive.node.check.rules.common import row, unknown, why

MAX_AUTH_TRIES = 4
MIN_PASSWORD_LENGTH = 12
MIN_PASSWORD_CLASSES = 3

MANUAL_ITEMS = (
    ("manual.wired", "node cabled at its final location (no Wi-Fi bridge)",
     "confirm the Ethernet cable runs to the hospital network at the node's final place"),
    ("manual.room", "secured room or locked rack, access logged",
     "confirm the machine stands in a locked server room/rack with access control"),
    ("manual.power", "PSU headroom ≥ 30 % over CPU+GPU peak; UPS recommended",
     "compare the PSU rating with CPU+GPU peak power (e.g. 3090 350 W + CPU 250 W → ≥ 850 W)"),
)


def judge_access(facts: dict[str, Facts], p: Profile, ctx: CheckContext) -> list[Row]:
    acc = facts.get("access") or {}
    rows: list[Row] = []
    if "access.ssh" not in p.skip:
        req = "openssh-server installed and running"
        if not acc.get("sshd_installed"):
            rows.append(row("access.ssh", req, "openssh-server not installed", Verdict.FAIL,
                            "apt install openssh-server (or dnf install openssh-server)"))
        elif acc.get("sshd_active") is None:
            rows.append(unknown("access.ssh", req, f"installed; state: {why(acc, 'sshd_active')}",
                                "check 'systemctl status ssh'"))
        elif acc["sshd_active"]:
            rows.append(row("access.ssh", req, "installed, running", Verdict.PASS))
        else:
            rows.append(row("access.ssh", req, "installed, not running", Verdict.FAIL,
                            "sudo systemctl enable --now ssh"))
    if "access.sshd-hardening" not in p.skip:
        rows.append(_hardening(acc))
    if "access.integration-user" not in p.skip:
        req, user = "integration user exists", acc.get("integration_user")
        exists = acc.get("user_exists")
        if exists is None:
            rows.append(unknown("access.integration-user", req, why(acc, "user_exists"), f"check 'id {user}'"))
        else:
            rows.append(row("access.integration-user", req, f"{user}: {'present' if exists else 'missing'}",
                            Verdict.PASS if exists else Verdict.FAIL,
                            f"sudo adduser {user} (the integrator's account; or pass --integration-user)"))
    if "access.password-policy" not in p.skip:
        rows.append(_password_policy(acc))
    if "access.file-modes" not in p.skip:
        rows.append(_file_modes(acc))
    return rows


def _file_modes(acc: Facts) -> Row:
    req = "node directory 0700, keys/catalogue/logs/audit/state 0600 (nothing for group or others)"
    modes: dict[str, int] | None = acc.get("modes")
    store = acc.get("store_path", "the node directory")
    if modes is None:
        return unknown("access.file-modes", req, why(acc, "modes"),
                       "pass --store (or set INCISIVE_NODE) to the node directory")
    loose = [f"{name} {mode:04o}" for name, mode in modes.items() if mode & 0o077]
    if not loose:
        return row("access.file-modes", req, f"{len(modes)} paths private", Verdict.PASS)
    shown = ", ".join(loose[:6]) + (f" (+{len(loose) - 6} more)" if len(loose) > 6 else "")
    return row("access.file-modes", req, f"readable by group/others: {shown}", Verdict.FAIL,
               f"chmod -R go-rwx {store} (incisive creates them private: umask 077)")


def _hardening(acc: Facts) -> Row:
    req = f"sshd: PasswordAuthentication no, PermitRootLogin no/prohibit-password, MaxAuthTries ≤ {MAX_AUTH_TRIES}"
    settings: dict[str, str] | None = acc.get("sshd")
    if settings is None:
        reason = "sshd not installed" if not acc.get("sshd_installed") else why(acc, "sshd")
        return unknown("access.sshd-hardening", req, reason, "install openssh-server, then run as root "
                       "so 'sshd -T' can report the settings")
    advice: list[str] = []
    if settings.get("passwordauthentication", "yes") != "no":
        advice.append("PasswordAuthentication no (keys only)")
    if settings.get("permitrootlogin", "prohibit-password") == "yes":
        advice.append("PermitRootLogin no")
    tries = settings.get("maxauthtries", "6")
    if not tries.isdigit() or int(tries) > MAX_AUTH_TRIES:
        advice.append(f"MaxAuthTries {MAX_AUTH_TRIES}")
    measured = ", ".join(f"{k}={v}" for k, v in sorted(settings.items()) if k != "pubkeyauthentication")
    if not advice:
        return row("access.sshd-hardening", req, measured, Verdict.PASS)
    return row("access.sshd-hardening", req, measured, Verdict.WARN,
               "in /etc/ssh/sshd_config.d/90-incisive.conf set " + "; ".join(advice) + "; reload ssh")


def _password_policy(acc: Facts) -> Row:
    req = f"password policy: length ≥ {MIN_PASSWORD_LENGTH}, ≥ {MIN_PASSWORD_CLASSES} character classes"
    fix = (f"install libpam-pwquality and set minlen = {MIN_PASSWORD_LENGTH}, minclass = {MIN_PASSWORD_CLASSES} "
           "in /etc/security/pwquality.conf")
    pwq: dict[str, int] | None = acc.get("pwquality")
    if pwq is None:
        legacy = acc.get("pass_min_len")
        hint = f"; login.defs PASS_MIN_LEN {legacy}" if legacy is not None else ""
        return row("access.password-policy", req, f"pwquality not configured{hint}", Verdict.WARN, fix)
    length, classes = pwq.get("minlen", 8), pwq.get("classes", 0)
    measured = f"minlen {length}, classes {classes}"
    ok = length >= MIN_PASSWORD_LENGTH and classes >= MIN_PASSWORD_CLASSES
    return row("access.password-policy", req, measured, Verdict.PASS if ok else Verdict.WARN, fix)


def judge_runtime(facts: dict[str, Facts], p: Profile, ctx: CheckContext) -> list[Row]:
    rt = facts.get("runtime") or {}
    req = "Docker Engine installed and running (optional: the node also runs natively)"
    if rt.get("running"):
        return [row("runtime.docker", req, f"Docker {rt.get('server_version')} running", Verdict.PASS)]
    if rt.get("installed"):
        return [row("runtime.docker", req, f"installed, daemon not answering: {why(rt, 'docker')}", Verdict.WARN,
                    "sudo systemctl enable --now docker (or run the node natively)")]
    return [row("runtime.docker", req, "not installed", Verdict.WARN,
                "install Docker Engine from the distribution or docker.com (or run the node natively)")]


def judge_redundancy(facts: dict[str, Facts], p: Profile, ctx: CheckContext) -> list[Row]:
    red = facts.get("redundancy") or {}
    rows: list[Row] = []
    req = "RAID healthy (md/ZFS); degraded = fail"
    arrays: list[Facts] = red.get("md") or []
    zfs: Facts | None = red.get("zfs")
    parts = [f"{a['name']} {a.get('level') or a['state']} [{a.get('devices')}/{a.get('working')}]"
             + (f" {a['mdadm_state']}" if a.get("mdadm_state") else "") for a in arrays]
    if zfs and zfs["pools"]:
        parts.append(f"zfs: {zfs['summary']}")
    measured = "; ".join(parts)
    if any(a["degraded"] for a in arrays) or (zfs and zfs["pools"] and not zfs["healthy"]):
        rows.append(row("redundancy.raid", req, measured, Verdict.FAIL,
                        "replace the failed disk and re-add it (mdadm --manage --add / zpool replace)"))
    elif any(a["rebuilding"] for a in arrays):
        rows.append(row("redundancy.raid", req, measured, Verdict.WARN, "wait for the rebuild to finish"))
    elif arrays or (zfs and zfs["pools"]):
        rows.append(row("redundancy.raid", req, measured, Verdict.PASS))
    else:
        rows.append(row("redundancy.raid", req, "no md or ZFS RAID found", p.no_raid,
                        "mirror the data disk (RAID1); a hardware RAID controller must be checked in its own tool"))
    if "redundancy.backup-age" not in p.skip:
        req_b = f"last verified backup ≤ {p.backup_max_age_days} days old"
        days = red.get("backup_age_days")
        if days is None:
            reason = red.get("errors", {}).get("backup") or "backup feature not configured"
            rows.append(unknown("redundancy.backup-age", req_b, reason,
                                "configure backups (incisive backup) once available"))
        else:
            ok = days <= p.backup_max_age_days
            rows.append(row("redundancy.backup-age", req_b, f"{days:.1f} days", Verdict.PASS if ok else
                            Verdict.FAIL, "run and verify a backup now; check the backup schedule"))
    return rows


def judge_manual(facts: dict[str, Facts], p: Profile, ctx: CheckContext) -> list[Row]:
    return [row(rid, req, "not measurable", Verdict.MANUAL, fix) for rid, req, fix in MANUAL_ITEMS]
