"""The platform: registry of nodes, users and roles, jobs, federated queries with disclosure control, audit."""
