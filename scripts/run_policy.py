"""`python scripts/run_policy.py ...` in a checkout: the same command as `esper-run`.

It runs `agents.run`.
"""

from agents.run import cli

if __name__ == "__main__":
    cli()
