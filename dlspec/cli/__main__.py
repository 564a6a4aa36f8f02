"""`python -m dlspec.cli`: the same command as `dlspec`."""

from . import main

main()
