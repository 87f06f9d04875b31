"""A paginator for admin lists of millions of rows: it never counts them all (issue 9).

Django's admin counts the rows of a list on every page view (``COUNT(*)``:
a full scan on PostgreSQL, seconds at millions of rows). :class:`EstimatedCountPaginator`
counts at most :data:`COUNT_CAP` + 1 rows (``SELECT COUNT(*) FROM (... LIMIT n)``,
bounded whatever the table's size); past that:

* unfiltered on PostgreSQL: the planner's estimate, ``pg_class.reltuples``
  (kept by autovacuum and ANALYZE), no scan;
* unfiltered on SQLite: ``MAX(id)``, one index lookup (an append-only log's
  ids are close to its row count);
* filtered: the cap itself ("10,000+" rows: the last pages are not offered).

Use with ``show_full_result_count = False`` (which skips the admin's second,
unfiltered count) and an ordering that an index serves.
"""

from __future__ import annotations

from typing import Any

from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Max
from django.utils.functional import cached_property

#: Rows counted exactly before estimating.
COUNT_CAP = 10_000


class EstimatedCountPaginator(Paginator):
    """Counts at most ``COUNT_CAP`` + 1 rows, then estimates (module docstring); ``estimated`` says which."""

    estimated = False

    @cached_property
    def count(self) -> int:
        queryset: Any = self.object_list  # a QuerySet in the admin
        exact = queryset.order_by()[:COUNT_CAP + 1].count()
        if exact <= COUNT_CAP:
            return exact
        self.estimated = True
        if queryset.query.where:
            return COUNT_CAP
        model = queryset.model
        connection = connections[queryset.db]
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                               [model._meta.db_table])
                row = cursor.fetchone()
            if row and row[0] and row[0] > COUNT_CAP:
                return int(row[0])
            return COUNT_CAP
        highest = model._default_manager.using(queryset.db).aggregate(n=Max("pk"))["n"] or 0
        return max(int(highest), COUNT_CAP)
