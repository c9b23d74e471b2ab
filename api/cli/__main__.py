"""``python -m api.cli``: the ``slotengine`` command."""

from api.cli import main

main()
