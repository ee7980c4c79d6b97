"""Training and evaluation of the model zoo: :class:`Trainer` (one run, resumable exactly,
DDP-ready under torchrun), its :class:`TrainConfig`, and the demo.

    from fastcells.train import TrainConfig, Trainer
    trainer = Trainer(TrainConfig(model="convlstm", preset="mmnist", steps=300))
    trainer.fit()
"""
from .config import TrainConfig
from .evaluate import evaluate_model
from .trainer import Trainer, TrainingDiverged, write_predictions

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged", "evaluate_model", "write_predictions"]
