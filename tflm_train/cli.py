"""tflm-train command line (absl, like TFLM's own tools).

  tflm-train convert IN.tflite --sparse-scheme S.json -o OUT.tflite [--no-reorder] [--rounding nearest|stochastic]
  tflm-train inspect MODEL.tflite [--json] [--measure]
  tflm-train import-mcunet MODEL.pkl -o OUT.tflite [--num-classes N] [--resolution R]
"""
from __future__ import annotations

import sys

from absl import app, flags

from tflm_train.errors import UserError

FLAGS = flags.FLAGS
flags.DEFINE_string("sparse-scheme", None, "convert: sparse-update scheme JSON")
flags.DEFINE_string("output", None, "output file", short_name="o")
flags.DEFINE_bool("no-reorder", False, "convert: conventional schedule (all updates at the end)")
flags.DEFINE_enum("rounding", "nearest", ["nearest", "stochastic"], "convert: rounding of int8 updates")
flags.DEFINE_bool("no-qas", False, "convert: plain int8 SGD without quantization-aware scaling (ablation)")
flags.DEFINE_bool("json", False, "inspect: print one JSON object")
flags.DEFINE_bool("measure", False, "inspect: also measure the arena in the stock TFLM interpreter")
flags.DEFINE_integer("num-classes", None, "import-mcunet: replace the classifier head")
flags.DEFINE_integer("resolution", None, "import-mcunet: input resolution")

USAGE = "usage: tflm-train {convert,inspect,import-mcunet} ... (see --helpfull)"


def _one_path(argv: list, what: str) -> str:
    if len(argv) != 1:
        raise UserError(f"expected one {what}, got {len(argv)}: {USAGE}")
    return argv[0]


def _required(name: str) -> str:
    value = FLAGS[name].value
    if not value:
        raise UserError(f"--{name} is required")
    return value


def cmd_convert(argv: list) -> None:
    from tflm_train import ir
    from tflm_train.converter import pipeline, scheme

    source = _one_path(argv, "input model")
    scheme_path, out = _required("sparse-scheme"), _required("output")
    graph = ir.load_file(source)
    options = pipeline.ConvertOptions(reorder=not FLAGS["no-reorder"].value, rounding=FLAGS.rounding,
                                      qas=not FLAGS["no-qas"].value)
    pipeline.convert(graph, scheme.load_scheme_file(scheme_path), options)
    ir.save_file(graph, out)
    print(f"wrote {out}")


def cmd_inspect(argv: list) -> None:
    from tflm_train import inspect_model
    inspect_model.main(_one_path(argv, "model"), as_json=FLAGS.json, measure=FLAGS.measure)


def cmd_import_mcunet(argv: list) -> None:
    from tflm_train import ir
    from tflm_train.importer.mcunet import import_mcunet

    graph = import_mcunet(_one_path(argv, "model .pkl"), num_classes=FLAGS["num-classes"].value,
                          resolution=FLAGS.resolution)
    out = _required("output")
    ir.save_file(graph, out)
    print(f"wrote {out}")


COMMANDS = {"convert": cmd_convert, "inspect": cmd_inspect, "import-mcunet": cmd_import_mcunet}


def main(argv: list) -> None:
    if len(argv) < 2 or argv[1] not in COMMANDS:
        print(f"tflm-train: error: {USAGE}", file=sys.stderr)
        sys.exit(2)
    try:
        COMMANDS[argv[1]](argv[2:])
    except UserError as exc:
        print(f"tflm-train: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
