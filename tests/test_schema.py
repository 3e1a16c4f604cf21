"""The schema generator, the generated Python tables and the generated C++ readers."""
import math
import random
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import flatbuffers
import pytest
from flatbuffers import number_types

from tflm_train.schema import generate, idl
from tflm_train.schema import training_ops_generated as ops
from tflm_train.schema.flatbuffer_io import Table

REPO = Path(__file__).resolve().parents[1]
TABLES = [c for c in vars(ops).values() if isinstance(c, type) and issubclass(c, Table) and c is not Table]
SCALAR_TABLES = [c for c in TABLES if all(f.kind == "scalar" for f in c.FIELDS)]


def cc_readable(cls) -> bool:
    """What the C++ readers cover: scalars, tables they cover, and vectors of tables of scalars."""
    return all(f.kind == "scalar" or (f.kind == "tables" and f.type in SCALAR_TABLES)
               or (f.kind == "table" and cc_readable(f.type)) for f in cls.FIELDS)


CC_TABLES = [c for c in TABLES if cc_readable(c)]
OPTION_TABLES = sorted(set(ops.OPTIONS_BY_OP.values()), key=lambda c: c.__name__)

# struct format -> flatbuffers type flags, to read buffers with the flatbuffers library itself.
FLAGS = {"?": number_types.BoolFlags, "b": number_types.Int8Flags, "B": number_types.Uint8Flags,
         "h": number_types.Int16Flags, "i": number_types.Int32Flags, "I": number_types.Uint32Flags,
         "f": number_types.Float32Flags, "q": number_types.Int64Flags}


def non_default(cls, seed=0):
    """An instance of `cls` in which every field differs from its default."""
    values = {}
    for i, f in enumerate(cls.FIELDS):
        if f.kind == "scalar" and f.type is not None:
            values[f.name] = [m for m in f.type if m != f.default][seed % (len(f.type) - 1)]
        elif f.kind == "scalar" and f.fmt == "?":
            values[f.name] = not f.default
        elif f.kind == "scalar":
            step = i + 1 + seed
            values[f.name] = f.default + (step * 0.25 if f.fmt == "f" else step if f.fmt.isupper() or i % 2 else -step)
        elif f.kind == "string":
            values[f.name] = f"{f.name}-{seed}-\u00e9"  # non-ASCII: exercises UTF-8
        elif f.kind == "vector":
            values[f.name] = [seed, 0, 255 if f.fmt == "B" else -(2**31)]
        elif f.kind == "table":
            values[f.name] = non_default(f.type, seed + 1)
        else:
            values[f.name] = [non_default(f.type, seed + 1), non_default(f.type, seed + 2)]
    return cls(**values)


def flatbuffer(build):
    """Bytes of a one-table flatbuffer whose fields `build(builder)` prepends."""
    builder = flatbuffers.Builder(0)
    builder.StartObject(16)
    build(builder)
    builder.Finish(builder.EndObject())
    return bytes(builder.Output())


# ------------------------------------------------------------------ generator

