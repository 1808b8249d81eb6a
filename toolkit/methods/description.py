"""What the stages need to know of a method, said by the method itself.

plan counts a task's optimizer steps, the task runner decides whether to start torch, the report labels,
orders and draws configurations: each asks the method's `MethodDescription` (every adapter module holds
one as `DESCRIPTION`; `toolkit.methods.describe(name)` finds it), so that no stage names a method and a
new method changes none of them (tests/test_architecture.py holds the stages to that). The defaults suit
a method that trains in minibatches of `batch_size` spots for `max_epochs` epochs; a method overrides
only what differs (destVI: its `auto` batch size, its engines, its labels).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from toolkit.methods.base import TaskSpec


def budget_words(config: dict[str, Any]) -> str:
    """A configuration's training budget and last-minibatch rule in words (steps where it set a step budget):
    the report's line labels and destVI's map labels say it alike."""
    budget = f"{config['max_steps']:,} steps" if config.get("max_steps") else f"{config['max_epochs']} epochs"
    warmup = f", warm-up {config['n_steps_kl_warmup']:,} steps" if config.get("n_steps_kl_warmup") else ""
    # where the reference's seed is an axis, every line names it, seed 0 too (else seed 0's line reads unswept)
    reference = f", reference seed {config['reference_seed']}" if config.get("reference_seed") is not None else ""
    return budget + warmup + (", drop last" if config.get("drop_last") else "") + reference


@dataclass(frozen=True)
class MethodDescription:
    """A method as plan, the task runner and the report see it. Subclass it to override a method's rules."""

    name: str
    """The method's name in sweep files (and the registry's key)."""
    order: int = 100
    """Where its configurations stand among the proportion maps' columns, lowest first: the study's order
    is Cell2location (0), then destVI (1); a method that does not say comes after those."""
    trains: bool = True
    """Whether it trains a model (with torch). One that does not (the controls) computes its answer: the
    report draws it as a reference level a trained method should beat, not as a line, and leaves it out of
    the maps, runtimes and trajectories; its task never imports torch (seconds per task)."""
    real_zeros: frozenset[str] = field(default_factory=frozenset)
    """Swept settings whose 0 is a value of the method's own, which tables show as 0 (destVI's `max_epochs`
    0: its budget is in steps). Elsewhere a 0 fills a setting the method does not have (a control's batch
    size and epochs) or asks for its default (Cell2location's batch 0, every spot at once): tables show n/a."""

    def label(self, config: dict[str, Any]) -> str:
        """A configuration's column title in the proportion maps: narrow, so one setting a line."""
        return f"{config['method']}\n{config['variant']}"

    def config_rank(self, config: dict[str, Any]) -> int:
        """Where a configuration stands among the method's own in the maps, before its epochs, batch size
        and variant (destVI: amortization both, then latent, then the others)."""
        return 0

    def batch_size(self, batch_size: int | str, n_spots: int) -> int:
        """The minibatch a task trains with, in spots: as swept, 0 meaning every spot at once."""
        return int(batch_size) or n_spots

    def steps(self, task: TaskSpec, n_spots: int) -> tuple[int, int]:
        """(batch size as it runs, optimizer steps) of one task on `n_spots` spots, before it runs: exactly
        its `max_steps` where it sets a step budget, else its epochs' minibatches; (0, 0) if it trains none."""
        if not self.trains:
            return 0, 0
        from toolkit.engines.schedule import batches_per_epoch

        batch = self.batch_size(task.batch_size, n_spots)
        extra = task.extra_settings
        if extra.get("max_steps"):
            return batch, int(extra["max_steps"])
        return batch, batches_per_epoch(n_spots, batch, bool(extra.get("drop_last"))) * int(task.max_epochs)

    def mode(self, task: TaskSpec) -> str:
        """How the task trains, as plan's table of measured milliseconds per step names it (toolkit.plan):
        the method's name unless the method has engines of its own."""
        return self.name
