"""GDPR duties as software (``incisive compliance``): the node's records of processing, generated from what it knows.

* :mod:`.store`: ``<node>/compliance/compliance.json`` (contact, DPO, controller, the fields asked once, backup
  target countries, processors) and the documents filed with it;
* :mod:`.processors`: the Art. 28 processor register and its Art. 28(3) checklist;
* :mod:`.residency`: where the node, its backup targets and its processors are (EU/EEA or a transfer, and the
  safeguard a transfer needs);
* :mod:`.measures`: the technical and organisational measures (Art. 32), each with live evidence;
* :mod:`.ropa`: the Art. 30 record of processing activities, generated;
* :mod:`.render`: HTML (jinja2) and PDF (headless Chromium) of the RoPA and other reports;
* :mod:`.check`: every finding (``incisive compliance check`` fails while any fails);
* :mod:`.pack`: the evidence bundle for the project's privacy assessment;
* ``breach`` (Art. 33/34), ``subjects`` and ``access`` (data-subject requests, access report) beside them.

Docs: docs/compliance.md maps each command to the GDPR article and the node specification section it serves.
"""
