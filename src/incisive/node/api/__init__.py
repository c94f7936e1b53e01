"""Node-local HTTP API (FastAPI): DICOMweb STOW-RS / QIDO-RS / WADO-RS behind node API tokens."""
