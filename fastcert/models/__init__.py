"""Networks: the architecture zoo and checkpoints."""
