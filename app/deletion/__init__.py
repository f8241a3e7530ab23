"""Deletion requests: validation, idempotent creation, status, listing, cancellation, audit reports."""
