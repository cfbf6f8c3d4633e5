"""_storage: a room of the SDK (private)."""
