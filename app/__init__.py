"""cardstream: one customer card per person from every channel, in real time."""

__version__ = "0.1.0"
