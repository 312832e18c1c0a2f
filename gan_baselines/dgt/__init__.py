"""Open-set fabric defect detection: DGT (defect generation and transfer) → DIS (segmenter) → DFC
(classifier with per-class Weibull models that flags "unknown defect"); IEEE TIM 2025,
DOI 10.1109/TIM.2025.3547485. No code or full text is public; the method notes give the codes
(`codes.py`), the eight-term loss and the three stages (`model.py`).

Our choices, where the notes say nothing:
- α1..α8 (`config.DGTLossWeights`): not published; ours (10, 10, 10, 1, 1, 1, 1, 1).
- an adversarial term (PatchGAN, weight 1) besides the eight: the issue names one, the
  transcribed sum does not.
- DIS = reconstructor U-Net + segmenter U-Net on [x, R(x), |x − R(x)|] ("compares the image with
  its reconstruction"), with its own L1 reconstruction loss (weight 1).
- DFC = a small CNN on [window, region mask], pooled under the region (the defect mask in training,
  a DIS region or a segmenter's region at inference); the Weibulls (pytorch-ood `OpenMax`) are fitted
  on its logits of the real defect crops and of generated defects of every known type, using
  only the correctly classified ones (`openmax.fit_on: correct`, as the original OpenMax).
- network sizes, kernel sizes {3..11} and weights w ∈ [0.7, 1] of the stochastic smoothing.

Training runs through the shared GAN loop (`gan_baselines.training.GanTrainer`, `train.DGTTrainer`);
`evaluate.py` labels a downstream segmenter's regions for `defectfill evaluate --openset-model`.
"""
