"""Experiment loggers, chosen by ``logger=``: TensorBoard (the default), CSV files, several
at once (``logger=[tensorboard,csv]``) or none. Importing this package registers every
backend in ``LOGGERS``."""

from gentrain.tracking.loggers.base import Backend, Logger, NullLogger
from gentrain.tracking.loggers.build import build_logger, check_installed
from gentrain.tracking.loggers.csv_logger import CSVConfig, CSVLogger
from gentrain.tracking.loggers.fan_out import FanOutLogger
from gentrain.tracking.loggers.tensorboard_logger import TensorBoardConfig, TensorBoardLogger

__all__ = [
    "Backend",
    "CSVConfig",
    "CSVLogger",
    "FanOutLogger",
    "Logger",
    "NullLogger",
    "TensorBoardConfig",
    "TensorBoardLogger",
    "build_logger",
    "check_installed",
]
