"""_sandbox: a room of the SDK (private)."""
