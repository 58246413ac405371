"""Herald's benchmark harness: ``make bench`` (``uv run python -m bench``).

Every scenario gets a namespace and a database of its own on the real broker and PostgreSQL,
starts the real services as processes, drives load from this process, and prints one table.
"""
