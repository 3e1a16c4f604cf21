"""Assembles the Arduino library of tflm-train from micro/ (sources are copied, never kept twice in git).

    python tools/make_arduino_library.py [--out build/arduino]

Writes <out>/tflm_train/{library.properties, src/..., examples/vww_train/}: the
example is the sketch plus the plain C++ it shares with the Mbed program
(examples/vww/common), since Arduino compiles only files in the sketch folder. The
library needs TFLM's Arduino library (tensorflow/tflite-micro-arduino-examples,
no longer in the Library Manager, hence no `depends=`) installed beside it:
micro/adapter includes TFLM headers by their normal paths. Install with `arduino-cli lib install --zip-path` after zipping,
or copy the folder into ~/Arduino/libraries/.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MICRO = REPO / "micro"
# What a firmware compiles: the public header, the kernel API, the math, the kernels, the TFLM adapter.
LIBRARY_FILES = ("tflm_train.h", "kernel_api.h")
LIBRARY_DIRS = ("core", "kernels", "adapter")
SKETCH = REPO / "examples" / "vww" / "arduino" / "vww_train"
SKETCH_COMMON = REPO / "examples" / "vww" / "common"

PROPERTIES = """name=tflm_train
version={version}
author=tflm-train contributors
maintainer=tflm-train contributors
sentence=On-device training (QAS, sparse update) for TensorFlow Lite Micro models.
paragraph=Registers the TFLT_* training ops converted by tflm-train with a MicroMutableOpResolver.
category=Data Processing
url=https://github.com/
architectures=*
includes=tflm_train.h
"""


def project_version() -> str:
    for line in (REPO / "pyproject.toml").read_text().splitlines():
        if line.strip().startswith("version"):
            return line.split("=", 1)[1].strip().strip('"')
    return "0.0.0"


def make_library(out: Path) -> Path:
    root = out / "tflm_train"
    if root.exists():
        shutil.rmtree(root)
    src = root / "src"
    src.mkdir(parents=True)
    for name in LIBRARY_FILES:
        shutil.copy2(MICRO / name, src / name)
    for directory in LIBRARY_DIRS:
        (src / directory).mkdir()
        for path in sorted((MICRO / directory).iterdir()):
            if path.suffix in (".h", ".cc"):
                shutil.copy2(path, src / directory / path.name)
    example = root / "examples" / SKETCH.name
    shutil.copytree(SKETCH, example)
    for path in sorted(SKETCH_COMMON.iterdir()):
        shutil.copy2(path, example / path.name)
    (root / "library.properties").write_text(PROPERTIES.format(version=project_version()))
    return root


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "arduino")
    args = parser.parse_args(argv)
    print(make_library(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
