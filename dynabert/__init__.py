"""dynabert: the adaptive BERT/RoBERTa model, sub-network descriptions and training."""

from .backbone import default_backbone_dir, load_model
from .errors import (
    DataError,
    DynasearchError,
    ExportError,
    InvalidSubnetError,
    ModelLoadError,
    OutputExistsError,
)
from .evaluate import EvalInputs, evaluate_run
from .extract import extract_subnet, model_shape, random_like
from .modeling import DynaBertConfig, DynaBertForSequenceClassification
from .space import SearchSpace
from .subnet import (
    PAPER_DEPTHS,
    PAPER_WIDTHS,
    BackboneShape,
    SubnetConfig,
    count_flops,
    count_params,
    grid_table,
    paper_grid,
)
from .tasks import TaskSpec, csv_task, get_task, load_task
from .train import RunInputs, run_model_dir, train
from .train_config import TrainConfig

__all__ = [
    "BackboneShape", "DataError", "DynaBertConfig", "DynaBertForSequenceClassification", "DynasearchError",
    "ExportError", "InvalidSubnetError", "ModelLoadError", "OutputExistsError", "PAPER_DEPTHS", "PAPER_WIDTHS",
    "SearchSpace", "SubnetConfig", "count_flops", "count_params", "default_backbone_dir", "extract_subnet",
    "grid_table", "load_model", "model_shape", "paper_grid", "random_like",
    "EvalInputs", "RunInputs", "TaskSpec", "TrainConfig", "csv_task", "evaluate_run", "get_task", "load_task",
    "run_model_dir", "train",
]
