"""incisive: federated repository of pseudonymised cancer-imaging and clinical data."""

__version__ = "0.1.0"
