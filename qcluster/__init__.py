"""qcluster: a self-hosted, distributed vector database with a Qdrant-compatible API."""

__version__ = "0.1.0"

# The Qdrant REST/gRPC API version this release is compatible with. qdrant-client
# compares it with its own version (major equal, minor within one).
QDRANT_API_VERSION = "1.20.0"

__all__ = ["QDRANT_API_VERSION", "__version__"]
