"""Platform database: the common engine set-up, Alembic runner and sessions (:mod:`incisive.common.db`), on the
platform schema.

SQLite runs in WAL mode with ``synchronous=NORMAL`` (set by :func:`make_engine`, shared with the node): a commit
survives a crash of the process, and a power cut can lose only the last commits (nonces, heartbeats, the latest
job states), never corrupt the file. The many small commits of the agent link would otherwise cost an fsync each.
"""

from __future__ import annotations

from incisive.common.db import Database

MIGRATIONS = "incisive.platform:migrations"


class PlatformDb(Database):
    migrations = MIGRATIONS
    what = "platform database"
    migrate_command = "incisive platform migrate"
