"""R3GAN (NeurIPS 2024) as a mask-conditioned defect generator: model, losses, training, plug-in."""
