"""Signed deletion certificates: what the compliance system files as proof that a request was carried out."""
