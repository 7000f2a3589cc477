"""Optional dependencies ("extras"): a clear error naming the extra to install when one is absent.

`pip install esper` gives the environments and the zoo. A module that needs an
extra calls `require_extra` right before its firm import of it, so a missing package
fails with the `pip install` line that adds it rather than a bare `ModuleNotFoundError`.
"""

from __future__ import annotations

import importlib.util

#: Importable module -> the extra of `pyproject.toml` that installs it.
EXTRAS: dict[str, str] = {
    "wandb": "wandb",
    "tensorboard": "tensorboard",
    "optuna": "optuna",
    "matplotlib": "benchmarks",
    "rliable": "benchmarks",
    "textual": "dashboard",
    "minari": "imitation",
    "fastapi": "urza",
    "uvicorn": "urza",
}


class MissingExtraError(ModuleNotFoundError):
    """An optional dependency is not installed; the message names the extra that adds it."""


def require_extra(module: str, feature: str | None = None) -> None:
    """Checks that `module` (a key of `EXTRAS`) is importable.

    Args:
        module: The top-level module the caller is about to import.
        feature: What needs it, for the message (default: the module's own name).

    Raises:
        MissingExtraError: The module is not installed.
        KeyError: `module` is not a known extra (a programming error).
    """
    extra = EXTRAS[module]
    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(
            f"{feature or module} needs the optional package {module!r}, which is not "
            f"installed: pip install 'esper[{extra}]' (or 'esper[dev]' for every extra)",
            name=module,
        )
