"""``python -m geodml`` is the ``geodml`` command."""

from geodml.cli import main

main()
