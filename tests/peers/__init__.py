"""Peers that tests and benchmarks run beside our node (test scaffolding, never shipped in src/)."""
