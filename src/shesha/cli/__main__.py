"""`python -m shesha.cli`: the `shesha` command (used by `shesha serve --background`)."""

from shesha.cli import main

main()
