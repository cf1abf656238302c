"""Empirical robustness: minimal-perturbation attacks (attacks), the exact MIP (exact_mip), robustness
curves and their persistence (curves), their figures (plot, the package's only matplotlib importer) and
class distances (distances). May import ibp (the op graph, the reference IBP, the certified radius),
smoothing, models and the layers below."""
