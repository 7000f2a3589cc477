"""`python scripts/train_agent.py ...` in a checkout: the same command as `esper-train`.

It runs `agents.zoo.train`.
"""

from agents.zoo.train import cli

if __name__ == "__main__":
    cli()
