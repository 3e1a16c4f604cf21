"""The subset of the flatbuffers IDL that training_ops.fbs uses, and its parser.

Understood: `namespace`; enums of byte/ubyte with explicit values; tables whose
fields are scalars (SCALARS), enums (default: a member name), `string`, tables,
vectors of scalars or vectors of tables; `root_type`; `file_identifier`; `//`
comments.
Field ids follow declaration order. Two comment conventions carry extra data:
`// attribute "name" = <int>` declares an integer constant, and `// op: NAME` /
`// ops: A, B` directly above a table names the custom ops that use it as
options. Anything else raises SchemaError naming the line.
"""
from __future__ import annotations

import dataclasses
import keyword
import math
import re
import struct
from typing import Optional

from tflm_train.errors import UserError

# IDL scalar -> (struct format, C++ type, Python type)
SCALARS = {
    "bool": ("?", "bool", "bool"),
    "byte": ("b", "int8_t", "int"),
    "ubyte": ("B", "uint8_t", "int"),
    "short": ("h", "int16_t", "int"),
    "int": ("i", "int32_t", "int"),
    "uint": ("I", "uint32_t", "int"),
    "float": ("f", "float", "float"),
    "long": ("q", "int64_t", "int"),
}
ENUM_BASES = ("byte", "ubyte")


class SchemaError(UserError):
    """The .fbs uses something outside the subset described above."""


@dataclasses.dataclass
class Token:
    kind: str  # name, number, string, punct
    text: str
    line: int
    doc: list[tuple[int, str]]  # the (line, comment) block directly above
    trailing: str = ""  # comment on the rest of this token's line


@dataclasses.dataclass
class Enum:
    name: str
    base: str
    members: list[tuple[str, int, str]]  # name, value, comment
    doc: list[str]


@dataclasses.dataclass
class Field:
    name: str
    kind: str  # scalar, enum, string, table, vector, tables
    type: str  # the scalar, enum, vector-element or table name
    default: object  # Python value (enum: member name); None for non-scalars
    comment: str


@dataclasses.dataclass
class Table:
    name: str
    fields: list[Field]
    ops: list[str]
    doc: list[str]

    @property
    def scalars_only(self) -> bool:
        return all(f.kind in ("scalar", "enum") for f in self.fields)


@dataclasses.dataclass
class Schema:
    namespace: str
    constants: dict[str, tuple[int, list[str]]]  # value, doc
    enums: dict[str, Enum]
    tables: dict[str, Table]
    root_type: Optional[str]
    file_identifier: Optional[str]


_TOKEN = re.compile(r'(?P<comment>//[^\n]*)|(?P<string>"[^"\n]*")|(?P<number>[-+]?\.?[0-9][\w.+-]*)'
                    r"|(?P<name>[A-Za-z_][\w.]*)|(?P<punct>[{}\[\]:;=,])|(?P<space>\s+)|(?P<bad>.)")
_ATTRIBUTE = re.compile(r'//\s*attribute\s+"([a-z_][a-z0-9_]*)"\s*=\s*(-?\d+)\s*$')
_OPS = re.compile(r"//\s*ops?\s*:(.*)$")


