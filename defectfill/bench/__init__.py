"""`defectfill bench`: the benchmark protocol of DESIGN §6 on the fabric simulator.

- `config`: `BenchConfig` (typed YAML: configs/bench_*.yaml) and `load_bench_config`;
- `protocol`: the data split: source fabrics with a few labelled defects, target (new) fabrics
  with good images only for training, and a test split of real defects on the target fabrics;
- `arms`: one synthetic-data generator per arm (`ARM_GENERATORS`: cut-paste, DefectFill, and
  whatever else registers), the shared request plan (same good images, masks and seeds for every
  arm) and the resumable generation step;
- `run`: `run_bench(config, out_dir)`: simulate -> train/fit generators -> generate -> fine-tune
  and evaluate every arm with the same detector, budget and seeds -> report.
"""
