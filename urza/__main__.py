"""`python -m urza` is `esper-urza`."""

from urza.cli import cli

cli()
