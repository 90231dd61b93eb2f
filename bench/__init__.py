"""ftbench orchestrator: plans sweeps, runs workers in per-family environments, stores
records and writes reports. Imports no torch and no model library (tested)."""

__version__ = "0.1.0"
