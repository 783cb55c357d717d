"""neptune-scale (Neptune 3.x) SQLite operation logs: `run_operations.sqlite3`, DB versions v1 to v5."""
