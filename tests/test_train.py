"""Datasets, the host training loop, state export and the train/export CLI."""
import gzip
import json

import numpy as np
import pytest
from PIL import Image

import tf_models
from conftest import run_cli
from tflm_train import data, ir, state, train
from tflm_train.converter import pipeline
from tflm_train.errors import UserError
from tflm_train.tflm_runner import TflmSession

GRAY_12 = data.InputSpec((12, 12, 1), np.dtype(np.int8), -128.0, 1.0, 2)
RGB_12 = data.InputSpec((12, 12, 3), np.dtype(np.int8), -128.0, 1.0, 2)
FLOAT_RGB_12 = data.InputSpec((12, 12, 3), np.dtype(np.float32), 0.0, 1.0 / 255.0, 2)
# Learning rate at which the tiny model below learns the synthetic task in 2 epochs.
TINY_LR = 0.005


def _image(path, pixels, mode):
    Image.fromarray(pixels, mode).save(path)


def _write_idx(path, array, compress):
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    raw = header + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(raw)


def test_image_folder(tmp_path):
    for name, value in (("b_faces", 200), ("a_other", 10)):
        (tmp_path / name).mkdir()
        _image(tmp_path / name / "1.png", np.full((12, 12), value, np.uint8), "L")
    _image(tmp_path / "b_faces" / "0.bmp", np.zeros((30, 20, 3), np.uint8), "RGB")
    ds = data.load(str(tmp_path), RGB_12)
    assert ds.x.shape == (3, 12, 12, 3) and ds.x.dtype == np.int8
    assert ds.y.tolist() == [0, 1, 1]               # sorted folder names, then sorted files
    assert (ds.x[0] == 10 - 128).all() and (ds.x[2] == 200 - 128).all() and (ds.x[1] == -128).all()
    assert np.array_equal(data.load(str(tmp_path), RGB_12).x, ds.x)


def test_npz_pixels_and_quantized(tmp_path):
    pixels = np.arange(2 * 12 * 12, dtype=np.uint16).reshape(2, 12, 12) % 256
    np.savez(tmp_path / "p.npz", x=pixels.astype(np.uint8), y=np.array([1, 0]))
    gray = data.load(str(tmp_path / "p.npz"), GRAY_12)
    assert np.array_equal(gray.x[..., 0], (pixels - 128).astype(np.int8)) and gray.y.tolist() == [1, 0]
    as_float = data.load(str(tmp_path / "p.npz"), FLOAT_RGB_12)
    assert as_float.x.dtype == np.float32
    np.testing.assert_allclose(as_float.x[..., 1], pixels / 255.0, rtol=1e-6)

    quantized = np.random.default_rng(0).integers(-128, 128, (3, 12, 12, 3)).astype(np.int8)
    np.savez(tmp_path / "q.npz", x=quantized, y=np.array([[0], [1], [1]]))
    ds = data.load(str(tmp_path / "q.npz"), RGB_12)
    assert np.array_equal(ds.x, quantized) and ds.y.tolist() == [0, 1, 1]


@pytest.mark.parametrize("compress", [False, True])
def test_idx_file_and_directory(tmp_path, compress):
    suffix = ".gz" if compress else ""
    images = np.random.default_rng(1).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, compress)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", np.array([0, 1, 1, 0, 1]), compress)
    by_file = data.load(str(tmp_path / f"train-images-idx3-ubyte{suffix}"), RGB_12)
    by_dir = data.load(str(tmp_path), RGB_12)
    assert by_file.x.shape == (5, 12, 12, 3) and by_file.y.tolist() == [0, 1, 1, 0, 1]
    assert np.array_equal(by_file.x, by_dir.x)
    # Grayscale converted to RGB: three equal channels.
    assert np.array_equal(by_file.x[..., 0], by_file.x[..., 2])


def test_lfw_builtin():
    ds = data.load(data.LFW, GRAY_12)
    assert ds.x.shape == (200, 12, 12, 1) and ds.y.tolist() == [1] * 100 + [0] * 100


def test_split_is_stratified_and_seeded():
    ds = data.Dataset(np.arange(40, dtype=np.int8).reshape(40, 1, 1, 1), np.array([0] * 20 + [1] * 20), "d")
    tr, ev = data.split(ds, 0.25, seed=3)
    assert (len(tr), len(ev)) == (30, 10) and ev.y.tolist().count(1) == 5
    assert np.array_equal(data.split(ds, 0.25, seed=3)[1].x, ev.x)
    assert sorted(tr.x.ravel().tolist() + ev.x.ravel().tolist()) == list(range(40))


