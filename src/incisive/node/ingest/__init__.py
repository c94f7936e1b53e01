"""Ingest: folder import (DICOM, clinical CSV). Every path goes through de-identification at the door."""
