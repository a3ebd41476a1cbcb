"""Synthetic CMBs, mimics and domain-randomised images (training, tests, `cmb demo`)."""
