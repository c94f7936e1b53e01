"""Every place incisive reaches into a dependency's internals, one module per patched release.

* :mod:`incisive.compat.flwr_1_42`: Flower 1.42's hard-coded SuperNode sleeps and object-pull back-off, and
  the ``flwr-clientapp`` task-input steps the node's warm executor repeats (``TaskIdentity``, the message id in
  ``Metadata.__dict__``).
* :mod:`incisive.compat.pynetdicom_3_0_4`: pynetdicom 3.0.4's 1 ms polling DUL and association loops, replaced
  by event-driven ones, and the guard on the PDU length the DUL reads.

Rules: a patch applies only on the release its module names (checked at install time; any other release keeps
its own behaviour), unless its docstring says why it must apply everywhere; callers use the module's
``install_*`` functions and never touch the private attribute themselves; each patched attribute has a test in
``tests/compat/`` that fails, naming the attribute, when an upgrade removes it or changes its shape. Upgrading a
dependency means: run ``tests/compat``, then port or drop the module (a new release gets a new module).
"""
