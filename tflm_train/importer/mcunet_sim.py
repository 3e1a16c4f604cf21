"""Numpy simulation of a reference-implementation model pickle's integer inference.

Written from the pickle's own parameters, independent of the .tflite graph and of
TFLM, so the importer's output can be checked against it. The semantics are those of
the reference implementation's device-side simulation (its quantized_ops.py):

- conv: `acc = sum (x - x_zero) * w` over windows of the input padded by (k-1)//2 on
  every side (a padded position contributes nothing); exact integers.
  `y = clamp(round((acc + bias) * eff) + y_zero, -128, 127)` with
  `eff = x_scale * w_scale / y_scale` computed in double and stored as float32 (the
  reference keeps it in a float32 buffer), the product taken in double.
- residual add: `y = clamp(round(((x1 - z1) * s1 + (x2 - z2) * s2) / s_y) + z_y)`, the
  scales float32, products and sum in float32, the division in double.
- global average pooling: `round(mean of the raw int8 values)`, quantization unchanged.
- classifier: the conv rule on the pooled 1x1 map; its int8 output is the logits.

`round` is round-half-to-even everywhere (torch.round). Dead channels (bias
INT32_MIN) need no special case: int64/double arithmetic cannot overflow.
"""
from __future__ import annotations

import numpy as np

from tflm_train.errors import UserError
from tflm_train.importer.pickle_format import CONV_KEYS, is_depthwise, kernel_hw, torch_output_size, torch_padding


def simulate_mcunet(pkl_model: dict, x_int8: np.ndarray) -> np.ndarray:
    """int8 logits [1, classes] of the model dict (see pickle_format.load_model_pickle) for an int8 NHWC image [1, H, W, C]."""
    x = np.asarray(x_int8)
    channels = pkl_model["first_conv"]["in_channel"]
    if x.dtype != np.int8 or x.ndim != 4 or x.shape[0] != 1 or x.shape[3] != channels:
        raise UserError(f"simulate_mcunet: expected an int8 [1, H, W, {channels}] input, got {x.dtype} {x.shape}")
    a = _conv(x[0].astype(np.int64), pkl_model["first_conv"])
    for block in pkl_model["blocks"]:
        block_input = a
        convs = [block[key] for key in CONV_KEYS if block[key] is not None]
        for cfg in convs:
            a = _conv(a, cfg)
        if block["residual"] is not None:
            a = _residual_add(block_input, a, block["residual"]["params"], convs[-1]["params"])
    pooled = _round(a.sum(axis=(0, 1)) / float(a.shape[0] * a.shape[1]))
    logits = _conv(pooled.reshape(1, 1, -1), pkl_model["classifier"])
    return logits.reshape(1, -1).astype(np.int8)


def _round(v: np.ndarray) -> np.ndarray:
    return np.round(v).astype(np.int64)   # numpy rounds half to even


def _clamp_int8(v: np.ndarray) -> np.ndarray:
    return np.clip(v, -128, 127)


def _conv(a: np.ndarray, cfg: dict) -> np.ndarray:
    """a: int64 [H, W, C] -> int64 [Ho, Wo, O] holding int8 values."""
    p = cfg["params"]
    kh, kw = kernel_hw(cfg)
    ph, pw = torch_padding(cfg)
    stride = cfg["stride"]
    height, width = a.shape[:2]
    ho = torch_output_size(height, kh, stride, ph)
    wo = torch_output_size(width, kw, stride, pw)
    # Integers below 2^53 in float64: the sums (BLAS included) are exact.
    x = np.pad(a - p["x_zero"], ((ph, ph), (pw, pw), (0, 0))).astype(np.float64)
    w = p["weight"].astype(np.float64)
    acc = np.zeros((ho, wo, w.shape[0]))
    for i in range(kh):
        for j in range(kw):
            window = x[i: i + stride * (ho - 1) + 1: stride, j: j + stride * (wo - 1) + 1: stride, :]
            if is_depthwise(cfg):
                acc += window * w[:, 0, i, j]
            else:
                acc += window @ w[:, :, i, j].T
    eff = (np.float64(p["x_scale"]) * p["w_scales"].astype(np.float64) / np.float64(p["y_scale"]))
    eff = eff.astype(np.float32).astype(np.float64)
    return _clamp_int8(_round((acc + p["bias"].astype(np.float64)) * eff) + p["y_zero"])


def _residual_add(x1: np.ndarray, x2: np.ndarray, residual: dict, conv: dict) -> np.ndarray:
    """x1: the block input (residual x quantization), x2: the block's last conv output."""
    f32 = np.float32
    s1, s2 = f32(residual["x_scale"]), f32(conv["y_scale"])
    real1 = (x1 - residual["x_zero"]).astype(f32) * s1
    real2 = (x2 - conv["y_zero"]).astype(f32) * s2
    total = (real1 + real2).astype(np.float64) / np.float64(f32(residual["y_scale"]))
    return _clamp_int8(_round(total) + residual["y_zero"])
