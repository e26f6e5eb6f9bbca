"""syncd: keep MongoDB databases in step across environments under a YAML policy."""

__version__ = "0.1.0"
