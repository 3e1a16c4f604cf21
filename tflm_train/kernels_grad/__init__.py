"""numpy reference semantics of the training ops: the normative definition the
C++ kernels match bit for bit (docs/training_ops.md). Importing the package
registers every op's reference-executor kernel."""
# The reference executor's package imports every module here to register the
# kernels, and these modules import from it: entering through it first keeps
# that import cycle in an order where each module is complete before use.
import tflm_train.reference  # noqa: F401
from tflm_train.kernels_grad import (common, update, depthwise_conv, conv, conv_chain, mean, softmax_xent,  # noqa: F401
                                     depthwise_pointwise, train_init, add, reshape, pad, quantize, mask)
