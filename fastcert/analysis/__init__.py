"""Certified-accuracy tables and figures from logs (the only package that imports matplotlib)."""
