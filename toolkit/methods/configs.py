"""The grammar every method's grid shares: validated sweep axes that expand into task settings.

Every method fills the same swept settings (variant, amortization, batch_size, max_epochs, seed), so the
aggregate has one set of dimensions; a setting a method does not have holds NOT_APPLICABLE (or 0 for a
count it does not use). Everything else a method needs travels in the task's `params`. Each method's
own grid (`Grid`) lives in its adapter module, beside the code that reads it.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

NOT_APPLICABLE = "n/a"


def _as_list(value: Any) -> Any:
    """Let a sweep axis be written as a scalar (`seed: 0`) or a list (`seed: [0, 1]`)."""
    return value if isinstance(value, list) else [value]


def _unique_list(value: list) -> list:
    if not value:
        raise ValueError("must list at least one value")
    for item in value:
        if not isinstance(item, str | int | float) or (isinstance(item, float) and item != item):
            raise ValueError(f"lists {item!r}; an axis takes plain values (numbers or words), one or a list")
    if len(set(map(str, value))) != len(value):
        raise ValueError("lists a value twice")
    return value


Axis = Annotated[list, BeforeValidator(_as_list), AfterValidator(_unique_list)]
Engine = Literal["scvi", "fast"]
"""How a scvi-tools model is trained: stock (`scvi`, Lightning) or spotsweep's lean loop (`fast`)."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def whole_numbers(name: str, values: list, minimum: int) -> None:
    for value in values:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{name} {value!r} must be a whole number of at least {minimum}")


class MethodGrid(Strict):
    """Common to every method: the seeds to sweep, and how a grid expands."""

    seed: Axis = Field(default=[0])
    optional_axes: ClassVar[dict[str, Any]] = {}
    """Swept settings added after task ids were fixed, each with the value that means "as before": a task
    records one only when it differs from that value, so today's tasks keep their ids, and the aggregate
    gives a dimension to one only when some task of the sweep sets it."""

    def axes(self) -> dict[str, list]:
        """Values of each swept setting (besides dataset and method)."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """Settings that are not swept but still determine the result."""
        return {}

    reference_axes: ClassVar[dict[str, str]] = {}
    """Settings of the reference model that a sweep may list, by the name of the task setting they become
    (destVI: `reference_seed` for `reference: {seed: [0, 1, 2]}`); each is one of `optional_axes` too, so a
    task records it only away from its "as before" value, and today's ids stay."""

    def reference_axis_values(self) -> dict[str, list]:
        """The values of each reference axis as the sweep gives them (one value, or a list)."""
        reference = getattr(self, "reference", None)
        if reference is None:
            return {}
        values = {setting: getattr(reference, key) for setting, key in self.reference_axes.items()}
        return {setting: value if isinstance(value, list) else [value] for setting, value in values.items()}

    def reference_config(self, point: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """What the reference model of one point of the grid is trained with (None: the method trains none);
        a listed reference setting takes the point's value (its "as before" value where the point leaves
        it out)."""
        reference = getattr(self, "reference", None)
        if reference is None:
            return None
        config = reference.model_dump(mode="json")
        for setting, key in self.reference_axes.items():
            listed = config[key] if isinstance(config[key], list) else [config[key]]
            config[key] = listed[0] if point is None else point.get(setting, self.optional_axes[setting])
        return config

    def points(self) -> list[dict[str, Any]]:
        """Every combination of the axes; an optional axis at its "as before" value is left out of the point."""
        axes = self.axes()
        points = [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]
        optional = self.optional_axes
        return [{k: v for k, v in p.items() if k not in optional or v != optional[k]} for p in points]

    @model_validator(mode="after")
    def _seeds(self) -> MethodGrid:
        whole_numbers("seed", self.seed, 0)
        return self


class OneVariantGrid(MethodGrid):
    """A method with one variant and no amortization: swept over batch size, epochs and seed."""

    max_epochs: Axis = Field(default=[400])
    batch_size: Axis = Field(default=[128])
    min_batch_size: ClassVar[int] = 1
    """0 where the method reads it as "every spot in one batch"."""

    @model_validator(mode="after")
    def _batches_and_epochs(self) -> OneVariantGrid:
        whole_numbers("batch_size", self.batch_size, self.min_batch_size)
        whole_numbers("max_epochs", self.max_epochs, 1)
        return self

    def axes(self) -> dict[str, list]:
        return {
            "variant": ["default"],
            "amortization": [NOT_APPLICABLE],
            "batch_size": self.batch_size,
            "max_epochs": self.max_epochs,
            "seed": self.seed,
        }
