"""ftbench orchestrator: plans sweeps, runs workers in per-family environments, stores
records and writes reports. Imports no torch and no model library (tested)."""

from pathlib import Path

__version__ = "0.1.0"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
