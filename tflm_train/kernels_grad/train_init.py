"""TFLT_TRAIN_INIT: seeds the trainable variables from flash once, counts steps."""
from __future__ import annotations

import numpy as np


def train_init(label: int, state: np.ndarray, pairs) -> None:
    """In place. state: int32 `[initialized, step]`; pairs: (src constant, dst variable),
    dst's shape equal to src's except a last dim K <= src's."""
    if state[0] == 0:
        for src, dst in pairs:
            dst[...] = np.asarray(src)[..., :dst.shape[-1]]
        state[0] = 1
    if label >= 0:
        state[1:2] += np.int32(1)   # int32 array arithmetic wraps at 2^31
