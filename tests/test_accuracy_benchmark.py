"""benchmarks/accuracy.py --quick: the fp32 baseline and int8 runs learn, memory is measured, metrics are deterministic."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, SHARED, shared_path

BENCHMARK = os.path.join(REPO, "benchmarks", "accuracy.py")
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def run_benchmark(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, BENCHMARK, "--shared", SHARED, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def without_seconds(value):
    """The metrics minus the wall-clock fields, the only ones allowed to differ between identical runs."""
    if isinstance(value, dict):
        return {k: without_seconds(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [without_seconds(v) for v in value]
    return value


@pytest.fixture(scope="module")
def resources():
    shared_path("models", "tiny-training", "mcunet-5fps.pkl")
    shared_path("models", "tiny-training", "mbv2-w0.35.pkl")
    if not os.path.isdir(FASHION_MNIST):
        pytest.skip(f"Fashion-MNIST not installed ({FASHION_MNIST}: apt-get install dataset-fashion-mnist)")


def test_quick_benchmark_learns_and_is_deterministic(resources, tmp_path):
    r = run_benchmark("--quick", "--jobs", "2", "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    results = json.loads((tmp_path / "a" / "accuracy.json").read_text())
    runs = {run["key"]: run for run in results["models"]["mcunet-5fps"]["runs"]}
    assert set(runs) == {"fp32", "sparse-49kb", "classifier"}
    for run in runs.values():
        # A fresh 10-class head starts near chance; 200 samples of fine-tuning must lift it well above.
        assert run["initial_eval_accuracy"] < 0.2 and run["test_accuracy"] > 0.35, run
        assert run["final_eval_accuracy"] > run["initial_eval_accuracy"] + 0.2, run
    assert runs["fp32"]["peak_sram_bytes"] is None
    # Sparse update keeps saved activations and weight slices that classifier-only does not.
    assert 0 < runs["classifier"]["peak_sram_bytes"] < runs["sparse-49kb"]["peak_sram_bytes"]
    assert runs["classifier"]["peak_sram_bytes"] < runs["classifier"]["peak_sram_bytes_at_paper_resolution"]
    probe = results["models"]["mcunet-5fps"]["probe_agreement"]
    assert probe["correlation"] > 0.95 and probe["argmax_agreement"] >= 0.75
    assert "| mcunet-5fps | classifier-only |" in r.stdout
    assert (tmp_path / "a" / "accuracy_vs_memory.png").stat().st_size > 0

    # Alone and one at a time: the same metrics as among the others, two at a time.
    again = run_benchmark("--quick", "--only", "classifier", "--out", str(tmp_path / "b"))
    assert again.returncode == 0, again.stderr
    rerun = json.loads((tmp_path / "b" / "accuracy.json").read_text())["models"]["mcunet-5fps"]["runs"]
    assert without_seconds(rerun) == [without_seconds(runs["classifier"])]


@pytest.mark.parametrize("args, message", [
    (["--only", "no-such-run"], "unknown run 'no-such-run'"),
    (["--sweep", "--only", "qas-full,no-such-family"], "unknown family 'no-such-family'"),
    (["--quick", "--sweep"], "not allowed with argument"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--jobs", "0"], "--jobs must be >= 1"),
])
def test_bad_arguments_fail_in_one_line(resources, tmp_path, args, message):
    r = run_benchmark(*args, "--out", str(tmp_path))
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not os.listdir(tmp_path)


def test_missing_reference_models_fail_before_any_work(tmp_path):
    r = subprocess.run([sys.executable, BENCHMARK, "--shared", str(tmp_path / "none"), "--out", str(tmp_path / "o")],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "mcunet-5fps.pkl not found" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()
