"""DICOM network services: DIMSE SCP (C-ECHO, C-STORE, C-FIND) and the shared catalogue query."""
