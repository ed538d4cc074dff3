"""``python -m cli ...``: the ``energylake`` command without its console script."""

from cli.app import main

main()
