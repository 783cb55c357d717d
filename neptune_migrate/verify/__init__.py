"""Read a destination back and compare it with the dump."""
