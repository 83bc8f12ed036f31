"""The statements of the request path, compiled once per dialect and run on the driver's own
connection.

Written in SQLAlchemy Core like every other statement, so each dialect gets its own SQL; only
the execution skips SQLAlchemy's per-call work (building the statement, its cache key, the
execution context), which cost more than the database itself on this path. Measured against
SQLite: a manifest lookup by tag took 380 µs through `Connection.execute` and 18 µs this way;
the metadata work of a small image's push (two blobs and a manifest) fell from 28 ms to 9.

A single SELECT needs no explicit transaction: SQLite runs it in a snapshot of its own, and
PostgreSQL's pool rolls back what the driver opened when the connection is returned. Statements
run inside a transaction (`run`) use that transaction's connection.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, cast

from sqlalchemy import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

Convert = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Rows:
    """What a statement gave: the rows it returned (converted) and the rows it changed."""

    rows: list[tuple[Any, ...]]
    rowcount: int

    def first(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None


@dataclass(frozen=True, slots=True)
class Compiled:
    """A statement's SQL in one dialect, how to pass its parameters and how to read its rows."""

    sql: str
    constants: Mapping[str, Any]  # values written into the statement, such as a state
    positions: tuple[str, ...] | None  # the order of positional parameters (SQLite's `?`)
    binders: Mapping[str, Convert]  # Python value → driver value, where the type needs one
    converters: tuple[Convert | None, ...]  # per column returned: driver value → Python

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        merged = {**self.constants, **values}
        for name, bind in self.binders.items():
            if merged[name] is not None:
                merged[name] = bind(merged[name])
        if self.positions is None:
            return merged
        return tuple(merged[name] for name in self.positions)

    def row(self, raw: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(
            value if convert is None or value is None else convert(value)
            for convert, value in zip(self.converters, raw, strict=True)
        )

    def execute(self, dbapi_connection: Any, dialect: Dialect, values: Mapping[str, Any]) -> Rows:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(self.sql, self.parameters(values))
            # An INSERT on PostgreSQL returns its new key unasked (SQLAlchemy's implicit
            # RETURNING): rows only of statements that say what they return.
            returns = cursor.description is not None and bool(self.converters)
            rows = [self.row(raw) for raw in cursor.fetchall()] if returns else []
            return Rows(rows, cursor.rowcount)
        except dialect.loaded_dbapi.Error as error:
            # Wrapped as SQLAlchemy wraps it (IntegrityError, OperationalError...), so callers
            # catch one kind of database error whichever way the statement ran.
            raise DBAPIError.instance(
                self.sql, dict(values), error, dialect.loaded_dbapi.Error, dialect=dialect
            ) from error
        finally:
            cursor.close()


class Prepared:
    """A statement whose variable parts are `bindparam(name)`s, compiled on first use in each
    dialect: given as a statement, or as a function of the dialect for dialect-specific SQL
    such as ON CONFLICT."""

    def __init__(self, statement: Executable | Callable[[Dialect], Executable]) -> None:
        self._statement = statement
        self._compiled: dict[str, Compiled] = {}

    def compiled(self, dialect: Dialect) -> Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            found = self._compiled[dialect.name] = self._compile(dialect)
        return found

    def run(self, conn: Connection, **values: Any) -> Rows:
        """Run it in conn's transaction."""
        dialect = conn.dialect
        return self.compiled(dialect).execute(conn.connection.dbapi_connection, dialect, values)

    def _compile(self, dialect: Dialect) -> Compiled:
        statement = self._statement
        if not isinstance(statement, Executable):
            statement = statement(dialect)
        assert isinstance(statement, ClauseElement)  # every Executable of Core is one
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        binders = {
            name: processor
            for name, bind in compiled.binds.items()
            if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }
        constants = {
            name: _plain(value) for name, value in compiled.params.items() if value is not None
        }
        returned = getattr(statement, "exported_columns", ())
        converters = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in returned
        )
        positions = tuple(compiled.positiontup) if compiled.positiontup is not None else None
        return Compiled(compiled.string, constants, positions, binders, converters)


def _plain(value: Any) -> Any:
    # An enum member the statement compares with goes to the driver as its value.
    return value.value if isinstance(value, Enum) else value
