"""Datasets as (x, y) arrays already in a training model's image-input form.

Sources (see load()):
  DIR            an image folder: one subfolder per class, sorted names = class ids 0, 1, ...
  FILE.npz       arrays `x` and `y`; uint8 `x` = pixels; `x` of the model's input dtype = fed as is
  IDX            Fashion-MNIST style `*-images-idx3-ubyte[.gz]` + `*-labels-idx1-ubyte[.gz]`
                 (the images file, or a directory holding train-images-idx3-ubyte[.gz])
  lfw            scikit-image's lfw_subset: 100 faces (class 1), then 100 non-faces (class 0)

Pixels (0..255) are resized (bilinear) and converted to the model's H x W and
grayscale/RGB, then mapped linearly onto the real range the model's input
quantization covers (the calibrated input range): for an int8 input that is
q = p - 128 whatever its scale; for a float input followed by QUANTIZE it is
lo + p * scale (MLPerf VWW: the raw 0..255); a float input with no QUANTIZE
gets p / 255. Everything is deterministic: files in sorted order, no randomness
except split(), which takes a seed.
"""
from __future__ import annotations

import dataclasses
import gzip
import os
from typing import Optional

import numpy as np

from tflm_train import ir
from tflm_train.converter import metadata
from tflm_train.errors import UserError

LFW = "lfw"
IDX_IMAGES = "images-idx3-ubyte"
IDX_LABELS = "labels-idx1-ubyte"
_IDX_UBYTE = 0x08
_PIL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What a training model's image input takes."""
    shape: tuple              # (H, W, C)
    dtype: np.dtype           # int8 or float32
    pixel_offset: float       # input value of pixel 0 ...
    pixel_step: float         # ... and the increment per pixel level
    num_classes: int

    @classmethod
    def of_model(cls, graph: ir.Graph) -> "InputSpec":
        md = metadata.read(graph)
        if md is None:
            raise UserError("not a training model: convert it first (tflm-train convert)")
        tensors = graph.referenced_tensors()
        image, logits = tensors[md.image_input], tensors[md.logits]
        if len(image.shape) != 4 or image.shape[0] != 1 or image.shape[3] not in (1, 3):
            raise UserError(f"image input shape {image.shape} is not [1, H, W, 1 or 3]")
        quant = image.quant if image.dtype == np.int8 else _quantize_after(graph, image)
        if image.dtype == np.int8:
            offset, step = -128.0, 1.0
        elif quant is not None:
            offset, step = float((-128 - quant.zero_point[0]) * quant.scale[0]), float(quant.scale[0])
        else:
            offset, step = 0.0, 1.0 / 255.0
        return cls(image.shape[1:], image.dtype, offset, step, int(logits.shape[-1]))

    def from_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, C] pixels of this spec's shape -> model input values."""
        values = self.pixel_offset + pixels.astype(np.float64) * self.pixel_step
        if self.dtype == np.int8:
            return np.clip(np.round(values), -128, 127).astype(np.int8)
        return values.astype(self.dtype)


@dataclasses.dataclass
class Dataset:
    x: np.ndarray     # [N, H, W, C] in the model's input dtype
    y: np.ndarray     # [N] int32 class ids
    source: str

    def __len__(self) -> int:
        return len(self.y)


def load(source: str, spec: InputSpec) -> Dataset:
    """Reads `source` (a path or "lfw") into the model's input form."""
    if source == LFW:
        x, y = _lfw_pixels()
        return _from_pixels(x, y, spec, source)
    if not os.path.exists(source):
        raise UserError(f"data not found: {source}")
    if os.path.isdir(source):
        images = _idx_images_in(source)
        if images is not None:
            return _from_pixels(*_read_idx_pair(images), spec, source)
        return _from_pixels(*_read_image_folder(source, spec), spec, source)
    if source.endswith(".npz"):
        return _load_npz(source, spec)
    if IDX_IMAGES in os.path.basename(source):
        return _from_pixels(*_read_idx_pair(source), spec, source)
    raise UserError(f"unknown data format: {source} (an image folder, .npz, IDX images file, or 'lfw')")


def split(dataset: Dataset, eval_fraction: float, seed: int) -> tuple:
    """(train, eval): a seeded, per-class (stratified) split; eval gets round(fraction * n) of each class."""
    if not 0 < eval_fraction < 1:
        raise UserError(f"eval split must be between 0 and 1, got {eval_fraction}")
    rng = np.random.default_rng(seed)
    eval_rows = []
    for label in np.unique(dataset.y):
        rows = rng.permutation(np.flatnonzero(dataset.y == label))
        eval_rows.extend(rows[:int(round(eval_fraction * len(rows)))])
    is_eval = np.zeros(len(dataset), bool)
    is_eval[eval_rows] = True
    if is_eval.all() or not is_eval.any():
        raise UserError(f"eval split {eval_fraction} of {len(dataset)} samples leaves one side empty")
    part = lambda mask, what: Dataset(dataset.x[mask], dataset.y[mask], f"{dataset.source} ({what})")
    return part(~is_eval, "train split"), part(is_eval, "eval split")


def _quantize_after(graph: ir.Graph, image: ir.Tensor) -> Optional[ir.Quant]:
    """The quantization a float image input gets from the QUANTIZE op that reads it, if any."""
    for op in graph.ops:
        if op.kind == "QUANTIZE" and op.inputs and op.inputs[0] is image and op.outputs[0].quant is not None:
            return op.outputs[0].quant
    return None


