"""Reading and validating the reference implementation's int8 model pickles.

The file is a torch zip archive whose `*/data.pkl` holds only plain Python objects
and numpy arrays, so it is unpickled without torch, by an unpickler that resolves
nothing but the few numpy callables arrays need (a pickle can run any callable it
names; a model file must not).
"""
from __future__ import annotations

import codecs
import io
import math
import pickle
import zipfile

import numpy as np

from tflm_train.errors import UserError

_NUMPY_CORE = getattr(np, "_core", None) or np.core
# (module, name) -> object: numpy >= 2 moved numpy.core to numpy._core; old pickles name either.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _NUMPY_CORE.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _NUMPY_CORE.multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _NUMPY_CORE.multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _NUMPY_CORE.multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}

CONV_KEYS = ("pointwise1", "depthwise", "pointwise2")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UserError(f"model pickle references {module}.{name}; only plain objects and numpy arrays "
                            "are supported") from None


def load_model_pickle(path: str) -> dict:
    """The model dict of a reference-implementation .pkl, validated (UserError if anything is off)."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
            if not members:
                raise UserError(f"{path}: no data.pkl in the archive (not a reference-implementation model)")
            payload = archive.read(members[0])
    except FileNotFoundError:
        raise UserError(f"cannot read model {path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"cannot read model {path}: is a directory") from None
    except OSError as exc:
        raise UserError(f"cannot read model {path}: {exc.strerror or exc}") from None
    except zipfile.BadZipFile:
        raise UserError(f"{path}: not a torch zip archive (expected a reference-implementation .pkl)") from None
    try:
        model = _NumpyOnlyUnpickler(io.BytesIO(payload)).load()
    except UserError:
        raise
    except Exception as exc:  # a corrupt pickle raises anything
        raise UserError(f"{path}: corrupt model pickle ({type(exc).__name__})") from None
    validate_model(model, path)
    return model


def validate_model(model, where: str = "model") -> None:
    """Checks the structure the importer and the simulation rely on."""
    if not isinstance(model, dict) or not {"first_conv", "blocks", "classifier"} <= set(model):
        raise UserError(f"{where}: expected a dict with first_conv, blocks and classifier")
    if model.get("feature_mix") is not None:
        raise UserError(f"{where}: feature_mix layers are not supported")
    _validate_conv(model["first_conv"], f"{where}: first_conv")
    blocks = model["blocks"]
    if not isinstance(blocks, list):
        raise UserError(f"{where}: blocks must be a list")
    for i, block in enumerate(blocks):
        name = f"{where}: blocks[{i}]"
        if not isinstance(block, dict) or not set(CONV_KEYS) | {"residual"} <= set(block):
            raise UserError(f"{name}: expected pointwise1, depthwise, pointwise2 and residual")
        if block.get("se") is not None:
            raise UserError(f"{name}: squeeze-excite blocks are not supported")
        convs = [block[k] for k in CONV_KEYS if block[k] is not None]
        if not convs:
            raise UserError(f"{name}: has no conv")
        for key in CONV_KEYS:
            if block[key] is not None:
                _validate_conv(block[key], f"{name}.{key}")
        residual = block["residual"]
        if residual is not None:
            if not isinstance(residual, dict) or "kernel_size" in residual:
                raise UserError(f"{name}.residual: only identity residuals are supported")
            _validate_quant(residual.get("params"), f"{name}.residual")
    _validate_conv(model["classifier"], f"{where}: classifier")
    classifier = model["classifier"]
    if tuple(classifier["params"]["weight"].shape[2:]) != (1, 1) or classifier["groups"] != 1:
        raise UserError(f"{where}: classifier must be a 1x1 conv")


def _validate_quant(params, where: str) -> None:
    if not isinstance(params, dict):
        raise UserError(f"{where}: missing params")
    for key in ("x_scale", "y_scale"):
        s = params.get(key)
        if isinstance(s, bool) or not isinstance(s, (int, float, np.floating)) or not (math.isfinite(s) and s > 0):
            raise UserError(f"{where}: {key} must be a positive number")
    for key in ("x_zero", "y_zero"):
        z = params.get(key)
        if isinstance(z, bool) or not isinstance(z, (int, np.integer)) or not -128 <= z <= 127:
            raise UserError(f"{where}: {key} must be an int8 zero point")


def _validate_conv(cfg, where: str) -> None:
    if not isinstance(cfg, dict):
        raise UserError(f"{where}: expected a conv dict")
    for key in ("in_channel", "out_channel", "kernel_size", "stride", "groups", "params"):
        if key not in cfg:
            raise UserError(f"{where}: missing '{key}'")
    p = cfg["params"]
    _validate_quant(p, where)
    w, b, s = p.get("weight"), p.get("bias"), p.get("w_scales")
    if not all(isinstance(a, np.ndarray) for a in (w, b, s)):
        raise UserError(f"{where}: weight, bias and w_scales must be numpy arrays")
    if w.dtype != np.int8 or w.ndim != 4 or b.dtype != np.int32 or s.dtype.kind != "f":
        raise UserError(f"{where}: expected int8 OIHW weight, int32 bias and float w_scales")
    out_c, in_c, groups = cfg["out_channel"], cfg["in_channel"], cfg["groups"]
    kh, kw = _pair(cfg["kernel_size"], where)
    if groups != 1 and not groups == in_c == out_c:
        raise UserError(f"{where}: only plain and depthwise (multiplier 1) convs are supported")
    if w.shape != (out_c, in_c // groups, kh, kw) or b.shape != (out_c,) or s.shape != (out_c,):
        raise UserError(f"{where}: weight {w.shape}, bias {b.shape}, w_scales {s.shape} do not match "
                        f"{out_c}x{in_c} kernel {kh}x{kw} groups {groups}")
    if not (np.all(np.isfinite(s)) and np.all(s >= 0)):
        raise UserError(f"{where}: w_scales must be finite and non-negative")
    stride = cfg["stride"]
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise UserError(f"{where}: stride must be a positive int")


def _pair(kernel_size, where: str) -> tuple:
    k = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    if len(k) != 2 or not all(isinstance(v, int) and v >= 1 for v in k):
        raise UserError(f"{where}: bad kernel_size {kernel_size!r}")
    return k


def kernel_hw(cfg: dict) -> tuple:
    return tuple(cfg["params"]["weight"].shape[2:])


def is_depthwise(cfg: dict) -> bool:
    return cfg["groups"] > 1


def torch_padding(cfg: dict) -> tuple:
    """The reference implementation pads (k-1)//2 on both sides of each spatial axis."""
    kh, kw = kernel_hw(cfg)
    return (kh - 1) // 2, (kw - 1) // 2


def torch_output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1