class _Parser:
    def __init__(self, text: str, filename: str):
        self.filename = filename
        self.tokens: list[Token] = []
        self.constants: dict[str, tuple[int, list[str]]] = {}
        self.op_comment_lines: set[int] = set()  # each must be consumed by a table
        self.op_names: set[str] = set()
        self.declaration_lines: dict[str, int] = {}  # root_type, file_identifier
        self.pos = 0
        line, block = 1, []  # block: the (line, comment) run ending on the previous line
        for match in _TOKEN.finditer(text):
            kind, value = match.lastgroup, match.group()
            if kind == "bad":
                raise self.error(line, f"unexpected character {value!r}")
            if block and block[-1][0] < line - 1:
                block = []  # a blank line or code line ends a comment block
            if kind == "comment":
                if self.tokens and self.tokens[-1].line == line:
                    self.tokens[-1].trailing = value[2:].strip()
                elif not self._constant(value, line, block):
                    block.append((line, value))
            elif kind != "space":
                self.tokens.append(Token(kind, value, line, block))
                block = []
            line += value.count("\n")
        self.end_line = line

    def error(self, line: int, message: str) -> SchemaError:
        return SchemaError(f"{self.filename}:{line}: {message}")

    def _constant(self, comment: str, line: int, block: list) -> bool:
        """Records `// attribute "name" = <int>` (its comment block documents it)."""
        if _OPS.match(comment):
            self.op_comment_lines.add(line)
        if not re.match(r'//\s*attribute\s+"', comment):
            return False
        match = _ATTRIBUTE.match(comment)
        if not match or match.group(1) in self.constants:
            raise self.error(line, 'expected a new `// attribute "lower_case_name" = <integer>`')
        self.constants[match.group(1)] = (int(match.group(2)), [text[2:].strip() for _, text in block])
        block.clear()
        return True

    def next(self, kind: Optional[str] = None, text: Optional[str] = None) -> Token:
        if self.pos == len(self.tokens):
            raise self.error(self.end_line, f"unexpected end of file, expected {text or kind}")
        token = self.tokens[self.pos]
        if (kind and token.kind != kind) or (text and token.text != text):
            raise self.error(token.line, f"expected {text or kind}, found {token.text!r}")
        self.pos += 1
        return token

    def accept(self, text: str) -> Optional[Token]:
        if self.pos < len(self.tokens) and self.tokens[self.pos].text == text:
            return self.next()
        return None

    def declared_name(self, names: set) -> Token:
        token = self.next("name")
        if token.text in names or keyword.iskeyword(token.text) or "." in token.text:
            raise self.error(token.line, f"{token.text!r} is already declared or not a valid name")
        names.add(token.text)
        return token

    def parse(self) -> Schema:
        schema = Schema("", self.constants, {}, {}, None, None)
        names, raw_fields = set(SCALARS) | {"string"}, {}
        while self.pos < len(self.tokens):
            keyword_token = self.next("name")
            ops = [(line, m.group(1)) for line, text in keyword_token.doc if (m := _OPS.match(text))]
            doc = [text[2:].strip() for _, text in keyword_token.doc if not _OPS.match(text)]
            if keyword_token.text == "namespace":
                schema.namespace = self.next("name").text
            elif keyword_token.text == "enum":
                enum = self.parse_enum(names, doc)
                schema.enums[enum.name] = enum
            elif keyword_token.text == "table":
                name = self.declared_name(names).text
                schema.tables[name] = Table(name, [], self.parse_ops(ops), doc)
                raw_fields[name] = self.parse_table_body()
            elif keyword_token.text in ("root_type", "file_identifier"):
                value = self.next("name" if keyword_token.text == "root_type" else "string")
                setattr(schema, keyword_token.text, value.text.strip('"'))
                self.declaration_lines[keyword_token.text] = value.line
            else:
                raise self.error(keyword_token.line, f"unsupported declaration {keyword_token.text!r}")
            if keyword_token.text not in ("enum", "table"):
                self.next("punct", ";")
        for table_name, fields in raw_fields.items():
            schema.tables[table_name].fields = [self.resolve(schema, *raw) for raw in fields]
        self.check_declarations(schema)
        return schema

    def parse_ops(self, ops: list[tuple[int, str]]) -> list[str]:
        names = []
        for line, text in ops:
            self.op_comment_lines.discard(line)
            for name in (name.strip() for name in text.split(",")):
                if not re.fullmatch(r"[A-Za-z_]\w*", name):
                    raise self.error(line, "an `// op:` comment lists comma-separated op names")
                if name in self.op_names:
                    raise self.error(line, f"op {name} is already listed above another table")
                self.op_names.add(name)
                names.append(name)
        return names

    def parse_enum(self, names: set, doc: list[str]) -> Enum:
        name = self.declared_name(names)
        self.next("punct", ":")
        base = self.next("name")
        if base.text not in ENUM_BASES:
            raise self.error(base.line, f"enum {name.text} must be of type byte or ubyte, not {base.text!r}")
        self.next("punct", "{")
        members: list[tuple[str, int, str]] = []
        member_names: set[str] = set()
        while not self.accept("}"):
            member = self.declared_name(member_names)
            self.next("punct", "=")
            value = self.next("number")
            separator = self.accept(",")
            if not re.fullmatch(r"-?\d+", value.text) or not _fits(base.text, int(value.text)):
                raise self.error(value.line, f"{name.text}.{member.text} needs an integer value of type {base.text}")
            if any(m[1] == int(value.text) for m in members):
                raise self.error(value.line, f"duplicate value in enum {name.text}")
            members.append((member.text, int(value.text), (separator or value).trailing))
            if not separator:
                self.next("punct", "}")
                break
        if not members:
            raise self.error(name.line, f"enum {name.text} has no members")
        return Enum(name.text, base.text, members, doc)

    def parse_table_body(self) -> list[tuple]:
        self.next("punct", "{")
        fields, seen = [], set()
        while not self.accept("}"):
            name = self.declared_name(seen)
            self.next("punct", ":")
            vector = self.accept("[")
            type_token = self.next("name")
            if vector:
                self.next("punct", "]")
            default = self.next().text if self.accept("=") else None
            if default is not None and not re.fullmatch(r"[\w.+-]+", default):
                raise self.error(type_token.line, f"field {name.text}: expected a default value, found {default!r}")
            end = self.next("punct", ";")
            fields.append((name, type_token, bool(vector), default, end.trailing))
        return fields

    def resolve(self, schema: Schema, name: Token, type_token: Token, vector: bool, default, comment: str) -> Field:
        type_name, where = type_token.text, f"field {name.text}"
        if type_name not in SCALARS and type_name not in schema.enums and type_name not in schema.tables \
                and type_name != "string":
            raise self.error(type_token.line, f"{where}: unknown type {type_name!r}")
        if vector and type_name not in SCALARS and type_name not in schema.tables:
            raise self.error(type_token.line, f"{where}: only vectors of scalars or tables are supported")
        if default is not None and (vector or type_name == "string" or type_name in schema.tables):
            raise self.error(name.line, f"{where}: only scalar and enum fields take a default")
        if vector:
            return Field(name.text, "tables" if type_name in schema.tables else "vector", type_name, None, comment)
        if type_name == "string" or type_name in schema.tables:
            return Field(name.text, "string" if type_name == "string" else "table", type_name, None, comment)
        if type_name in schema.enums:
            members = {member: value for member, value, _ in schema.enums[type_name].members}
            if default is None:
                default = next((member for member, value in members.items() if value == 0), None)
            if default not in members:
                raise self.error(name.line, f"{where}: the default must be a member of enum {type_name}")
            return Field(name.text, "enum", type_name, default, comment)
        value = _scalar_default(type_name, default)
        if value is None:
            raise self.error(name.line, f"{where}: default {default!r} is not a valid {type_name}")
        return Field(name.text, "scalar", type_name, value, comment)

    def check_declarations(self, schema: Schema):
        if schema.root_type is not None and schema.root_type not in schema.tables:
            raise self.error(self.declaration_lines["root_type"], f"root_type {schema.root_type!r} is not a table")
        identifier = schema.file_identifier
        if identifier is not None and (schema.root_type is None or len(identifier) != 4 or not identifier.isascii()):
            raise self.error(self.declaration_lines["file_identifier"],
                             "file_identifier needs a root_type and exactly 4 ASCII characters")
        if self.op_comment_lines:
            raise self.error(min(self.op_comment_lines), "an `// op:` comment must be directly above a table")


def _fits(type_name: str, value) -> bool:
    try:
        struct.pack("<" + SCALARS[type_name][0], value)
        return True
    except (struct.error, OverflowError):
        return False


def _scalar_default(type_name: str, text: Optional[str]):
    """The default as a Python value (floats rounded to float32), or None if invalid."""
    if type_name == "bool":
        return {None: False, "false": False, "true": True}.get(text)
    if type_name == "float":
        try:
            value = float(text or 0)
        except ValueError:
            return None
        return struct.unpack("<f", struct.pack("<f", value))[0] if math.isfinite(value) and _fits("float", value) else None
    if text is not None and not re.fullmatch(r"-?\d+", text):
        return None
    value = int(text or 0)
    return value if _fits(type_name, value) else None


def parse(text: str, filename: str = "training_ops.fbs") -> Schema:
    return _Parser(text, filename).parse()
