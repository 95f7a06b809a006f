"""OpenBWV dock."""
