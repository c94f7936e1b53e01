"""Federated learning at the node: everything of FL that runs at the hospital.

* ``data``          :class:`~incisive.node.fl.data.NodeData`, the node's data as a bundle reads it
* ``approval``      which bundle hashes this node approved (it runs nothing else) (commands: :mod:`incisive.cli.policy`)
* ``client_app``    the Flower ClientApp (local training / evaluation on approved bundles)
* ``runtime``       the node's Flower runtime: ``flower-supernode`` + the warm ClientApp executor
* ``supernodes``    the agent's ``fl-supernode`` / ``fl-stop`` jobs (starts and stops the runtime)
* ``inference``     local inference with a trained model; ``inference_sr`` its DICOM SRs
* ``infer_jobs``    the agent's ``infer`` jobs

What both sides share (bundle format, the bundle ``Task`` contract, the training engine) is in
:mod:`incisive.federated`; the node never imports the FL server side.
"""
