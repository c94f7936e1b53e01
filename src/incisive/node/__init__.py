"""The federated node: store, catalogue, de-identification, ingest and the node CLI."""
