"""Serialisation behind the dataclasses in training_ops_generated.py.

Each generated table lists its fields in `FIELDS`, in declaration order (which
is the flatbuffers field id). Writing uses the flatbuffers `Builder`; reading
uses a bounds-checked reader of our own, so truncated or corrupt bytes raise
ValueError instead of IndexError/struct.error or silently decoding garbage.
The checks match the C++ readers in micro/core/training_ops_generated.h.
"""
from __future__ import annotations

import struct
from typing import Any, ClassVar, NamedTuple, Optional

import flatbuffers
from flatbuffers import number_types

# struct format of a scalar -> the Builder's type flags for it.
_FLAGS = {
    "?": number_types.BoolFlags,
    "b": number_types.Int8Flags,
    "B": number_types.Uint8Flags,
    "h": number_types.Int16Flags,
    "i": number_types.Int32Flags,
    "I": number_types.Uint32Flags,
    "f": number_types.Float32Flags,
    "q": number_types.Int64Flags,
}


class Field(NamedTuple):
    name: str
    kind: str  # "scalar", "string", "table", "vector" (of scalars) or "tables" (vector of tables)
    fmt: Optional[str] = None  # struct format of the scalar or vector element
    type: Optional[type] = None  # enum class of an enum scalar; class of a "table" or of the "tables" elements
    default: Any = None  # scalars only


class Table:
    """Base of the generated dataclasses."""

    FIELDS: ClassVar[tuple[Field, ...]] = ()
    FILE_IDENTIFIER: ClassVar[Optional[bytes]] = None  # set on the schema's root_type only

    def to_bytes(self) -> bytes:
        builder = flatbuffers.Builder(64)
        builder.Finish(_write(builder, self), file_identifier=self.FILE_IDENTIFIER)
        return bytes(builder.Output())

    @classmethod
    def from_bytes(cls, data: bytes):
        """Parses a flatbuffer whose root is this table; ValueError if it is malformed.

        Empty bytes give the defaults for tables without a file identifier (an op
        whose custom_options are empty), as the C++ readers do.
        """
        data = bytes(data)
        if not data and cls.FILE_IDENTIFIER is None:
            return cls()
        reader = _Reader(data, cls.__name__)
        if cls.FILE_IDENTIFIER is not None and data[4:8] != cls.FILE_IDENTIFIER:
            raise ValueError(f"{cls.__name__}: file identifier {data[4:8]!r} is not {cls.FILE_IDENTIFIER!r}")
        return _read(cls, reader, reader.offset(0))


def _checked(owner: str, field: Field, value):
    """The value as the Builder wants it; ValueError if it does not fit the field's type."""
    try:
        if field.type is not None:
            value = field.type(value)
        struct.pack("<" + field.fmt, value)
    except (ValueError, TypeError, OverflowError, struct.error):
        raise ValueError(f"{owner}.{field.name}: {value!r} does not fit the field's type") from None
    return bool(value) if field.fmt == "?" else value


def _write(builder: flatbuffers.Builder, table: Table) -> int:
    owner = type(table).__name__
    # Strings, vectors and sub-tables must be complete before the table starts.
    references = {}
    for field in table.FIELDS:
        value = getattr(table, field.name)
        if field.kind == "scalar" or not value:
            continue
        if field.kind == "string":
            references[field.name] = builder.CreateString(value)
            continue
        if field.kind == "table":
            if not isinstance(value, field.type):
                raise ValueError(f"{owner}.{field.name}: must be a {field.type.__name__}")
            references[field.name] = _write(builder, value)
            continue
        if field.kind == "tables":
            if not all(isinstance(item, field.type) for item in value):
                raise ValueError(f"{owner}.{field.name}: every element must be a {field.type.__name__}")
            items, flags = [_write(builder, item) for item in value], number_types.UOffsetTFlags
        else:
            items, flags = [_checked(owner, field, item) for item in value], _FLAGS[field.fmt]
        builder.StartVector(flags.bytewidth, len(items), flags.bytewidth)
        for item in reversed(items):
            if field.kind == "tables":
                builder.PrependUOffsetTRelative(item)
            else:
                builder.Prepend(flags, item)
        references[field.name] = builder.EndVector()
    builder.StartObject(len(table.FIELDS))
    for slot, field in enumerate(table.FIELDS):
        if field.name in references:
            builder.PrependUOffsetTRelativeSlot(slot, references[field.name], 0)
        elif field.kind == "scalar":
            value = _checked(owner, field, getattr(table, field.name))
            builder.PrependSlot(_FLAGS[field.fmt], slot, value, field.default)
    return builder.EndObject()


class _Reader:
    def __init__(self, data: bytes, owner: str):
        self.data = data
        self.owner = owner

    def fail(self, what: str):
        raise ValueError(f"{self.owner}: truncated or corrupt flatbuffer ({what})")

    def need(self, position: int, size: int, what: str):
        if position < 0 or position + size > len(self.data):
            self.fail(f"{what} at byte {position}, {size} bytes, is outside the {len(self.data)}-byte buffer")

    def load(self, fmt: str, position: int, what: str):
        self.need(position, struct.calcsize(fmt), what)
        return struct.unpack_from("<" + fmt, self.data, position)[0]

    def offset(self, position: int) -> int:
        """Follows the uoffset stored at `position`."""
        return position + self.load("I", position, "offset")


def _read(cls: type, reader: _Reader, position: int):
    vtable = position - reader.load("i", position, "table")
    vtable_size = reader.load("H", vtable, "vtable")
    table_size = reader.load("H", vtable + 2, "vtable")
    if vtable_size < 4 or vtable_size % 2:
        reader.fail(f"vtable size {vtable_size}")
    if table_size < 4:
        reader.fail(f"table size {table_size}")
    reader.need(vtable, vtable_size, "vtable")
    reader.need(position, table_size, "table")
    values = {}
    for slot, field in enumerate(cls.FIELDS):
        entry = 4 + 2 * slot
        field_offset = reader.load("H", vtable + entry, "vtable") if entry < vtable_size else 0
        if field_offset == 0:
            continue  # absent: the dataclass default
        size = struct.calcsize(field.fmt) if field.kind == "scalar" else 4
        if field_offset < 4 or field_offset + size > table_size:
            reader.fail(f"field {field.name} at offset {field_offset} of a {table_size}-byte table")
        at = position + field_offset
        if field.kind == "scalar":
            values[field.name] = _scalar(cls, field, reader.load(field.fmt, at, field.name))
            continue
        start = reader.offset(at)
        if field.kind == "table":
            values[field.name] = _read(field.type, reader, start)
            continue
        count = reader.load("I", start, field.name)
        if field.kind == "string":
            reader.need(start + 4, count + 1, field.name)  # + the terminating NUL
            try:
                values[field.name] = reader.data[start + 4:start + 4 + count].decode("utf-8")
            except UnicodeDecodeError:
                reader.fail(f"field {field.name} is not UTF-8")
        elif field.kind == "vector":
            reader.need(start + 4, count * struct.calcsize(field.fmt), field.name)
            values[field.name] = list(struct.unpack_from(f"<{count}{field.fmt}", reader.data, start + 4))
        else:
            reader.need(start + 4, 4 * count, field.name)
            values[field.name] = [_read(field.type, reader, reader.offset(start + 4 + 4 * k)) for k in range(count)]
    return cls(**values)


def _scalar(cls: type, field: Field, value):
    if field.type is None:
        return value
    try:
        return field.type(value)
    except ValueError:
        raise ValueError(f"{cls.__name__}.{field.name}: {value} is not a valid {field.type.__name__}") from None
