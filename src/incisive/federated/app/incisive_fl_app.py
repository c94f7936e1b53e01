"""The Flower App (FAB) submitted for every incisive job: the components live in the installed package
(``pyproject.toml`` names them: the platform's ServerApp and the nodes' ClientApp, which a node's runtime runs
from its own installation and never from the FAB)."""

from incisive.federated.server_app import server_app

__all__ = ["server_app"]
