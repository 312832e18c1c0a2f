"""The shared downstream stage: assemble real + synthetic data, fine-tune RT-DETR / DeepLabV3,
evaluate on real test images (DESIGN §1 steps 5-6, §6).

Modules: `manifest` (the generation manifest every generator writes), `requests` (where the
defects go), `assemble` (training sets with their recipe), `datasets` (torch datasets),
`deeplab` and `rtdetr` (training and prediction), `arm` (one benchmark arm end to end).
"""
