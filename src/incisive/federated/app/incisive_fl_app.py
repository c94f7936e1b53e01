"""The Flower App (FAB) submitted for every incisive job: the components live in the installed package."""

from incisive.federated.flower_app import client_app, server_app

__all__ = ["client_app", "server_app"]
