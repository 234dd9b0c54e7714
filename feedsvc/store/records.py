"""``Record``: where each field of a model dataclass is kept, written once.

A record maps every field of a frozen dataclass to a column (by default the table's
column of the same name), a computed SQL expression, or a nested record; select lists,
row mappers and the values of an INSERT or UPDATE all derive from it, so a field added
to the dataclass is added to every statement at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import Column, ColumnElement, Label, Row, RowMapping, Table

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

#: A result row of any shape.
AnyRow = Row[*tuple[Any, ...]]


@dataclass(frozen=True)
class Codec:
    """How a field's value becomes its column's value, and back."""

    to_column: Callable[[Any], Any]
    from_column: Callable[[Any], Any]


def _seconds(interval: timedelta | None) -> float | None:
    return None if interval is None else interval.total_seconds()


def _interval(seconds: float | None) -> timedelta | None:
    return None if seconds is None else timedelta(seconds=seconds)


#: A tuple of strings kept as a JSON array.
JSON_TUPLE = Codec(to_column=list, from_column=tuple)
#: A ``timedelta`` (or ``None``) kept as a number of seconds.
SECONDS = Codec(to_column=_seconds, from_column=_interval)


@dataclass(frozen=True)
class _Field:
    """One field kept in one column or expression, selected under ``label``."""

    name: str
    expression: ColumnElement[Any]
    label: str
    codec: Codec | None

    def read(self, row: RowMapping) -> Any:
        value = row[self.label]
        return value if self.codec is None else self.codec.from_column(value)


class Record(Generic[T]):
    """Where the fields of the dataclass ``cls`` are kept.

    A field is kept in ``columns[name]`` when given (a column, an expression or a nested
    record), else in ``table``'s column ``prefix + name``; it is selected under the label
    ``prefix + name``, so records selected together need distinct labels.
    """

    def __init__(
        self,
        cls: type[T],
        table: Table,
        *,
        prefix: str = "",
        columns: Mapping[str, ColumnElement[Any] | Record[Any]] | None = None,
        codecs: Mapping[str, Codec] | None = None,
    ) -> None:
        given = columns or {}
        converted = codecs or {}
        self._cls = cls
        self._fields: list[_Field] = []
        self._nested: list[tuple[str, Record[Any]]] = []
        for name in (field.name for field in dataclasses.fields(cls)):
            kept = given[name] if name in given else table.c[prefix + name]
            if isinstance(kept, Record):
                self._nested.append((name, kept))
            else:
                self._fields.append(_Field(name, kept, prefix + name, converted.get(name)))
        self.columns: tuple[Label[Any], ...] = tuple(
            [field.expression.label(field.label) for field in self._fields]
            + [column for _, record in self._nested for column in record.columns]
        )
        """The select list (or RETURNING list) that :meth:`from_row` reads."""
        self._written = _Writer([f for f in self._fields if isinstance(f.expression, Column)])

    def from_row(self, row: AnyRow) -> T:
        """The dataclass from a row of a statement selecting :attr:`columns`."""
        return self._read(row._mapping)

    def _read(self, row: RowMapping) -> T:
        values = {field.name: field.read(row) for field in self._fields}
        values |= {name: record._read(row) for name, record in self._nested}
        return self._cls(**values)

    def values(self, record: T) -> dict[str, Any]:
        """The fields kept in this record's own columns, by column name, for an INSERT
        or UPDATE (nested records and computed expressions are not written)."""
        return self._written.values(record)


class _Writer:
    """Writes the fields kept in plain columns: the hot path of saving a poll's entries,
    so the attributes are read in one ``attrgetter`` call."""

    def __init__(self, fields: Sequence[_Field]) -> None:
        self._column_names = tuple(field.expression.name for field in fields)
        self._get = attrgetter(*(field.name for field in fields))
        self._encoders = tuple(
            (name, field.codec.to_column)
            for name, field in zip(self._column_names, fields, strict=True)
            if field.codec is not None
        )

    def values(self, record: Any) -> dict[str, Any]:
        got = self._get(record)
        # attrgetter returns several attributes as a tuple, a lone one bare.
        values = got if len(self._column_names) > 1 else (got,)
        row = dict(zip(self._column_names, values, strict=True))
        for name, encode in self._encoders:
            row[name] = encode(row[name])
        return row
