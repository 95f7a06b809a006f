"""OpenBWV firmware."""
