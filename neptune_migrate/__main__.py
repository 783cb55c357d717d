"""`python -m neptune_migrate`."""

from neptune_migrate.cli import main

main()
