"""Training and evaluation of CMB detection models (standalone; imports CMBLib, never the reverse)."""
