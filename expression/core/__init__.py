"""Core layer: what every other layer shares, defined once.

Preprocessing and image reading (`preprocessing`, `images`), labelled splits (`datasets`), the
network (`model`), checkpoint files (`checkpoint`, `seed_model`), test-time views (`tta`), the
explanation defaults the report measured (`cam_policy`), evaluation plots (`report`), atomic file
writing (`io`), the error types every layer raises (`errors`) and the device choice (`runtime`).

Imports nothing else from `expression`; tests/test_layout.py keeps it so.
"""
