"""Helpers shared by the rule modules."""

from __future__ import annotations

from incisive.node.check.model import Facts, Row, Verdict

CONTAINERS = ("docker", "podman", "lxc", "lxc-libvirt", "systemd-nspawn", "openvz", "rkt", "proot", "pouch",
              "container-other")


def row(rid: str, requirement: str, measured: str, verdict: Verdict, fix: str | None = None) -> Row:
    return Row(rid, rid.split(".", 1)[0], requirement, measured, verdict, None if verdict is Verdict.PASS else fix)


def unknown(rid: str, requirement: str, reason: str, fix: str) -> Row:
    return row(rid, requirement, f"unknown: {reason}", Verdict.UNKNOWN, fix)


def why(facts: Facts | None, *keys: str) -> str:
    """The first recorded reason among ``keys`` (a collector's ``errors``)."""
    errors = (facts or {}).get("errors", {})
    for key in keys:
        if errors.get(key):
            return str(errors[key])
    return "not measured"


def virt_of(facts: dict[str, Facts]) -> str | None:
    """The hypervisor or container name, 'none' on bare metal, None when unknown."""
    virt = (facts.get("os") or {}).get("virt")
    return str(virt) if virt else None


def is_vm(facts: dict[str, Facts]) -> bool:
    virt = virt_of(facts)
    return virt not in (None, "none") and virt not in CONTAINERS


def is_container(facts: dict[str, Facts]) -> bool:
    return virt_of(facts) in CONTAINERS
