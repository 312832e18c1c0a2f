"""Multistage GAN (IEEE TIP 2020): texture-conditioned cGAN + defect-fusing network, training, plug-in."""
