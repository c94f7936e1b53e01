"""The Central Node: the node software run multi-tenant for providers that cannot host a node (docs/central-node.md)."""
