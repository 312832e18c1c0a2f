"""Pretraining of the small offline base inpainting model (see defectfill.pretrain.train)."""
