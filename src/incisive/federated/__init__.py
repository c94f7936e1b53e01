"""Federated learning on Flower (SuperLink/SuperNode deployment mode): what node and platform share, and the
FL server side. What runs at the hospital (data loading, the ClientApp, approvals, inference, the node's runtime
and agent jobs) is :mod:`incisive.node.fl`; this package never imports the node.

Shared:

* ``bundle``     model bundles (manifest + task code, sha256) and the model registry
* ``task``       the contract a bundle's ``task.py`` implements (``Task``) and reads its data through
  (``DataSource``), ``Dataset`` and the train/test split
* ``engine``     PyTorch local training (FedProx term, Opacus DP-SGD) and evaluation metrics
* ``archive``    bundle archives as uploaded to / downloaded from the platform
* ``jobs``       job records: rounds, per-node metrics, final model, provenance; ``curves`` their plots

Server side and launchers:

* ``server_app`` the Flower ServerApp (legacy strategies, SecAgg+ workflow, adaptive reply polls)
* ``deploy``     real ``flower-superlink`` / ``flower-supernode`` processes and ``flwr run``
* ``service``    train / evaluate a registered bundle on a federation (local workspace or the platform)
"""
