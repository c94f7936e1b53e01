"""The node catalogue's database: :class:`incisive.common.db.Database` on the catalogue schema."""

from __future__ import annotations

from incisive.common.db import Database

MIGRATIONS = "incisive.node.catalogue:migrations"


class Catalogue(Database):
    migrations = MIGRATIONS
    what = "catalogue"
    migrate_command = "incisive node migrate"
