"""TFLT_CONV_CHAIN: frozen conv layers computed as one op that streams rows, so their
intermediate activations never exist whole (converter/lowering.py fuses them).

Its value is by definition the composition of its stages' TFLT_CONV_2D_SPLIT (without a
trainable part) and TFLT_DEPTHWISE_CONV_2D references; only the C++ memory schedule differs.
"""
from __future__ import annotations

import numpy as np

from tflm_train.errors import UserError
from tflm_train.kernels_grad.common import WINDOW_FIELDS, decode_options
from tflm_train.kernels_grad.conv import conv2d_split
from tflm_train.kernels_grad.depthwise_conv import depthwise_conv2d
from tflm_train.reference.registry import kernel
from tflm_train.schema.training_ops_generated import ConvChainOptions

STAGE_INPUTS = 4  # w, bias, multiplier, shift
_OUTPUT_STAGE_FIELDS = ("x_zero_point", "y_zero_point", "act_min", "act_max")


def conv_chain(x, parameters: list, stages: list) -> np.ndarray:
    """int8 y of the ConvChainStage `stages` applied in order to x; stage i takes
    parameters[i] = (w, bias or None, multiplier, shift)."""
    for (w, bias, multiplier, shift), stage in zip(parameters, stages):
        options = {name: getattr(stage, name) for name in WINDOW_FIELDS + _OUTPUT_STAGE_FIELDS}
        shape = dict(output_height=stage.output_height, output_width=stage.output_width)
        if stage.depthwise:
            x = depthwise_conv2d(x, w, bias, multiplier, shift, **shape, **options,
                                 depth_multiplier=stage.depth_multiplier)
        else:
            x = conv2d_split(x, w, None, bias, multiplier, shift, **shape, **options)
    return x


def window_rows(stages: list, kernel_heights: list) -> list:
    """Rows of stage i's output (i < n - 1) that stage i + 1 reads for one output row: its dilated
    kernel height, at most the image's height."""
    return [min((kernel - 1) * consumer.dilation_h + 1, stage.output_height)
            for stage, consumer, kernel in zip(stages, stages[1:], kernel_heights[1:])]


def scratch_bytes(stages: list, kernel_heights: list) -> int:
    """Size of the op's int8 scratch output: a window of rows of every stage's output but the last."""
    return sum(rows * stage.output_width * stage.output_channels
               for rows, stage in zip(window_rows(stages, kernel_heights), stages))


def in_place_offset(stages: list, x_shape: tuple) -> int:
    """Largest distance in bytes from x's first byte to y's (negative: y starts before x) at which the
    chain may write y over x itself (x dead after it); x's size when y has a single row.

    The chain pulls every row in order and once, and writes an output row once all rows it needs are
    computed; x's rows before the first row that any later output row reads are then never read
    again. That row is each stage's first input row of the first row read above, down from the last
    stage (clipped at 0), so output rows 0..r-1 must end before it, for every r."""
    in_row_bytes = int(x_shape[2]) * int(x_shape[3])
    last = stages[-1]
    out_row_bytes = last.output_width * last.output_channels
    offset = int(x_shape[1]) * in_row_bytes
    for r in range(1, last.output_height):
        row = r
        for stage in reversed(stages):
            row = max(row * stage.stride_h - stage.pad_top, 0)
        offset = min(offset, row * in_row_bytes - r * out_row_bytes)
    return offset


@kernel("TFLT_CONV_CHAIN")
def conv_chain_kernel(op, args):
    stages = decode_options(ConvChainOptions, op)["stages"]
    if not stages or len(args) != 1 + STAGE_INPUTS * len(stages) or len(op.outputs) != 2:
        raise UserError(f"{op.kind}: {len(stages)} stages take {1 + STAGE_INPUTS * len(stages)} inputs and give "
                        f"2 outputs, got {len(args)} and {len(op.outputs)}")
    parameters = [args[i:i + STAGE_INPUTS] for i in range(1, len(args), STAGE_INPUTS)]
    _check_filters(op, np.shape(args[0])[-1], parameters, stages)
    y, scratch = op.outputs
    last = stages[-1]
    if tuple(y.shape) != (1, last.output_height, last.output_width, last.output_channels):
        raise UserError(f"{op.kind}: y {y.shape} is not the last stage's output "
                        f"[1, {last.output_height}, {last.output_width}, {last.output_channels}]")
    expected = scratch_bytes(stages, [np.shape(w)[1] for w, *_ in parameters])
    if scratch.shape != (expected,):
        raise UserError(f"{op.kind}: scratch must be int8 [{expected}], got {scratch.shape}")
    return [conv_chain(args[0], parameters, stages), np.zeros(scratch.shape, np.int8)]


def _check_filters(op, channels: int, parameters: list, stages: list) -> None:
    """Each stage's filter reads the previous stage's channels and gives its own."""
    for i, ((w, *_), stage) in enumerate(zip(parameters, stages)):
        if stage.depthwise:  # [1, kh, kw, C*M]
            fits = np.shape(w)[::3] == (1, channels * stage.depth_multiplier) == (1, stage.output_channels)
        else:  # [O, kh, kw, I]
            fits = np.shape(w)[::3] == (stage.output_channels, channels)
        if np.ndim(w) != 4 or not fits:
            raise UserError(f"{op.kind}: stage {i}'s w {np.shape(w)} does not fit {channels} input and "
                            f"{stage.output_channels} output channels")
        channels = stage.output_channels
