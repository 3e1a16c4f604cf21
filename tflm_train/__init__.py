"""tflm-train: on-device int8 training for TensorFlow Lite Micro."""

__version__ = "0.1.0"
