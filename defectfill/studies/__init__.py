"""The studies of DESIGN §8, each run on the bench's own data and seeds: `fusion` (one generator vs
multistage fusion), `labels` (box-label noise), `unknown` (defect types never seen)."""
