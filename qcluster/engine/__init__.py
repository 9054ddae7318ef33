"""The storage engine: one shard on one disk. Synchronous; no asyncio, no network, no cluster knowledge."""
