"""Model-family adapters. Each module here imports its library and torch, so only worker
processes inside a family's environment import them; ``bench`` refers to them by
``"module:Class"`` strings (see ``bench/registry.py``)."""
