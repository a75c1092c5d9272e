"""An example third-party refractor plugin: the `wr2` ranker."""

__version__ = "0.1.0"