def _bad_folder_empty_class(tmp_path):
    (tmp_path / "a").mkdir()
    return str(tmp_path)


def _bad_folder_unreadable(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"not an image")
    return str(tmp_path)


def _bad_npz(**arrays):
    def make(tmp_path):
        np.savez(tmp_path / "d.npz", **arrays)
        return str(tmp_path / "d.npz")
    return make


def _bad_idx_truncated(tmp_path):
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1]), False)
    raw = bytes([0, 0, 8, 3]) + np.array([2, 12, 12], ">u4").tobytes() + b"\0" * 100
    (tmp_path / "train-images-idx3-ubyte").write_bytes(raw)
    return str(tmp_path / "train-images-idx3-ubyte")


def _bad_idx_no_labels(tmp_path):
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 12, 12)), False)
    return str(tmp_path / "t10k-images-idx3-ubyte")


@pytest.mark.parametrize("make,message", [
    (lambda tmp_path: str(tmp_path / "missing"), "data not found"),
    (lambda tmp_path: str(tmp_path), "no class subfolders"),
    (_bad_folder_empty_class, "class folder has no images"),
    (_bad_folder_unreadable, "cannot read image"),
    (_bad_npz(x=np.zeros((2, 12, 12), np.uint8), y=np.array([0, 5])), "model has 2 classes"),
    (_bad_npz(x=np.zeros((2, 12, 12), np.uint8), y=np.array([0, 1, 1])), "2 samples but 3 labels"),
    (_bad_npz(x=np.zeros((2, 8, 8, 3), np.int8), y=np.array([0, 1])), "the model takes [N, 12, 12, 3]"),
    (_bad_npz(x=np.zeros((2, 12, 12, 3), np.float64), y=np.array([0, 1])), "expected uint8 pixels"),
    (_bad_npz(x=np.zeros((2, 12, 12, 2), np.uint8), y=np.array([0, 1])), "pixels must be"),
    (_bad_npz(x=np.zeros((0, 12, 12), np.uint8), y=np.zeros(0, np.int64)), "no samples"),
    (_bad_npz(x=np.zeros((2, 12, 12), np.uint8)), "missing array(s) y"),
    (_bad_idx_truncated, "truncated"),
    (_bad_idx_no_labels, "t10k-labels-idx1-ubyte not found"),
])
def test_bad_data(tmp_path, make, message):
    source = make(tmp_path)
    with pytest.raises(UserError) as info:
        data.load(source, RGB_12)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A converted 2-class int8 model, and synthetic data it can separate (dark vs bright images)."""
    graph = ir.load(tf_models.mobilenet_like(classes=2, size=12))
    pipeline.convert(graph, {"bias": "last 3", "classifier": True})
    model_bytes = ir.emit(graph)
    spec = data.InputSpec.of_model(ir.load(model_bytes))
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 2
    pixels = np.where(labels[:, None, None, None] == 1, 190, 60) + rng.integers(-40, 40, (40, 12, 12, 3))
    directory = tmp_path_factory.mktemp("tiny")
    (directory / "train.tflite").write_bytes(model_bytes)
    np.savez(directory / "data.npz", x=pixels.astype(np.uint8), y=labels)
    return model_bytes, data.load(str(directory / "data.npz"), spec), directory


def test_input_spec_of_int8_model(tiny):
    spec = data.InputSpec.of_model(ir.load(tiny[0]))
    assert (spec.shape, spec.dtype, spec.num_classes) == ((12, 12, 3), np.int8, 2)
    assert spec.from_pixels(np.array([0, 128, 255], np.uint8)).tolist() == [-128, 0, 127]


def _without_seconds(metrics):
    return {k: v for k, v in metrics.items() if k != "seconds"}


def test_training_improves_and_is_deterministic(tiny):
    model_bytes, ds, _ = tiny
    config = train.TrainConfig(epochs=2, lr=TINY_LR, seed=1)
    first = train.train(model_bytes, ds, ds, config, progress=None)
    m = first.metrics
    assert {"initial_eval_accuracy", "final_eval_accuracy", "epochs", "seconds", "model"} <= set(m)
    assert len(m["epochs"]) == 2 and set(m["epochs"][0]) == {"train_loss", "train_accuracy", "eval_accuracy"}
    assert m["final_eval_accuracy"] >= m["initial_eval_accuracy"] + 0.3
    again = train.train(model_bytes, ds, ds, config, progress=None)
    assert json.dumps(_without_seconds(again.metrics)) == json.dumps(_without_seconds(m))
    other_seed = train.train(model_bytes, ds, ds, train.TrainConfig(epochs=2, lr=TINY_LR, seed=2), progress=None)
    assert other_seed.metrics["epochs"] != m["epochs"]


def test_exported_model_starts_from_the_trained_state(tiny, tmp_path):
    model_bytes, ds, _ = tiny
    probe = [[x[None], np.array([-1], np.int32), np.zeros(1, np.float32)] for x in ds.x[:6]]
    with TflmSession(model_bytes, preserve_all_tensors=True) as session:
        result = train.train(model_bytes, ds, ds, train.TrainConfig(epochs=1, lr=TINY_LR), progress=None,
                             session=session)
        trained_outputs = [session.invoke(inputs) for inputs in probe]
    state.save(str(tmp_path / "s.npz"), model_bytes, result.state)
    exported = ir.emit(state.export(model_bytes, str(tmp_path / "s.npz")))
    with TflmSession(model_bytes) as untrained, TflmSession(exported) as fresh:
        fresh_outputs = [fresh.invoke(inputs) for inputs in probe]
        untrained_outputs = [untrained.invoke(inputs) for inputs in probe]
    for got, want in zip(fresh_outputs, trained_outputs):
        assert all(np.array_equal(g, w) for g, w in zip(got, want))
    assert any(not np.array_equal(u[0], w[0]) for u, w in zip(untrained_outputs, trained_outputs))


def test_export_rejects_a_mismatched_state(tiny, tmp_path):
    model_bytes, _, _ = tiny
    graph = ir.load(model_bytes)
    good = {var.name: np.zeros(var.shape, var.dtype) for var, _ in state.variables(graph)}
    cases = {"different model": (b"other", good),
             "missing": (model_bytes, dict(list(good.items())[1:])),
             "variable is": (model_bytes, {k: v.astype(np.int64) for k, v in good.items()})}
    for message, (trained_on, arrays) in cases.items():
        state.save(str(tmp_path / "s.npz"), trained_on, arrays)
        with pytest.raises(UserError, match=message):
            state.export(model_bytes, str(tmp_path / "s.npz"))


def test_cli_train_and_export(tiny, tmp_path):
    _, _, directory = tiny
    model, npz = str(directory / "train.tflite"), str(directory / "data.npz")
    outputs = {name: str(tmp_path / name) for name in ("m.json", "s.npz", "p.png", "out.tflite")}
    r = run_cli("train", model, "--data", npz, "--eval-split", "0.25", "--epochs", "2", "--lr", str(TINY_LR),
                "--metrics-json", outputs["m.json"], "--state-out", outputs["s.npz"], "--plot", outputs["p.png"])
    assert r.returncode == 0, r.stderr
    assert "eval accuracy" in r.stdout and "epoch 2/2" in r.stderr
    metrics = json.load(open(outputs["m.json"]))
    assert metrics["data"]["train_samples"] == 30 and metrics["data"]["eval_samples"] == 10
    assert Image.open(outputs["p.png"]).size[0] > 0
    r = run_cli("export", model, "--state", outputs["s.npz"], "-o", outputs["out.tflite"])
    assert r.returncode == 0, r.stderr
    assert state.variables(ir.load_file(outputs["out.tflite"]))


@pytest.mark.parametrize("args,message", [
    (["train", "{model}"], "--data is required"),
    (["train", "{model}", "--data", "{tmp}/nope"], "data not found"),
    (["train", "{model}", "--data", "{npz}", "--eval-data", "{npz}", "--eval-split", "0.2"], "not both"),
    (["train", "{model}", "--data", "{npz}", "--eval-split", "1.5"], "between 0 and 1"),
    (["train", "{model}", "--data", "{npz}", "--epochs", "-1"], "--epochs must be >= 0"),
    (["train", "{tmp}/missing.tflite", "--data", "{npz}"], "cannot read model"),
    (["export", "{model}", "--state", "{npz}", "-o", "{tmp}/o.tflite"], "not a tflm-train state file"),
    (["export", "{model}", "-o", "{tmp}/o.tflite"], "--state is required"),
])
def test_cli_bad_inputs(tiny, tmp_path, args, message):
    _, _, directory = tiny
    values = {"model": str(directory / "train.tflite"), "npz": str(directory / "data.npz"), "tmp": str(tmp_path)}
    r = run_cli(*[a.format(**values) for a in args])
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tflm-train: error:") and message in lines[0], r.stderr
