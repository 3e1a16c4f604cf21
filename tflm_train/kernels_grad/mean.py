"""TFLT_MEAN_GRAD: backward of a global average pool (MEAN over H, W, or an
AVERAGE_POOL_2D whose window is the whole input)."""
from __future__ import annotations

import numpy as np

from tflm_train.kernels_grad.common import F32


def mean_grad(dy, *, input_height, input_width) -> np.ndarray:
    """dx `[1, H, W, C]`: every position gets dy[c] / (H*W), as dy[c] * (1.0f / (float)(H*W))."""
    dy = np.asarray(dy, F32).reshape(-1)
    inverse_count = F32(1.0) / F32(input_height * input_width)
    dx = np.empty((1, input_height, input_width, dy.size), F32)
    dx[...] = dy * inverse_count
    return dx
