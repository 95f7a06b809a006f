"""OpenBWV hw."""
