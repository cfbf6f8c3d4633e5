"""_postgres: a room of the SDK (private)."""
