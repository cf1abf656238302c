"""Empirical robustness: minimal-perturbation attacks, the exact MIP, robustness curves and class
distances."""
