"""Scenario scripts: the YAML schema, loading with `file:line: field: message` problems, the bundled scripts.

Import `teachback.scenarios.loader` or `teachback.scenarios.schema` directly; this package imports nothing,
so `teachback --help` stays fast.
"""
