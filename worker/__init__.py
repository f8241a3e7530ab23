"""Celery worker: claims jobs from the DB, runs `unlearning/` on them and stores the results."""
