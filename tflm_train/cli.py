"""tflm-train command line (absl, like TFLM's own tools).

  tflm-train convert IN.tflite --sparse-scheme S.json -o OUT.tflite [--no-reorder] [--rounding nearest|stochastic]
             [--no-qas] [--stock-forward] [--no-activation-masks] [--no-fused-gradients] [--no-recompute]
             [--fractional-weights]
  tflm-train inspect MODEL.tflite [--json] [--measure]
  tflm-train import-mcunet MODEL.pkl -o OUT.tflite [--num-classes N] [--resolution R]
  tflm-train train MODEL_TRAIN.tflite --data D [--epochs E] [--lr LR] [--lr-schedule cosine|constant] [--seed S]
             [--eval-data D2 | --eval-split F] [--state-out STATE.npz] [--metrics-json M.json] [--plot P.png]
  tflm-train export MODEL_TRAIN.tflite --state STATE.npz -o OUT.tflite
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
flags.DEFINE_bool("stock-forward", False, "convert: keep TFLM's builtin forward conv kernels (e.g. CMSIS-NN): "
                  "faster on a device, more arena")
flags.DEFINE_bool("no-activation-masks", False, "convert: the backward reads the saved int8 activations instead of "
                  "their packed TFLT_ACTIVATION_MASK bits (8x more arena for them)")
flags.DEFINE_bool("no-fused-gradients", False, "convert: materialise each depthwise input gradient instead of "
                  "streaming it a channel at a time into the conv before it (more arena)")
flags.DEFINE_bool("no-recompute", False, "convert: keep saved activations from the forward to the backward "
                  "instead of recomputing them where that saves arena (faster, more arena)")
flags.DEFINE_bool("fractional-weights", False, "convert: keep 8 fractional bits per trainable weight (one more "
                  "byte each) so updates below one int8 step accumulate")
flags.DEFINE_bool("json", False, "inspect: print one JSON object")
flags.DEFINE_bool("measure", False, "inspect: also measure the arena in the stock TFLM interpreter")
flags.DEFINE_integer("num-classes", None, "import-mcunet: replace the classifier head")
flags.DEFINE_integer("resolution", None, "import-mcunet: input resolution")
flags.DEFINE_string("data", None, "train: training data (image folder, .npz, IDX images, or 'lfw')")
flags.DEFINE_string("eval-data", None, "train: evaluation data (default: the training data)")
flags.DEFINE_float("eval-split", None, "train: hold out this fraction of --data (per class, seeded) for evaluation")
flags.DEFINE_integer("epochs", 1, "train: passes over the training data")
flags.DEFINE_float("lr", 0.01, "train: learning rate (real-valued SGD step, via QAS)")
flags.DEFINE_enum("lr-schedule", "cosine", ["cosine", "constant"], "train: per-step learning-rate schedule")
flags.DEFINE_integer("seed", 0, "train: shuffling and split seed")
flags.DEFINE_string("state-out", None, "train: write the trained variables (.npz)")
flags.DEFINE_string("metrics-json", None, "train: write metrics (all fields but 'seconds' are deterministic)")
flags.DEFINE_string("plot", None, "train: write a loss/accuracy plot (.png)")
flags.DEFINE_string("state", None, "export: trained state (.npz from train --state-out)")

USAGE = "usage: tflm-train {convert,inspect,import-mcunet,train,export} ... (see --helpfull)"


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
                                      qas=not FLAGS["no-qas"].value,
                                      lower_forward=not FLAGS["stock-forward"].value,
                                      activation_masks=not FLAGS["no-activation-masks"].value,
                                      fuse_gradients=not FLAGS["no-fused-gradients"].value,
                                      recompute=not FLAGS["no-recompute"].value,
                                      fractional_weights=FLAGS["fractional-weights"].value)
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


def cmd_train(argv: list) -> None:
    from tflm_train import data, ir, state, train

    model_bytes = ir.read_file(_one_path(argv, "training model"))
    spec = data.InputSpec.of_model(ir.load(model_bytes))
    config = train.TrainConfig(epochs=FLAGS.epochs, lr=FLAGS.lr, lr_schedule=FLAGS["lr-schedule"].value,
                               seed=FLAGS.seed)
    config.validate()
    train_set = data.load(_required("data"), spec)
    eval_source, eval_split = FLAGS["eval-data"].value, FLAGS["eval-split"].value
    if eval_source and eval_split is not None:
        raise UserError("give --eval-data or --eval-split, not both")
    if eval_source:
        eval_set = data.load(eval_source, spec)
    elif eval_split is not None:
        train_set, eval_set = data.split(train_set, eval_split, FLAGS.seed)
    else:
        eval_set = train_set
    result = train.train(model_bytes, train_set, eval_set, config)
    m = result.metrics
    print(f"eval accuracy {m['initial_eval_accuracy']:.3f} -> {m['final_eval_accuracy']:.3f} "
          f"({config.epochs} epochs, {len(train_set)} training samples, {m['seconds']:.1f} s)")
    for flag, write in (("metrics-json", lambda path: train.save_metrics(path, m)),
                        ("state-out", lambda path: state.save(path, model_bytes, result.state)),
                        ("plot", lambda path: train.plot(path, m))):
        if FLAGS[flag].value:
            write(FLAGS[flag].value)
            print(f"wrote {FLAGS[flag].value}")


def cmd_export(argv: list) -> None:
    from tflm_train import ir, state

    model_bytes = ir.read_file(_one_path(argv, "training model"))
    out = _required("output")
    ir.save_file(state.export(model_bytes, _required("state")), out)
    print(f"wrote {out}")


COMMANDS = {"convert": cmd_convert, "inspect": cmd_inspect, "import-mcunet": cmd_import_mcunet,
            "train": cmd_train, "export": cmd_export}


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
