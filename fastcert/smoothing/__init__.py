"""Randomized smoothing: noises, ``Smooth`` and its ``Certificate``, sequential/adaptive certification,
top-k, confidence certificates and stratified discrete (l0) smoothing."""
