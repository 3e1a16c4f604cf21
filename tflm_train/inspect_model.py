"""`tflm-train inspect`: ops by role, trainable tensors, and the arena estimate with its live-memory timeline."""
from __future__ import annotations

import collections
import json

from tflm_train import ir
from tflm_train.converter import memory, metadata

ROLES = ("init", "forward", "loss", "backward", "update")


def report(graph: ir.Graph) -> dict:
    md = metadata.read(graph)
    trainables = [{"name": t.name, "layer": layer, "kind": kind, "shape": list(t.shape), "dtype": t.dtype.name,
                   "bytes": t.nbytes}
                  for kind, layer, t in (metadata.trainable_arena_tensors(graph, md) if md is not None else [])]
    counts = collections.Counter(op.role for op in graph.ops)
    est = memory.estimate(graph)
    return {
        "training_model": md is not None,
        "ops": {role: counts.get(role, 0) for role in ROLES},
        "trainable_tensors": trainables,
        "trainable_bytes": sum(t["bytes"] for t in trainables),
        "estimated_arena_bytes": est.arena_bytes,
        "estimated_planned_bytes": est.planned_bytes,
        "estimated_persistent_bytes": est.variable_bytes + est.overhead_bytes,
        # Tensors whose arena offset the model itself gives TFLM (in-place chains, its own arena plan).
        "offline_planned_tensors": len(memory.arena_offsets(graph)),
        "timeline": [{"op": i, "kind": op.kind, "role": op.role, "live_bytes": live}
                     for i, (op, live) in enumerate(zip(graph.ops, est.timeline))],
    }


def _print_table(path: str, r: dict) -> None:
    print(f"{path}: {'training' if r['training_model'] else 'inference'} model")
    print("ops by role: " + ", ".join(f"{k} {v}" for k, v in r["ops"].items()))
    if r["trainable_tensors"]:
        print(f"\ntrainable tensors ({r['trainable_bytes']} bytes):")
        for t in r["trainable_tensors"]:
            print(f"  {t['kind']:6s} {t['bytes']:8d} B  {str(t['shape']):18s} {t['layer']}")
    print(f"\nestimated arena: {r['estimated_arena_bytes']} bytes "
          f"(planned {r['estimated_planned_bytes']}, persistent {r['estimated_persistent_bytes']})")
    if r["offline_planned_tensors"]:
        print(f"offline-planned tensors: {r['offline_planned_tensors']} (the model's own arena offsets)")
    for key in ("measured_arena_bytes", "peak_sram_bytes"):
        if key in r:
            print(f"{key.replace('_', ' ')}: {r[key]}")
    peak = max((e["live_bytes"] for e in r["timeline"]), default=0) or 1
    print("\nlive memory per op:")
    for e in r["timeline"]:
        bar = "#" * round(40 * e["live_bytes"] / peak)
        print(f"  {e['op']:4d} {e['role']:8s} {e['kind'][:26]:26s} {e['live_bytes']:8d} {bar}")


def main(path: str, as_json: bool = False, measure: bool = False) -> None:
    data = ir.read_file(path)
    r = report(ir.load(data))
    if measure:
        from tflm_train import measure as measuring
        r.update(measuring.measure(data))
    if as_json:
        print(json.dumps(r))
    else:
        _print_table(path, r)
