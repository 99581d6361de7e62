"""The package's version, on the bottom floor so that any module can record it (the public API in __init__
re-exports it)."""

__version__ = "0.1.0"
