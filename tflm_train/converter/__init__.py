"""Python converter: quantized .tflite → training .tflite."""
