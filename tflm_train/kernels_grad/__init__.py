"""numpy reference semantics of the training ops: the normative definition the
C++ kernels match bit for bit (docs/training_ops.md). Importing the package
registers every op's reference-executor kernel."""
from tflm_train.kernels_grad import common, update, depthwise_conv, conv, mean, softmax_xent, train_init  # noqa: F401
