"""Helpers for tests and benchmarks; never imported by production code
(tests/unit/test_layers.py gives this layer no importers)."""
