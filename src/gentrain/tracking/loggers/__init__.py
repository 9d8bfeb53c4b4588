"""Experiment loggers, chosen by ``logger=``: TensorBoard (the default), CSV files, W&B,
MLflow, several at once (``logger=[tensorboard,csv]``) or none. Importing this package
registers every backend in ``LOGGERS``; W&B's and MLflow's packages load only when used."""

from gentrain.tracking.loggers.base import Backend, Logger, NullLogger, RunSummary
from gentrain.tracking.loggers.build import build_logger, check_installed
from gentrain.tracking.loggers.csv_logger import CSVConfig, CSVLogger
from gentrain.tracking.loggers.fan_out import FanOutLogger
from gentrain.tracking.loggers.mlflow_logger import MLflowConfig, MLflowLogger
from gentrain.tracking.loggers.tensorboard_logger import TensorBoardConfig, TensorBoardLogger
from gentrain.tracking.loggers.wandb_logger import WandbConfig, WandbLogger

__all__ = [
    "Backend",
    "CSVConfig",
    "CSVLogger",
    "FanOutLogger",
    "Logger",
    "MLflowConfig",
    "MLflowLogger",
    "NullLogger",
    "RunSummary",
    "TensorBoardConfig",
    "TensorBoardLogger",
    "WandbConfig",
    "WandbLogger",
    "build_logger",
    "check_installed",
]