def test_generated_files_are_fresh():
    result = subprocess.run([sys.executable, "-m", "tflm_train.schema.generate", "--check"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_generation_is_deterministic_and_check_detects_stale_files(tmp_path, capsys):
    (tmp_path / generate.FBS_PATH).parent.mkdir(parents=True)
    shutil.copy(REPO / generate.FBS_PATH, tmp_path / generate.FBS_PATH)
    assert generate.main(["--check"], root=tmp_path) == 1  # nothing generated yet
    assert generate.main([], root=tmp_path) == 0
    for path in (generate.PY_PATH, generate.CC_PATH):
        assert (tmp_path / path).read_bytes() == (REPO / path).read_bytes()
    assert generate.main(["--check"], root=tmp_path) == 0
    with open(tmp_path / generate.CC_PATH, "a") as header:
        header.write("// edited by hand\n")
    capsys.readouterr()
    assert generate.main(["--check"], root=tmp_path) == 1
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and str(generate.CC_PATH) in message and str(generate.PY_PATH) not in message


@pytest.mark.parametrize("text, line, message", [
    ("namespace x;\nstruct S { a: int; }\n", 2, "unsupported declaration 'struct'"),
    ("table T {\n  a: int;\n  b: Foo;\n}\n", 3, "unknown type 'Foo'"),
    ("enum E : int { A = 0 }\n", 1, "byte or ubyte"),
    ("enum E : byte {\n  A,\n}\n", 2, "expected ="),
    ("enum E : ubyte { A = -1 }\n", 1, "integer value of type ubyte"),
    ("table T {\n  a: byte = 300;\n}\n", 2, "default '300' is not a valid byte"),
    ("table T {\n  a: float = inf;\n}\n", 2, "not a valid float"),
    ("enum E : byte { A = 1 }\ntable T {\n  e: E;\n}\n", 3, "member of enum E"),
    ("table T {\n  v: [string];\n}\n", 2, "only vectors of scalars or tables"),
    ("table U {}\ntable T {\n  u: U = 1;\n}\n", 3, "only scalar and enum fields take a default"),
    ("table T {\n  s: string = x;\n}\n", 2, "only scalar and enum fields take a default"),
    ("table T { a: int (deprecated); }\n", 1, "unexpected character '('"),
    ("table T {\n  a: int;\n  a: int;\n}\n", 3, "already declared"),
    ("table T {\n  a: int;\n", 3, "unexpected end of file"),
    ("// op: X\nenum E : byte { A = 0 }\n", 1, "directly above a table"),
    ("// op: X\n\ntable T {}\n", 1, "directly above a table"),
    ("// op: X Y\ntable T {}\n", 1, "comma-separated op names"),
    ("// op: X\ntable T {}\n// op: X\ntable U {}\n", 3, "already listed above another table"),
    ('// attribute "version" = one\n', 1, "attribute"),
    ("table T {}\nroot_type U;\n", 2, "root_type 'U' is not a table"),
    ('table T {}\nroot_type T;\nfile_identifier "AB";\n', 3, "exactly 4 ASCII characters"),
])
def test_schema_errors_name_the_line(text, line, message):
    with pytest.raises(idl.SchemaError) as error:
        idl.parse(text, "t.fbs")
    assert str(error.value).startswith(f"t.fbs:{line}: ") and message in str(error.value)


def test_recursive_tables_are_rejected():
    schema = idl.parse("table A { b: [B]; }\ntable B { a: [A]; }\n")
    with pytest.raises(idl.SchemaError, match="recursive tables"):
        generate.render(schema)


def test_schema_conventions_are_parsed():
    schema = idl.parse('// attribute "format_version" = 7\n// op: OP_A, OP_B\ntable T {\n  x: int = -3;\n}\n')
    assert schema.constants["format_version"][0] == 7
    assert schema.tables["T"].ops == ["OP_A", "OP_B"]
    assert schema.tables["T"].fields[0].default == -3


EVERY_TYPE_FBS = """
namespace demo.ns;
// attribute "answer" = 42
enum Mode : ubyte { OFF = 0, ON = 200 }
// op: DEMO_OP
table Every {
  a: bool = true;
  b: byte = -128;
  c: ubyte = 255;
  d: short = -32768;
  e: int = -2147483648;
  f: uint = 4294967295;
  g: float = 0.1;
  h: long = -9223372036854775808;
  m: Mode = ON;
}
// op: DEMO_LIST
table Many {
  before: short = 7;
  items: [Every];
  one: Every;
  after: Mode = ON;
}
"""


def test_every_scalar_type_round_trips_in_python():
    module = {}
    exec(compile(generate.render_python(idl.parse(EVERY_TYPE_FBS)), "every.py", "exec"), module)
    every, many, mode = module["Every"], module["Many"], module["Mode"]
    assert module["ANSWER"] == 42 and module["OPTIONS_BY_OP"] == {"DEMO_OP": every, "DEMO_LIST": many}
    assert every().g == struct.unpack("<f", struct.pack("<f", 0.1))[0] and every().m == mode.ON
    extremes = every(a=False, b=127, c=0, d=32767, e=2**31 - 1, f=0, g=-2.5, h=2**63 - 1, m=mode.OFF)
    for value in (extremes, every()):
        assert every.from_bytes(value.to_bytes()) == value
    assert every.from_bytes(b"") == every()
    for value in (many(before=-1, items=[extremes, every()], one=extremes, after=mode.OFF), many()):
        assert many.from_bytes(value.to_bytes()) == value
    assert many().one == every() and many.from_bytes(b"").one == every()


def test_every_scalar_type_compiles_in_cpp(tmp_path):
    if shutil.which("g++") is None:
        pytest.skip("g++ not found")
    (tmp_path / "every.h").write_text(generate.render_cpp(idl.parse(EVERY_TYPE_FBS)), encoding="utf-8")
    (tmp_path / "every.cc").write_text("""#include "every.h"
namespace s = demo::ns::schema;
constexpr s::Every kDefaults{};
static_assert(s::kAnswer == 42, "");
static_assert(kDefaults.a && kDefaults.b == -128 && kDefaults.c == 255 && kDefaults.d == -32768, "");
static_assert(kDefaults.e == INT32_MIN && kDefaults.f == UINT32_MAX && kDefaults.g == 0.1f, "");
static_assert(kDefaults.h == INT64_MIN && kDefaults.m == s::Mode::kOn, "");
bool Read(const uint8_t* buf, size_t size, s::Every* out) { return s::ReadEvery(buf, size, out); }
static_assert(s::Many{}.before == 7 && s::Many{}.items_count == 0 && s::Many{}.after == s::Mode::kOn, "");
static_assert(s::Many{}.one.b == -128 && s::Many{}.one.m == s::Mode::kOn, "");
bool ReadFirst(const uint8_t* buf, size_t size, s::Many* many, s::Every* first) {
  return s::ReadMany(buf, size, many) && s::ReadManyItems(buf, size, 0, first);
}
""", encoding="utf-8")
    result = subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only",
                             str(tmp_path / "every.cc")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_options_by_op_matches_the_docs():
    docs = (REPO / "docs/training_ops.md").read_text(encoding="utf-8")
    assert set(re.findall(r"\bTFLT_[A-Z0-9_]+", docs)) == set(ops.OPTIONS_BY_OP)
    for line in docs.splitlines():
        op_names, tables = set(re.findall(r"\bTFLT_[A-Z0-9_]+", line)), set(re.findall(r"`(\w+Options)`", line))
        if len(op_names) == 1 and len(tables) == 1:
            assert ops.OPTIONS_BY_OP[op_names.pop()].__name__ == tables.pop(), line


# --------------------------------------------------------------------- Python

@pytest.mark.parametrize("cls", TABLES, ids=lambda c: c.__name__)
def test_round_trip_with_non_default_values(cls):
    value = non_default(cls)
    assert all(getattr(value, f.name) != getattr(cls(), f.name) for f in cls.FIELDS)
    data = value.to_bytes()
    assert cls.from_bytes(data) == value
    assert cls.from_bytes(cls().to_bytes()) == cls()
    assert cls.FIELDS == () or data != cls().to_bytes()


def test_training_metadata_round_trip():
    metadata = ops.TrainingMetadata(
        format_version=ops.FORMAT_VERSION, image_input=0, label_input=1, lr_input=2, loss_output=40, logits=38,
        state=41, op_roles=[ops.OpRole.INIT, ops.OpRole.FORWARD, ops.OpRole.LOSS, ops.OpRole.UPDATE],
        rounding=ops.Rounding.STOCHASTIC, qas=False, reordered=True, scheme_json='{"conv_1": 0.5}',
        trainables=[
            ops.Trainable(variable=50, initial_value=7, qas_scale=51, kind=ops.ParamKind.WEIGHT, layer_op=3,
                          layer_name="conv_1/out", channels=8, param_id=0),
            ops.Trainable(variable=52, initial_value=9, qas_scale=53, kind=ops.ParamKind.BIAS, layer_op=3,
                          layer_name="conv_1/out", channels=16, param_id=1),
        ])
    data = metadata.to_bytes()
    assert data[4:8] == b"TFLT"
    decoded = ops.TrainingMetadata.from_bytes(data)
    assert decoded == metadata
    assert [t.kind for t in decoded.trainables] == [ops.ParamKind.WEIGHT, ops.ParamKind.BIAS]
    with pytest.raises(ValueError, match="file identifier"):
        ops.TrainingMetadata.from_bytes(data[:4] + b"XXXX" + data[8:])
    with pytest.raises(ValueError):
        ops.TrainingMetadata.from_bytes(b"")


@pytest.mark.parametrize("cls", TABLES, ids=lambda c: c.__name__)
def test_field_ids_follow_declaration_order(cls):
    """Read with the flatbuffers library: field i sits in vtable slot 4 + 2*i."""
    value = non_default(cls)
    data = bytearray(value.to_bytes())
    table = flatbuffers.table.Table(data, struct.unpack_from("<I", data)[0])
    for i, f in enumerate(cls.FIELDS):
        slot = 4 + 2 * i
        if f.kind == "scalar":
            assert table.Get(FLAGS[f.fmt], table.Offset(slot) + table.Pos) == getattr(value, f.name), f.name
        elif f.kind == "string":
            assert table.String(table.Offset(slot) + table.Pos).decode() == getattr(value, f.name)
        elif f.kind == "table":
            assert table.Offset(slot) != 0, f.name
        else:
            assert table.VectorLen(table.Offset(slot)) == len(getattr(value, f.name))


@pytest.mark.parametrize("cls", TABLES, ids=lambda c: c.__name__)
def test_truncated_input_raises_value_error(cls):
    value = non_default(cls)
    data = value.to_bytes()
    intact = 0  # prefixes that lose only the alignment padding after the last string
    for size in range(1, len(data)):
        try:
            intact += cls.from_bytes(data[:size]) == value
        except ValueError as error:
            assert str(error).startswith(cls.__name__)
    assert intact < 4 and (intact == 0 or any(f.kind == "string" for f in cls.FIELDS))


def test_empty_options_give_defaults():
    for cls in OPTION_TABLES:
        assert cls.from_bytes(b"") == cls()


def garbage(valid: bytes, rng: random.Random, count: int) -> list[bytes]:
    """Random bytes, and `valid` with a few bytes overwritten."""
    records = [bytes(rng.randrange(256) for _ in range(rng.randrange(48))) for _ in range(count // 4)]
    while len(records) < count:
        mutated = bytearray(valid)
        for _ in range(rng.randrange(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.choice([0, 1, 4, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        records.append(bytes(mutated))
    return records


def decode_or_none(cls, data):
    try:
        return cls.from_bytes(data)
    except ValueError:
        return None


@pytest.mark.parametrize("cls", TABLES, ids=lambda c: c.__name__)
def test_garbage_raises_only_value_error(cls):
    rng = random.Random(cls.__name__)
    results = [decode_or_none(cls, data) for data in garbage(non_default(cls).to_bytes(), rng, 400)]
    assert None in results


def test_unknown_enum_value_is_rejected():
    data = flatbuffer(lambda b: b.PrependInt8Slot(0, 5, 0))
    with pytest.raises(ValueError, match="5 is not a valid Rounding"):
        ops.SgdUpdateOptions.from_bytes(data)


def test_writing_rejects_values_outside_the_field_type():
    for value in (ops.ConvGradOptions(stride_h=2**31), ops.SgdUpdateOptions(rounding=5),
                  ops.TrainingMetadata(op_roles=[256]), ops.TrainingMetadata(trainables=[ops.SgdUpdateOptions()]),
                  ops.DepthwisePointwiseGradOptions(depthwise=ops.SgdUpdateOptions())):
        with pytest.raises(ValueError):
            value.to_bytes()


# ------------------------------------------------------------------------ C++

def test_cc_header_is_dependency_free():
    header = (REPO / generate.CC_PATH).read_text(encoding="utf-8")
    assert set(re.findall(r"#include\s*(\S+)", header)) == {"<cstdint>", "<cstddef>", "<cstring>"}
    assert not re.search(r"\b(double|new|delete|throw|malloc)\b", header)


@pytest.fixture(scope="module")
def reader_binary(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("g++ not found")
    binary = tmp_path_factory.mktemp("schema_cc") / "schema_reader_test"
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off", "-O1", "-g",
                    "-fsanitize=address,undefined", "-fno-sanitize-recover=all", f"-I{REPO}",
                    str(REPO / "tests/cc/schema_reader_test.cc"), "-o", str(binary)], check=True)
    return binary


def run_reader(binary, cls, records: list[bytes]) -> list[str]:
    stream = b"".join(struct.pack("<I", len(r)) + r for r in records)
    result = subprocess.run([str(binary), cls.__name__], input=stream, capture_output=True,
                            env={"ASAN_OPTIONS": "detect_leaks=0"})
    assert result.returncode == 0 and not result.stderr, result.stderr.decode(errors="replace")[-2000:]
    lines = result.stdout.decode().splitlines()
    assert len(lines) == len(records)
    return [normalise_nan(line) for line in lines]


def expected_line(value) -> str:
    """What the C++ driver prints for a decoded value (None: the reader returned false)."""
    if value is None:
        return "false"
    return normalise_nan("true" + "".join(printed_fields(value)))


def printed_fields(value, prefix: str = "") -> list:
    fields = []
    for f in value.FIELDS:
        v = getattr(value, f.name)
        if f.kind == "tables":
            fields.append(f" {prefix}{f.name}={len(v)}")
            for i, element in enumerate(v):
                fields += printed_fields(element, f"{prefix}{f.name}[{i}].")
            continue
        if f.kind == "table":
            fields += printed_fields(v, f"{prefix}{f.name}.")
            continue
        fields.append(f" {prefix}{f.name}=" + (f"0x{struct.unpack('<I', struct.pack('<f', v))[0]:08x}"
                                                if f.fmt == "f" else str(int(v))))
    return fields


def normalise_nan(line: str) -> str:
    """NaN payloads need not survive Python's float conversion: compare NaNs as 'nan'."""
    def replace(match):
        bits = int(match.group(1), 16)
        return "=nan" if math.isnan(struct.unpack("<f", struct.pack("<I", bits))[0]) else match.group(0)
    return re.sub(r"=(0x[0-9a-f]{8})", replace, line)


@pytest.mark.parametrize("cls", OPTION_TABLES, ids=lambda c: c.__name__)
def test_cc_reads_python_buffers(reader_binary, cls):
    assert cls in CC_TABLES
    values = [non_default(cls), non_default(cls, seed=3), cls()]
    lines = run_reader(reader_binary, cls, [v.to_bytes() for v in values] + [b""])
    assert lines == [expected_line(v) for v in values] + [expected_line(cls())]


@pytest.mark.parametrize("cls", OPTION_TABLES, ids=lambda c: c.__name__)
def test_cc_rejects_truncated_and_garbage_input_like_python(reader_binary, cls):
    valid = non_default(cls).to_bytes()
    rng = random.Random(cls.__name__)
    records = [valid[:size] for size in range(len(valid))] + garbage(valid, rng, 300)
    records.append(flatbuffer(lambda b: b.PrependInt8Slot(0, 5, 0)))  # unknown Rounding, if field 0 is one
    lines = run_reader(reader_binary, cls, records)
    assert lines[0] == expected_line(cls())  # empty input: the defaults
    assert lines[1:len(valid)] == ["false"] * (len(valid) - 1)
    assert lines == [expected_line(decode_or_none(cls, r)) for r in records]
    assert "false" in lines[len(valid):] and any(line.startswith("true") for line in lines[len(valid):])
