"""Small SQL helpers shared by the seeders and the plain-SQL baselines (SQLite and PostgreSQL).

Seeding goes through ``INSERT ... SELECT`` over a generated integer series
(``generate_series`` on PostgreSQL, a recursive CTE on SQLite), so a million
rows take seconds and no Python objects. Literal ``%`` in SQL is written
``%%`` because the statements go through Django's cursor with parameters.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from django.db import connection, transaction
from django.db.models import Field, Model


def vendor() -> str:
    return connection.vendor


def table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def column(model: type[Model], field: str) -> str:
    found = model._meta.get_field(field)
    assert isinstance(found, Field) and found.column is not None, f"{model.__name__}.{field} has no column"
    return connection.ops.quote_name(found.column)


def columns(model: type[Model], *fields: str) -> str:
    return ", ".join(column(model, name) for name in fields)


def ts(moment: dt.datetime):
    """A datetime as the backend stores it (a string on SQLite), for a raw query parameter."""
    return connection.ops.adapt_datetimefield_value(moment)


def ts_param() -> str:
    """Placeholder of a timestamp parameter that is typed on PostgreSQL."""
    return "CAST(%s AS timestamp with time zone)" if vendor() == "postgresql" else "%s"


def ts_plus_seconds(seconds_sql: str) -> str:
    """SQL for ``<timestamp parameter> + seconds_sql seconds`` (one ``%s`` placeholder, the base)."""
    if vendor() == "postgresql":
        return f"(CAST(%s AS timestamp with time zone) + ({seconds_sql}) * INTERVAL '1 second')"
    return f"datetime(%s, ({seconds_sql}) || ' seconds')"


def json_param(sql: str) -> str:
    return f"CAST({sql} AS jsonb)" if vendor() == "postgresql" else sql


def insert_series(model: type[Model], fields: Sequence[str], select: str, n: int,
                  params: Sequence[Any] = (), where: str = "") -> int:
    """``INSERT INTO model (fields) SELECT select FROM 1..n AS seq(i) [WHERE where]``; return rows inserted.

    ``select`` and ``where`` use ``i`` (1-based) and ``%s`` for ``params``, in order.
    """
    target = f"{table(model)} ({columns(model, *fields)})"
    condition = f" WHERE {where}" if where else ""
    if vendor() == "postgresql":
        sql = f"INSERT INTO {target} SELECT {select} FROM generate_series(1, CAST(%s AS integer)) AS seq(i){condition}"
        args = [*params, n]
    else:
        # The CTE inside the INSERT, so that sqlite3 reports the rowcount.
        sql = (
            f"INSERT INTO {target} "
            "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < %s) "
            f"SELECT {select} FROM seq{condition}"
        )
        args = [n, *params]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, args)
        return cursor.rowcount


def min_id(model: type[Model]) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT MIN({column(model, 'id')}) FROM {table(model)}")
        return cursor.fetchone()[0]


def flush(*models: type[Model]) -> None:
    """Empty these tables and every table that references them (TRUNCATE ... CASCADE), resetting ids."""
    from django.core.management.color import no_style

    tables = [model._meta.db_table for model in models]
    statements = connection.ops.sql_flush(no_style(), tables, reset_sequences=True, allow_cascade=True)
    connection.ops.execute_sql_flush(statements)


def settle(*models: type[Model]) -> None:
    """Leave the database as a live one would be between two runs, so each measurement starts alike.

    PostgreSQL: ``VACUUM ANALYZE`` the tables (what autovacuum does after bulk
    seeding or a million deletes). SQLite: checkpoint and truncate the WAL, so
    that a measurement does not pay for copying the seeding's pages into the
    database file; no ``ANALYZE``, as Django leaves SQLite.
    """
    with connection.cursor() as cursor:
        if vendor() == "postgresql":
            for model in models:
                cursor.execute(f"VACUUM ANALYZE {table(model)}")
        else:
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
