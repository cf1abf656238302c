"""Training: one epoch loop with noise augmentation, and certified training (IBP / ACERT)."""
