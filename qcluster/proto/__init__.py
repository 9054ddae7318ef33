"""Code generated from ``proto/`` (``make proto``); do not edit by hand.

``qcluster.proto.v1``: qcluster's public extension services. The wire
definitions of Qdrant's own services come from qdrant-client's generated
modules (``qdrant_client.grpc``).
"""
