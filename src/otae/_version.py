"""The version of otae (one place: the package face and the export format read it)."""

__version__ = "0.1.0"
