"""Alembic migrations (run on PostgreSQL and SQLite). Run them with `unlearn db upgrade`."""
