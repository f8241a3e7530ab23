"""Datasets and their samples: registration (bulk-loading the sample table) and browsing."""
