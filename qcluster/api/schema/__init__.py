"""Qdrant's JSON data model: parsers from JSON-shaped values to qcluster's
types (with validation errors that name the field) and renderers back.

Protocol-neutral: the REST API feeds it request bodies; the gRPC API feeds it
the same shapes converted from Qdrant's protobuf messages, so both protocols
validate alike and fail with the same messages.
"""
