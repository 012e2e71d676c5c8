"""The database: engine and session helpers, tables, the outbox, migrations, marks."""
