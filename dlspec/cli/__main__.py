"""`python -m dlspec.cli`: the same command as `dlspec`."""

from . import run

run()
