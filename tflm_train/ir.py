"""One editable graph IR for .tflite models, and its loader/emitter.

Every converter pass, the importer and the reference executor work on this IR.
The flatbuffer object API comes from the pinned tflite-micro wheel, so loading
a model never imports TensorFlow (which must not share a process with TFLM).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import flatbuffers
import numpy as np
from tflite_micro.tensorflow.lite.python import schema_py_generated as schema

from tflm_train.errors import UserError

BUILTIN_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
BUILTIN_CODES = {k: v for v, k in BUILTIN_NAMES.items()}

_DTYPES = {
    schema.TensorType.FLOAT32: np.dtype(np.float32),
    schema.TensorType.INT32: np.dtype(np.int32),
    schema.TensorType.UINT8: np.dtype(np.uint8),
    schema.TensorType.INT64: np.dtype(np.int64),
    schema.TensorType.BOOL: np.dtype(np.bool_),
    schema.TensorType.INT16: np.dtype(np.int16),
    schema.TensorType.INT8: np.dtype(np.int8),
    schema.TensorType.FLOAT64: np.dtype(np.float64),
    schema.TensorType.UINT32: np.dtype(np.uint32),
    schema.TensorType.UINT16: np.dtype(np.uint16),
}
_TYPE_CODES = {v: k for k, v in _DTYPES.items()}

# TFLM reads int32/float constants in place: keep every buffer 16-byte aligned,
# as TensorFlow's converter does.
BUFFER_ALIGNMENT = 16
TFLITE_FILE_IDENTIFIER = b"TFL3"
# TFLM's offline memory plan: uint32 version, subgraph, tensor count, then an int32 head offset per
# tensor (-1: TFLM's planner places it).
OFFLINE_PLAN_METADATA = "OfflineMemoryAllocation"
OFFLINE_PLAN_VERSION = 1
ONLINE_PLANNED = -1


@dataclasses.dataclass(eq=False)
class Quant:
    scale: np.ndarray          # float32, one per channel (or one)
    zero_point: np.ndarray     # int64, same length as scale
    axis: int = 0              # quantized dimension for per-channel tensors

    def __post_init__(self):
        self.scale = np.atleast_1d(np.asarray(self.scale, np.float32))
        self.zero_point = np.atleast_1d(np.asarray(self.zero_point, np.int64))

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1


@dataclasses.dataclass(eq=False)
class Tensor:
    name: str
    shape: tuple
    dtype: np.dtype
    data: Optional[np.ndarray] = None   # constant contents (flash); for variables, the initial value is NOT here
    quant: Optional[Quant] = None
    is_variable: bool = False
    shape_signature: Optional[tuple] = None

    def __post_init__(self):
        self.shape = tuple(int(d) for d in self.shape)
        self.dtype = np.dtype(self.dtype)
        if self.data is not None:
            self.data = np.asarray(self.data, self.dtype).reshape(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def is_constant(self) -> bool:
        return self.data is not None and not self.is_variable

    def __repr__(self):
        return f"Tensor({self.name!r}, {self.shape}, {self.dtype.name})"


@dataclasses.dataclass(eq=False)
class Op:
    kind: str                                  # builtin name ("CONV_2D") or custom code ("TFLT_...")
    inputs: list                               # Tensor or None (optional input absent)
    outputs: list
    options: object = None                     # builtin options, as the schema's object-API "...T" instance
    custom_options: Optional[bytes] = None
    custom: bool = False
    version: int = 1
    intermediates: list = dataclasses.field(default_factory=list)
    role: str = "forward"                      # forward | init | loss | backward | update (training models)

    def __repr__(self):
        return f"Op({self.kind}, in={[t and t.name for t in self.inputs]}, out={[t.name for t in self.outputs]})"


def producers(ops: list) -> dict:
    """{id(tensor): the op among `ops` writing it}."""
    return {id(t): op for op in ops for t in op.outputs if t is not None}


def readers(ops: list) -> dict:
    """{id(tensor): [(op index, input slot), ...]} over `ops`, in op order."""
    out: dict = {}
    for i, op in enumerate(ops):
        for slot, t in enumerate(op.inputs):
            if t is not None:
                out.setdefault(id(t), []).append((i, slot))
    return out


@dataclasses.dataclass(eq=False)
class Graph:
    ops: list
    inputs: list
    outputs: list
    tensors: list                              # emission order; tensors no op or I/O references are dropped
    metadata: dict = dataclasses.field(default_factory=dict)   # name -> bytes
    description: str = ""
    name: str = ""
    signature_defs: list = dataclasses.field(default_factory=list)  # raw SignatureDefT, remapped at emit
    # {id(tensor): arena head offset} TFLM takes from the model instead of planning (OFFLINE_PLAN_METADATA);
    # None until planned: the arena estimate then derives them from the ops (converter/memory.py).
    arena_offsets: Optional[dict] = None

    def add_tensor(self, tensor: Tensor) -> Tensor:
        self.tensors.append(tensor)
        return tensor

    def producers(self) -> dict:
        return producers(self.ops)

    def referenced_tensors(self) -> list:
        used = {id(t) for t in self.inputs + self.outputs}
        for op in self.ops:
            used.update(id(t) for t in op.inputs + op.outputs + op.intermediates if t is not None)
        return [t for t in self.tensors if id(t) in used]


# ---------------------------------------------------------------- loading

def load(data: bytes) -> Graph:
    """Parses .tflite bytes into a Graph; any malformed input becomes a UserError."""
    if len(data) < 8 or data[4:8] != TFLITE_FILE_IDENTIFIER:
        raise UserError("not a .tflite flatbuffer (missing 'TFL3' identifier)")
    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
        return _graph_from_model(model, data)
    except UserError:
        raise
    except Exception as exc:  # the flatbuffer reader raises anything on truncation
        raise UserError(f"corrupt or truncated .tflite file ({type(exc).__name__})") from None


def read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise UserError(f"cannot read model {path}: {exc.strerror}") from None


def load_file(path: str) -> Graph:
    return load(read_file(path))


def _buffer_bytes(model, buf, raw: bytes) -> bytes:
    if buf.data is not None and len(buf.data):
        return np.asarray(buf.data, np.uint8).tobytes()
    if buf.offset > 1 and buf.size:
        if buf.offset + buf.size > len(raw):
            raise UserError("corrupt .tflite file: buffer offset past end of file")
        return raw[buf.offset: buf.offset + buf.size]
    return b""


def _graph_from_model(model, raw: bytes) -> Graph:
    if not model.subgraphs:
        raise UserError("model has no subgraph")
    if len(model.subgraphs) != 1:
        raise UserError(f"model has {len(model.subgraphs)} subgraphs; only single-subgraph models are supported")
    sg = model.subgraphs[0]
    buffers = model.buffers or []
    arrays: dict = {}

    def constant(tt) -> Optional[np.ndarray]:
        if not tt.buffer or tt.buffer >= len(buffers):
            return None
        if tt.buffer not in arrays:
            arrays[tt.buffer] = _buffer_bytes(model, buffers[tt.buffer], raw)
        payload = arrays[tt.buffer]
        if not payload:
            return None
        dtype = _dtype(tt.type, tt.name)
        shape = tuple(tt.shape) if tt.shape is not None else ()
        count = int(np.prod(shape, dtype=np.int64))
        if count * dtype.itemsize != len(payload):
            raise UserError(f"corrupt .tflite file: tensor '{_name(tt.name)}' has {len(payload)} bytes for shape {shape}")
        return np.frombuffer(payload, dtype).reshape(shape)

    tensors = []
    for tt in sg.tensors or []:
        q = tt.quantization
        quant = None
        if q is not None and q.scale is not None and len(q.scale):
            zp = q.zeroPoint if q.zeroPoint is not None and len(q.zeroPoint) else np.zeros(len(q.scale), np.int64)
            quant = Quant(np.asarray(q.scale), np.asarray(zp), int(q.quantizedDimension))
        shape = tuple(tt.shape) if tt.shape is not None else ()
        sig = tuple(tt.shapeSignature) if tt.shapeSignature is not None else None
        tensors.append(Tensor(_name(tt.name), shape, _dtype(tt.type, tt.name), constant(tt), quant,
                              bool(tt.isVariable), sig))

    def ref(i):
        if i < 0:
            return None
        if i >= len(tensors):
            raise UserError(f"corrupt .tflite file: tensor index {i} out of range")
        return tensors[i]

    codes = model.operatorCodes or []
    ops = []
    for op in sg.operators or []:
        if op.opcodeIndex >= len(codes):
            raise UserError("corrupt .tflite file: operator code index out of range")
        code = codes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        custom = builtin == schema.BuiltinOperator.CUSTOM
        kind = _name(code.customCode) if custom else BUILTIN_NAMES.get(builtin, f"BUILTIN_{builtin}")
        custom_options = bytes(np.asarray(op.customOptions, np.uint8)) if op.customOptions is not None else None
        ops.append(Op(kind, [ref(i) for i in _ints(op.inputs)], [ref(i) for i in _ints(op.outputs)],
                      op.builtinOptions, custom_options, custom, int(code.version or 1),
                      [ref(i) for i in _ints(op.intermediates)]))

    metadata = {}
    for md in model.metadata or []:
        if md.buffer < len(buffers):
            metadata[_name(md.name)] = _buffer_bytes(model, buffers[md.buffer], raw)
    graph = Graph(ops, [ref(i) for i in _ints(sg.inputs)], [ref(i) for i in _ints(sg.outputs)], tensors,
                  metadata, _name(model.description), _name(sg.name))
    graph.arena_offsets = _offline_plan(metadata.pop(OFFLINE_PLAN_METADATA, None), tensors)
    graph.signature_defs = [_with_tensor_refs(sd, tensors) for sd in model.signatureDefs or []]
    return graph


def without_offline_plan(data: bytes) -> bytes:
    """`data` with its offline memory plan hidden from TFLM (the metadata's name changed in place, so every
    tensor index stays): TFLM's linear planner, which keeps every tensor readable, refuses one, and
    placing every tensor apart needs none."""
    name = OFFLINE_PLAN_METADATA.encode()
    prefix = len(name).to_bytes(4, "little")
    return bytes(data).replace(prefix + name + b"\0", prefix + name.lower() + b"\0")


def _offline_plan(payload: Optional[bytes], tensors: list) -> dict:
    if payload is None:
        return {}
    words = np.frombuffer(payload[:len(payload) // 4 * 4], "<i4")
    if len(words) < 3 or words[2] != len(tensors) or len(words) != 3 + len(tensors):
        raise UserError(f"corrupt .tflite file: {OFFLINE_PLAN_METADATA} metadata does not give one offset per "
                        f"tensor ({len(tensors)})")
    return {id(t): int(o) for t, o in zip(tensors, words[3:]) if o != ONLINE_PLANNED}


def _with_tensor_refs(sd, tensors):
    for tm in (sd.inputs or []) + (sd.outputs or []):
        tm.tensorIndex = tensors[tm.tensorIndex] if 0 <= tm.tensorIndex < len(tensors) else None
    return sd


def _ints(v) -> list:
    return [] if v is None else [int(i) for i in v]


def _name(b) -> str:
    if b is None:
        return ""
    return b.decode("utf-8", "replace") if isinstance(b, (bytes, bytearray)) else str(b)


def _dtype(code, name) -> np.dtype:
    if code not in _DTYPES:
        raise UserError(f"tensor '{_name(name)}' has unsupported type code {code}")
    return _DTYPES[code]


# ---------------------------------------------------------------- emitting

class _AlignedBufferT(schema.BufferT):
    def Pack(self, builder):
        data_offset = None
        if self.data is not None:
            payload = bytes(self.data)
            builder.StartVector(1, len(payload), BUFFER_ALIGNMENT)
            builder.head -= len(payload)
            builder.Bytes[builder.head: builder.head + len(payload)] = payload
            data_offset = builder.EndVector()
        schema.BufferStart(builder)
        if data_offset is not None:
            schema.BufferAddData(builder, data_offset)
        return schema.BufferEnd(builder)


def _buffer(payload: Optional[bytes]) -> _AlignedBufferT:
    b = _AlignedBufferT()
    b.data = payload if payload else None
    return b


def emit(graph: Graph) -> bytes:
    """Serialises the Graph to .tflite bytes."""
    tensors = graph.referenced_tensors()
    index = {id(t): i for i, t in enumerate(tensors)}
    buffers = [_buffer(None)]
    buffer_of_array: dict = {}

    def buffer_index(t: Tensor) -> int:
        if t.data is None or t.is_variable:
            return 0
        key = id(t.data)
        if key not in buffer_of_array:
            buffer_of_array[key] = len(buffers)
            buffers.append(_buffer(np.ascontiguousarray(t.data).astype(t.dtype.newbyteorder("<"), copy=False).tobytes()))
        return buffer_of_array[key]

    sg = schema.SubGraphT()
    sg.name = graph.name or None
    sg.tensors = []
    for t in tensors:
        tt = schema.TensorT()
        tt.name = t.name
        tt.shape = np.asarray(t.shape, np.int32)
        tt.type = _TYPE_CODES[t.dtype]
        tt.buffer = buffer_index(t)
        tt.isVariable = t.is_variable
        if t.shape_signature is not None:
            tt.shapeSignature = np.asarray(t.shape_signature, np.int32)
        if t.quant is not None:
            q = schema.QuantizationParametersT()
            q.scale = t.quant.scale.astype(np.float32)
            q.zeroPoint = t.quant.zero_point.astype(np.int64)
            q.quantizedDimension = t.quant.axis
            tt.quantization = q
        sg.tensors.append(tt)

    def idx(ts):
        return np.asarray([-1 if t is None else index[id(t)] for t in ts], np.int32)

    codes: list = []
    code_index: dict = {}
    sg.operators = []
    for op in graph.ops:
        key = (op.kind, op.custom, op.version)
        if key not in code_index:
            oc = schema.OperatorCodeT()
            if op.custom:
                oc.builtinCode = schema.BuiltinOperator.CUSTOM
                oc.customCode = op.kind
            else:
                if op.kind not in BUILTIN_CODES:
                    raise UserError(f"cannot emit unknown builtin operator {op.kind}")
                oc.builtinCode = BUILTIN_CODES[op.kind]
            # Readers older than the 32-bit code field look at the deprecated byte.
            oc.deprecatedBuiltinCode = min(oc.builtinCode, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
            oc.version = op.version
            code_index[key] = len(codes)
            codes.append(oc)
        o = schema.OperatorT()
        o.opcodeIndex = code_index[key]
        o.inputs = idx(op.inputs)
        o.outputs = idx(op.outputs)
        if op.intermediates:
            o.intermediates = idx(op.intermediates)
        if op.options is not None:
            o.builtinOptionsType = _options_type(op.options)
            o.builtinOptions = op.options
        if op.custom_options is not None:
            o.customOptions = np.frombuffer(op.custom_options, np.uint8)
        sg.operators.append(o)
    sg.inputs = idx(graph.inputs)
    sg.outputs = idx(graph.outputs)

    model = schema.ModelT()
    model.version = 3
    model.description = graph.description or None
    model.operatorCodes = codes
    model.subgraphs = [sg]
    model.metadata = []
    metadata = dict(graph.metadata)
    if graph.arena_offsets:
        offsets = [graph.arena_offsets.get(id(t), ONLINE_PLANNED) for t in tensors]
        metadata[OFFLINE_PLAN_METADATA] = np.asarray([OFFLINE_PLAN_VERSION, 0, len(tensors), *offsets],
                                                     "<i4").tobytes()
    for name, payload in metadata.items():
        md = schema.MetadataT()
        md.name = name
        md.buffer = len(buffers)
        buffers.append(_buffer(payload))
        model.metadata.append(md)
    model.buffers = buffers
    model.signatureDefs = _remapped_signatures(graph.signature_defs, index) or None

    builder = flatbuffers.Builder(1024 + sum(len(b.data or b"") for b in buffers) * 2)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_FILE_IDENTIFIER)
    return bytes(builder.Output())


def _remapped_signatures(signature_defs, index) -> list:
    import copy
    out = []
    for sd in signature_defs:
        sd2 = copy.copy(sd)
        maps = []
        for group in ("inputs", "outputs"):
            kept = []
            for tm in getattr(sd, group) or []:
                if tm.tensorIndex is not None and id(tm.tensorIndex) in index:
                    tm2 = copy.copy(tm)
                    tm2.tensorIndex = index[id(tm.tensorIndex)]
                    kept.append(tm2)
            maps.append(kept)
        sd2.inputs, sd2.outputs = maps
        out.append(sd2)
    return out


_OPTION_TYPES = {getattr(schema, name + "T"): code
                 for name, code in vars(schema.BuiltinOptions).items()
                 if not name.startswith("_") and hasattr(schema, name + "T")}


def _options_type(options) -> int:
    try:
        return _OPTION_TYPES[type(options)]
    except KeyError:
        raise UserError(f"cannot emit builtin options of type {type(options).__name__}") from None


def save_file(graph: Graph, path: str) -> None:
    """Writes atomically: a failed conversion never leaves a half-written file at `path`."""
    import os
    import tempfile
    data = emit(graph)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tflm-train-", dir=directory)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a model file is an ordinary file
        os.replace(tmp, path)
    except OSError as exc:
        os.unlink(tmp)
        raise UserError(f"cannot write {path}: {exc.strerror}") from None


