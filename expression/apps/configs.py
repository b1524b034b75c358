"""The resolve steps: parsed command-line flags -> the libraries' frozen configs.

Each function is pure (reads the Namespace, returns a new config, changes nothing), so presets and
derived defaults are applied in one place and the libraries below never see argparse.
"""
from __future__ import annotations
