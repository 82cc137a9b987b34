"""Make your own GenPRM: supervised fine-tuning on GenPRM conversations, then export for genprm's engines.

``train(TrainConfig(...))`` fine-tunes a model with TRL (assistant-only loss, LoRA or full), resumable;
``export(run)`` merges a LoRA adapter into a Hugging Face folder and writes a GGUF with llama.cpp's own
converter, the inference chat template carried over. Needs the ``train`` extra
(``pip install 'genprm[train]'``); importing this package does not.
"""

from genprm.training.config import TrainConfig
from genprm.training.data import TrainingData, read_training_data
from genprm.training.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "TrainingData", "read_training_data", "train"]
