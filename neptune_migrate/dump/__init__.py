"""The neutral dump: versioned, self-describing, crash-safe (see docs/dump-format.md)."""
