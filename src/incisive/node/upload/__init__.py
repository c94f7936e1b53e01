"""The provider's uploader (``incisive upload``): de-identify at the hospital, send to a Central Node tenant.

Identifiable data never leaves the hospital: every instance goes through the node's own de-identifier
(:mod:`incisive.node.ingest.dicom_file`, the same engine, options and fail-closed rules as a node's door) with the
provider's pseudonym key, which stays in the uploader directory (:mod:`.home`). Only the de-identified bytes are
posted (STOW-RS batches, :mod:`.client`), and clinical rows only after :func:`incisive.node.ingest.clinical.
pseudonymise_row`. A SQLite journal (:mod:`.journal`) records what the Central Node acknowledged per source file,
so a run cut off anywhere resumes with what was not acknowledged (:mod:`.run`). The same key gives the same bytes,
so sending an instance twice stores it once.
"""
