"""Benchmark harness: qcluster against raw FAISS and embedded peers (``python -m bench.run``)."""
