"""The node catalogue: pseudonymised index of what the store holds (SQLAlchemy 2, Alembic, SQLite or PostgreSQL)."""

from incisive.node.catalogue.db import Catalogue
from incisive.node.catalogue.models import (
    Base,
    ClinicalRecord,
    ImportIssue,
    ImportRun,
    Instance,
    Patient,
    QuarantineItem,
    Series,
    Study,
)

__all__ = [
    "Base",
    "Catalogue",
    "ClinicalRecord",
    "ImportIssue",
    "ImportRun",
    "Instance",
    "Patient",
    "QuarantineItem",
    "Series",
    "Study",
]
