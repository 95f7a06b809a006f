"""OpenBWV server."""
