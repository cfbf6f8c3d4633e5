"""_sources: a room of the SDK (private)."""
