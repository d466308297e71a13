"""Corral: turn a pile of ordinary machines into one compute farm."""

__version__ = "0.1.0"

__all__ = ["__version__"]
