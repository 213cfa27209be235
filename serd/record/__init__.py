"""History: `serd record` stores what daemons publish; `serd history` and the dashboard read it back.

subscriber (recorder.py) -> bounded queue -> batched writer (writer.py) -> store (store.py:
SQLite or PostgreSQL behind one interface, schema and migrations in schema.py); the reads
that `serd history` and the dashboard share are in queries.py.
"""
