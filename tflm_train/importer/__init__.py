"""Importers that turn other frameworks' int8 models into .tflite graphs."""
from tflm_train.importer.mcunet import import_mcunet

__all__ = ["import_mcunet"]
