"""Training: ``preflight`` (every check before a run folder is touched), ``state`` (run folder, resumable
state, RNG streams) and ``loop`` (``train``)."""

from mmix_eval.training.loop import TrainingError, train
from mmix_eval.training.metadata import run_metadata
from mmix_eval.training.preflight import Prepared, check_model, preflight, prepare
from mmix_eval.training.state import RUN_FILES, check_run_folder, load_run_config, seed_everything

__all__ = [
    "RUN_FILES",
    "Prepared",
    "TrainingError",
    "check_model",
    "check_run_folder",
    "load_run_config",
    "preflight",
    "prepare",
    "run_metadata",
    "seed_everything",
    "train",
]
