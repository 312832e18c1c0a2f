"""DefectFill training: config, data, the step (losses) and the accelerate loop.

    from defectfill.training import DefectFillTrainConfig, train_defectfill, load_train_config
    model_dir = train_defectfill(load_train_config("configs/defectfill_tiny.yaml", train_data_dir="data/"))
"""

from defectfill.training.config import DefectFillTrainConfig, load_train_config
from defectfill.training.trainer import DefectFillTrainer, read_loss_log, train_defectfill

__all__ = ["DefectFillTrainConfig", "DefectFillTrainer", "load_train_config", "read_loss_log", "train_defectfill"]
