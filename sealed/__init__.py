"""OpenBWV sealed."""
