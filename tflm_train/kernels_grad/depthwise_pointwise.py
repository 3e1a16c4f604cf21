"""TFLT_DEPTHWISE_POINTWISE_GRAD: the backward from a depthwise layer's output gradient through
the conv feeding it (a 1×1 "pointwise" one when its input gradient is needed), one of the
conv's output channels at a time, so that the depthwise input gradient (the conv's output
gradient) never exists whole (converter/fused_grads.py fuses the ops). In block mode it starts
one layer later, from the output gradient of the conv after the depthwise layer (the block's
"projection"), and the depthwise output gradient exists one channel group at a time too.

Its value is by definition the composition TFLT_DEPTHWISE_INPUT_GRAD → TFLT_CONV_INPUT_GRAD →
TFLT_CONV_GRAD_UPDATE of those ops' references, computed channel by channel: the depthwise input
gradient of channel c depends on channel c's group of the depthwise layer only; with a 1×1 filter
each input-gradient element sums one term per output channel, in channel order, so adding the
channels' terms one by one is the same float sum; and the update of channel c reads only that
channel's gradient (and happens after channel c's terms used the weights it changes).

Block mode prepends the projection's TFLT_CONV_INPUT_GRAD and appends the depthwise layer's
TFLT_CONV_GRAD_UPDATE: (projection input gradient) → (the above) → (depthwise update). Streamed,
it stays the same bytes: an input-gradient element of any conv is a sum over taps and the
conv's output channels for that element's input channel alone, so computing group c's channels
alone is the same float sum; the depthwise update of output channel o reads only channel o of
the depthwise output gradient, and it writes group c's depthwise weights after group c's input
gradient has read them (no other group reads them).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tflm_train.errors import UserError
from tflm_train.kernels_grad.common import (F32, WINDOW_FIELDS, activation_mask, decode_options, gradient_passes,
                                            op_inputs, pick, table_fields, training_label, unspecified_outputs)
from tflm_train.kernels_grad.conv import conv_grad_update, conv_input_grad
from tflm_train.kernels_grad.depthwise_conv import depthwise_input_grad
from tflm_train.reference.registry import kernel
from tflm_train.schema.training_ops_generated import DepthwisePointwiseGradOptions

_UPDATE_FIELDS = WINDOW_FIELDS + ("x_zero_point", "x_scale", "act_min", "act_max", "rounding", "weight_param_id",
                                  "bias_param_id")
_INPUT_GRAD_FIELDS = WINDOW_FIELDS + ("input_height", "input_width", "input_channels", "act_min", "act_max")
INPUTS = 24     # with the block-mode inputs
BLOCK_INPUT = 15  # the first of them, proj_y


@dataclasses.dataclass
class Block:
    """Block mode's operands: the projection conv after the depthwise layer (whose output gradient
    the op's dy then is) and the depthwise layer's update (either parameter may be None)."""
    y: object                   # mask of the projection's output, or None
    w: np.ndarray               # [O, kh, kw, C*M]
    w_train: object             # split weights' trainable slice, or None
    w_scale: np.ndarray         # [O]
    projection: dict            # its ConvGradOptions fields (its input: the depthwise output)
    dw_x: object                # the depthwise layer's input (with dw_w_train)
    dw_w_train: object
    dw_w_qas: object
    dw_b_train: object
    dw_b_qas: object
    depthwise_update: dict      # ConvUpdateOptions fields of the depthwise layer's update

    @property
    def updates(self) -> bool:
        return self.dw_w_train is not None or self.dw_b_train is not None


def depthwise_pointwise_grad(lr: float, step: int, dy, dw_y, dw_w, dw_w_scale, pw_y, pw_w, pw_w_scale, x, w_train,
                             w_qas, b_train, b_qas, *, depthwise: dict, pointwise: dict, input_shape=None,
                             block: Block = None) -> tuple:
    """(dx or None, g): `dy` is the depthwise layer's output gradient (block mode: the projection's),
    `depthwise` its ConvGradOptions fields (its input: the conv layer's output `[1, H', W', C]`),
    `pointwise` the conv layer's ConvUpdateOptions fields. With `input_shape` (`[1, H, W, I]`) dx
    is the conv's input gradient from its 1×1 `pw_w`, `w_train` (split weights) and `pw_w_scale`;
    `w_train` / `b_train` (either may be None) are updated in place, and in block mode the
    depthwise layer's. g is what the op leaves in its scratch output: `[H'·W']`, the last channel's
    masked gradient, then in block mode `[Ho·Wo·M]`, the last channel group's masked depthwise
    output gradient (row-major `[Ho, Wo, M]`).
    """
    if block is not None:
        dy = conv_input_grad(dy, block.y, block.w, block.w_train, block.w_scale,
                             **pick(block.projection, *_INPUT_GRAD_FIELDS))
    m, channels = depthwise["depth_multiplier"], depthwise["input_channels"]
    shape = (1, depthwise["input_height"], depthwise["input_width"], channels)
    md = activation_mask(dy, dw_y, depthwise["act_min"], depthwise["act_max"])
    passes = None if pw_y is None else gradient_passes(pw_y, shape, pointwise["act_min"], pointwise["act_max"])
    window = pick(pointwise, *WINDOW_FIELDS)
    dx = None if input_shape is None else np.zeros(input_shape, F32)
    for c in range(channels):
        group = slice(c * m, (c + 1) * m)
        g = depthwise_input_grad(md[..., group], None, np.asarray(dw_w)[..., group],
                                 np.asarray(dw_w_scale).reshape(-1)[group], **pick(depthwise, *WINDOW_FIELDS),
                                 input_height=shape[1], input_width=shape[2], input_channels=1, depth_multiplier=m)
        if passes is not None:
            g = np.where(passes[..., c:c + 1], g, F32(0.0))
        if dx is not None:
            dx = dx + conv_input_grad(g, None, np.asarray(pw_w)[c:c + 1], None if w_train is None else w_train[c:c + 1],
                                      np.asarray(pw_w_scale).reshape(-1)[c:c + 1], **window,
                                      input_height=input_shape[1], input_width=input_shape[2],
                                      input_channels=input_shape[3])
        if w_train is not None or b_train is not None:
            conv_grad_update(lr, step, g, None, x, w_train, w_qas, b_train, b_qas,
                             **pick(pointwise, *_UPDATE_FIELDS), channel=c)
    scratch = [g.reshape(-1)]
    if block is not None:
        if block.updates:
            conv_grad_update(lr, step, dy, dw_y, block.dw_x, block.dw_w_train, block.dw_w_qas, block.dw_b_train,
                             block.dw_b_qas, **pick(block.depthwise_update, *_UPDATE_FIELDS, "depthwise",
                                                     "depth_multiplier"))
        scratch.append(md[..., (channels - 1) * m:].reshape(-1))
    return dx, np.concatenate(scratch)


@kernel("TFLT_DEPTHWISE_POINTWISE_GRAD")
def depthwise_pointwise_grad_kernel(op, args):
    (label, lr, state, dy, dw_y, dw_w, dw_w_scale, pw_y, pw_w, pw_w_scale, x, w_train, w_qas, b_train, b_qas,
     proj_y, proj_w, proj_w_train, proj_w_scale, dw_x, dw_w_train, dw_w_qas, dw_b_train,
     dw_b_qas) = op_inputs(op, args, INPUTS)
    if training_label(label) < 0:
        return unspecified_outputs(op)
    options = decode_options(DepthwisePointwiseGradOptions, op)
    if len(op.outputs) not in (1, 2):
        raise UserError(f"{op.kind}: outputs are g and, if the backward continues, dx; got {len(op.outputs)}")
    input_shape = op.outputs[1].shape if len(op.outputs) == 2 else None
    block = None
    if proj_w is not None:
        block = Block(proj_y, proj_w, proj_w_train, proj_w_scale, table_fields(options["projection"]), dw_x,
                      dw_w_train, dw_w_qas, dw_b_train, dw_b_qas, table_fields(options["depthwise_update"]))
    updates = w_train is not None or b_train is not None or (block is not None and block.updates)
    dx, g = depthwise_pointwise_grad(
        np.asarray(lr).reshape(-1)[0] if updates else 0.0, int(state[1]) if updates else 0, dy, dw_y, dw_w,
        dw_w_scale, pw_y, pw_w, pw_w_scale, x, w_train, w_qas, b_train, b_qas,
        depthwise=table_fields(options["depthwise"]), pointwise=table_fields(options["pointwise"]),
        input_shape=input_shape, block=block)
    return [g] + ([] if dx is None else [dx])
