"""``python -m compsde`` runs the command line."""

from .cli import main

main()
