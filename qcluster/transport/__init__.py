"""Internal gRPC between nodes (``proto/qcluster/proto/internal``): servers,
clients with deadlines and a channel per peer, and the cluster secret that
every internal call carries."""
