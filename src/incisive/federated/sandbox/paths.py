"""Where the sandboxed child finds its directories (``/in`` and ``/scratch`` under bubblewrap; the real paths
with ``mode = "off"``): the runner sets these variables, code inside the sandbox reads them."""

from __future__ import annotations

import os
from pathlib import Path

INPUTS_ENV = "INCISIVE_SANDBOX_INPUTS"
SCRATCH_ENV = "INCISIVE_SANDBOX_SCRATCH"


def inputs_dir() -> Path | None:
    value = os.environ.get(INPUTS_ENV)
    return Path(value) if value else None


def scratch_dir() -> Path:
    return Path(os.environ.get(SCRATCH_ENV, "."))
