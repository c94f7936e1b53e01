"""Federated training, evaluation and inference on Flower (SuperLink/SuperNode deployment mode).

* ``bundle``    model bundles (manifest + task code, sha256) and the model registry
* ``approval``  which bundle hashes a node approved (the node runs nothing else)
* ``engine``    PyTorch local training (FedProx term, Opacus DP-SGD) and evaluation metrics
* ``flower_app`` the Flower ServerApp / ClientApp (legacy strategies, SecAgg+ workflow)
* ``deploy``    real ``flower-superlink`` / ``flower-supernode`` processes and ``flwr run``
* ``jobs``      job records: rounds, per-node metrics, final model, provenance
"""
