"""_cli: a room of the SDK (private)."""
