"""`python -m toolkit` is the `spotsweep` command."""

from toolkit.cli import main

main()
