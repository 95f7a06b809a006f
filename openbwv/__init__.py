"""OpenBWV: open-source body-worn video for police forces."""

__version__ = "0.1.0"
