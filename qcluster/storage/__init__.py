"""Local storage: the table of contents (collections, aliases) and collections
made of local shards. Sits above ``engine`` and below ``api``."""
