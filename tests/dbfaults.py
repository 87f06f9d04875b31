"""Make the database itself reject a statement, to test what a failure halfway leaves behind.

A real failure inside the database, not a mock: the statement runs and the
database refuses it, exactly where the code under test sends it (after the
statements before it in the same transaction, if any).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import connections

#: The text of the error every rejected statement raises (a ``django.db.DatabaseError``).
REJECTED = "rejected by the test"


@contextlib.contextmanager
def rejecting(operation: str, table: str, *, when: str = "1 = 1", using: str = "default") -> Iterator[None]:
    """While inside, ``operation`` on a row of ``table`` matching ``when`` fails with :data:`REJECTED`.

    Args:
        operation: ``"INSERT"``, ``"UPDATE"`` or ``"DELETE"``.
        table: the table name, e.g. ``AuditLog._meta.db_table``.
        when: an SQL condition on ``NEW`` (INSERT, UPDATE) or ``OLD`` (DELETE)
            that both SQLite and PostgreSQL accept, e.g. ``"OLD.id = 5"``.
        using: the database alias.

    On SQLite this is a TEMP trigger, seen by this connection only (other
    processes are not affected); on PostgreSQL a trigger and its function,
    seen by every connection until they are dropped on exit, so use it in a
    ``django_db(transaction=True)`` test (an error inside the test's own
    transaction would abort it on PostgreSQL).
    """
    operation = operation.upper()
    if operation not in ("INSERT", "UPDATE", "DELETE"):
        raise ValueError(f"operation={operation!r} is invalid: INSERT, UPDATE or DELETE")
    connection = connections[using]
    quote = connection.ops.quote_name
    name = f"test_reject_{operation.lower()}_{table}"
    if connection.vendor == "sqlite":
        create = [
            (f"CREATE TEMP TRIGGER {name} BEFORE {operation} ON {quote(table)} FOR EACH ROW WHEN ({when}) "
             f"BEGIN SELECT RAISE(ABORT, '{REJECTED}'); END"),
        ]
        drop = [f"DROP TRIGGER IF EXISTS temp.{name}"]
    elif connection.vendor == "postgresql":
        create = [
            (f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
             f"$$ BEGIN RAISE EXCEPTION '{REJECTED}'; END $$"),
            (f"CREATE TRIGGER {name} BEFORE {operation} ON {quote(table)} FOR EACH ROW WHEN ({when}) "
             f"EXECUTE FUNCTION {name}()"),
        ]
        drop = [f"DROP TRIGGER IF EXISTS {name} ON {quote(table)}", f"DROP FUNCTION IF EXISTS {name}()"]
    else:
        raise NotImplementedError(f"rejecting() supports SQLite and PostgreSQL, not {connection.vendor}")
    with connection.cursor() as cursor:
        for sql in create:
            cursor.execute(sql)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            for sql in drop:
                cursor.execute(sql)
