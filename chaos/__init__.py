"""Chaos harness: faults against a real qcluster cluster in network namespaces, and a checker of what it saw."""
