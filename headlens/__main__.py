"""``python -m headlens`` = the ``headlens`` command."""

from headlens.cli import main

main()
