"""Node readiness check against the published node specification (``incisive node check``).

Collectors (:mod:`.collectors`) read the machine through a :class:`~.system.System` and return plain facts;
rules (:mod:`.rules`) judge those facts against a :class:`~.profiles.Profile`; :mod:`.render` prints or
writes the :class:`~.model.Report`. Tests replay recorded machines with :class:`~.recorded.RecordedSystem`.
"""

from __future__ import annotations

from incisive.node.check.model import Report, Row, Verdict, exit_code
from incisive.node.check.profiles import PROFILES, CheckContext, Profile, get_profile, last_verified_backup_age
from incisive.node.check.recorded import RecordedSystem
from incisive.node.check.runner import run_check
from incisive.node.check.system import LiveSystem, System

__all__ = [
    "PROFILES",
    "CheckContext",
    "LiveSystem",
    "Profile",
    "RecordedSystem",
    "Report",
    "Row",
    "System",
    "Verdict",
    "exit_code",
    "get_profile",
    "last_verified_backup_age",
    "run_check",
]
