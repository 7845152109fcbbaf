"""billhouse: usage-based billing that runs inside the data warehouse."""

__version__ = "0.1.0"
