"""An `agents.progress.EpisodeSink` for tests: it lists the calls it gets, in order."""

from __future__ import annotations


class RecordingSink(list[tuple[object, ...]]):
    """Each call as a tuple: `("start", name, steps)`, `("step", val_accuracy)`, `("end",)`."""

    def start_episode(self, name: str, steps: int) -> None:
        self.append(("start", name, steps))

    def step(self, val_accuracy: float) -> None:
        self.append(("step", val_accuracy))

    def end_episode(self) -> None:
        self.append(("end",))