def _from_pixels(pixels: np.ndarray, labels: np.ndarray, spec: InputSpec, source: str) -> Dataset:
    return _dataset(spec.from_pixels(_fit_pixels(pixels, spec, source)), labels, spec, source)


def _dataset(x: np.ndarray, labels: np.ndarray, spec: InputSpec, source: str) -> Dataset:
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{source}: labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if len(labels) != len(x):
        raise UserError(f"{source}: {len(x)} samples but {len(labels)} labels")
    if len(labels) == 0:
        raise UserError(f"{source}: no samples")
    if labels.min() < 0 or labels.max() >= spec.num_classes:
        raise UserError(f"{source}: labels span {labels.min()}..{labels.max()} but the model has "
                        f"{spec.num_classes} classes (0..{spec.num_classes - 1})")
    return Dataset(np.ascontiguousarray(x), labels.astype(np.int32), source)


def _fit_pixels(pixels: np.ndarray, spec: InputSpec, source: str) -> np.ndarray:
    """uint8 [N, h, w(, c)] -> uint8 [N, H, W, C] of the model (resize, grayscale/RGB)."""
    from PIL import Image

    if pixels.ndim == 3:
        pixels = pixels[..., None]
    if pixels.ndim != 4 or pixels.shape[3] not in _PIL_MODES:
        raise UserError(f"{source}: pixels must be [N, H, W] or [N, H, W, 1|3|4], got {list(pixels.shape)}")
    height, width, channels = spec.shape
    if pixels.shape[1:] == spec.shape:
        return pixels
    mode = _PIL_MODES[channels]
    out = np.empty((len(pixels), height, width, channels), np.uint8)
    for i, image in enumerate(pixels):
        picture = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image, _PIL_MODES[image.shape[2]])
        picture = picture.convert(mode).resize((width, height), Image.BILINEAR)
        out[i] = np.asarray(picture).reshape(height, width, channels)
    return out


def _read_image_folder(folder: str, spec: InputSpec) -> tuple:
    from PIL import Image

    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise UserError(f"{folder}: no class subfolders (expected one subfolder of images per class)")
    height, width, channels = spec.shape
    mode = _PIL_MODES[channels]
    pixels, labels = [], []
    for label, name in enumerate(classes):
        class_dir = os.path.join(folder, name)
        files = sorted(e.name for e in os.scandir(class_dir) if e.is_file() and not e.name.startswith("."))
        if not files:
            raise UserError(f"{class_dir}: class folder has no images")
        for file in files:
            path = os.path.join(class_dir, file)
            try:
                with Image.open(path) as picture:
                    picture = picture.convert(mode).resize((width, height), Image.BILINEAR)
            except (OSError, ValueError) as exc:
                raise UserError(f"cannot read image {path}: {exc}") from None
            pixels.append(np.asarray(picture).reshape(height, width, channels))
            labels.append(label)
    return np.stack(pixels), np.array(labels)


def _load_npz(path: str, spec: InputSpec) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"x", "y"} - set(archive.files)
            if missing:
                raise UserError(f"{path}: missing array(s) {', '.join(sorted(missing))} (needs x and y)")
            x, y = archive["x"], archive["y"]
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    if x.dtype == np.uint8:
        return _from_pixels(x, y, spec, path)
    if x.dtype != spec.dtype:
        raise UserError(f"{path}: x is {x.dtype}; expected uint8 pixels or the model's own input "
                        f"dtype {spec.dtype.name}")
    if x.shape[1:] != spec.shape:
        raise UserError(f"{path}: {spec.dtype.name} x has shape {list(x.shape)}; the model takes "
                        f"[N, {', '.join(map(str, spec.shape))}]")
    return _dataset(x, y, spec, path)


def _idx_images_in(folder: str) -> Optional[str]:
    for name in (f"train-{IDX_IMAGES}", f"train-{IDX_IMAGES}.gz"):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def _read_idx_pair(images_path: str) -> tuple:
    directory, name = os.path.split(images_path)
    labels_name = name.replace(IDX_IMAGES, IDX_LABELS)
    candidates = [labels_name, labels_name[:-3] if labels_name.endswith(".gz") else labels_name + ".gz"]
    labels_path = next((os.path.join(directory, c) for c in candidates
                        if os.path.isfile(os.path.join(directory, c))), None)
    if labels_path is None:
        raise UserError(f"{images_path}: labels file {os.path.join(directory, labels_name)} not found")
    images, labels = _read_idx(images_path), _read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise UserError(f"{images_path}: expected [N, H, W] images and [N] labels, got "
                        f"{list(images.shape)} and {list(labels.shape)}")
    return images, labels


def _read_idx(path: str) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE or raw[3] == 0:
        raise UserError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", ndim, 4).astype(np.int64) if len(raw) >= 4 + 4 * ndim else None
    if dims is None or len(raw) != 4 + 4 * ndim + int(np.prod(dims)):
        raise UserError(f"{path}: IDX file is truncated or has trailing bytes")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _lfw_pixels() -> tuple:
    try:
        from skimage import data as skimage_data
    except ImportError:
        raise UserError("the lfw source needs scikit-image (pip install scikit-image)") from None
    faces = skimage_data.lfw_subset()   # [200, 25, 25] floats in [0, 1]
    pixels = np.round(faces * 255).astype(np.uint8)
    return pixels, np.array([1] * 100 + [0] * 100)
