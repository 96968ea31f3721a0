"""The database: schema, engine, the embedded server and migrations."""
