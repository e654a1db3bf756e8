"""imgcls: one CLI for the whole life of an image classifier."""

__version__ = "0.1.0"
