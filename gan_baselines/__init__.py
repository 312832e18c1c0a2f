"""GAN and classical baselines behind the same DefectGenerator interface (defectfill.generators)."""
