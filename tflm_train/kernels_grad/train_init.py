"""TFLT_TRAIN_INIT: seeds the trainable variables from flash once, counts steps."""
from __future__ import annotations

import numpy as np

from tflm_train.errors import UserError
from tflm_train.kernels_grad.common import training_label
from tflm_train.reference.registry import kernel


def train_init(label: int, state: np.ndarray, pairs) -> None:
    """In place. state: int32 `[initialized, step]`; pairs: (src constant, dst variable),
    dst's shape equal to src's except a last dim K <= src's."""
    if state[0] == 0:
        for src, dst in pairs:
            dst[...] = np.asarray(src)[..., :dst.shape[-1]]
        state[0] = 1
    if label >= 0:
        state[1:2] += np.int32(1)   # int32 array arithmetic wraps at 2^31


@kernel("TFLT_TRAIN_INIT")
def train_init_kernel(op, args):
    if len(args) < 2 or len(args) % 2:
        raise UserError(f"TFLT_TRAIN_INIT takes label, state and (src, dst) pairs, got {len(args)} inputs")
    label, state, *pairs = args
    train_init(training_label(label), state, list(zip(pairs[0::2], pairs[1::2])))
    return []
