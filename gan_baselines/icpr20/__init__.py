"""ICPR'20 "GAN-based Defect Synthesis for Anomaly Detection in Fabrics": a mask- and class-conditioned
pix2pix (U-Net + PatchGAN, L1 + adversarial). What is assumed: `gan_baselines/icpr20/model.py`."""
