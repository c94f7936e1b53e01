"""De-identification at the door: PS3.15 Annex E profile, keyed pseudonyms/UIDs/date shifts, quarantine."""

from incisive.node.deid.burned_in import quarantine_reason
from incisive.node.deid.engine import Deidentifier, DeidRejected, SafePrivate, shift_date

__all__ = ["DeidRejected", "Deidentifier", "SafePrivate", "quarantine_reason", "shift_date"]
