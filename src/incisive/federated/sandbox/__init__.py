"""Bundle code runs here: a bubblewrap sandbox per job, its wire protocol and the checks of what comes back.

See docs/federated.md, *The sandbox*. The node and the platform use :class:`Sandbox` (trusted side,
:mod:`.runner`); :mod:`.child` and :mod:`.ops` run inside it; :mod:`.validate` checks every reply.
"""

from __future__ import annotations

from incisive.federated.sandbox.limits import Limits
from incisive.federated.sandbox.probe import unavailable
from incisive.federated.sandbox.runner import MODES, Sandbox
from incisive.federated.sandbox.wire import OutputRejected, SandboxError

__all__ = ["MODES", "Limits", "OutputRejected", "Sandbox", "SandboxError", "unavailable"]
