"""The hash-chained audit log over HTTP: paginated reading and verification."""
