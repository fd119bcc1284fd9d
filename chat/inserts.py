"""Inserts of the hot paths' rows with their SQL compiled once (a question's submit, a run's
answer).

`Model.objects.create` builds an instance, sends pre_save and post_save, and compiles the
INSERT again for every row; for the three rows of a submit that was about a third of its
CPU time in the database thread (docs/benchmarks.md, round 7). A `PreparedInsert` takes the
statement from Django's own insert compiler once per database vendor (so quoting,
placeholders and the columns are Django's) and then only fills in each row's values: the
ones given, else the field's default (a callable default is called), `auto_now` and
`auto_now_add` taking the current time, each prepared by its field as the compiler would
(`get_db_prep_save`). While a pre_save or post_save receiver is connected for the model (a
project's own, say, indexing every message), the row goes through the ORM's save instead,
so that the receiver sees it (and what it changes is what `insert` returns): slower, never
silently skipped.
"""

from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model
from django.db.models.signals import post_save, pre_save
from django.db.models.sql import InsertQuery
from django.utils import timezone

from chat.hotcursor import hot_cursor, hot_db


class PreparedInsert:
    """One model's INSERT of a row, every concrete column but an auto-incremented key."""

    def __init__(self, model: type[Model]) -> None:
        self.model = model
        self.fields: list[Field[Any, Any]] = [
            f
            for f in model._meta.concrete_fields
            if not (f.primary_key and getattr(f, "db_returning", False))
        ]
        self._names = {f.attname for f in self.fields}
        self._sql: dict[str, str] = {}  # by database vendor

    def row(self, **given: Any) -> dict[str, Any]:
        """The row's values by attname: those given, the rest from the fields' defaults."""
        unknown = set(given) - self._names
        if unknown:
            raise TypeError(f"{self.model.__name__} has no column {sorted(unknown)}")
        values = {}
        now = None
        for field in self.fields:
            name = field.attname
            if name in given:
                values[name] = given[name]
            elif getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
                now = now or timezone.now()
                values[name] = now
            else:
                values[name] = field.get_default()
        return values

    def insert(self, **given: Any) -> dict[str, Any]:
        """Inserts one row in the default database (sync) and returns its values by attname.
        Errors are the database's, as with `create` (IntegrityError for a broken constraint)."""
        values = self.row(**given)
        db = hot_db()
        if self._has_receivers():  # theirs must see the row: the ORM's save sends them
            saved = self.model._default_manager.using(db.alias).create(**values)
            return {f.attname: getattr(saved, f.attname) for f in self.fields}
        params = [f.get_db_prep_save(values[f.attname], db) for f in self.fields]
        with hot_cursor(db) as cursor:
            cursor.execute(self._statement(values, db), params)
        return values

    def _has_receivers(self) -> bool:
        return pre_save.has_listeners(self.model) or post_save.has_listeners(self.model)

    def _statement(self, values: dict[str, Any], db: BaseDatabaseWrapper) -> str:
        sql = self._sql.get(db.vendor)
        if sql is None:  # the compiler wants a row to compile; `values` is the first one
            query = InsertQuery(self.model)
            query.insert_values(self.fields, [self.model(**values)])
            [(sql, _)] = query.get_compiler(connection=db).as_sql()
            self._sql[db.vendor] = sql
        return sql
