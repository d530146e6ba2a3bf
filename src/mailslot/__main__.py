"""`python -m mailslot` is the `mailslot` command."""

from mailslot.cli.main import main

main()
