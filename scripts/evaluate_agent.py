"""`python scripts/evaluate_agent.py ...` in a checkout: the same command as `esper-eval`.

It runs `agents.zoo.evaluate`.
"""

from agents.zoo.evaluate import cli

if __name__ == "__main__":
    cli()
