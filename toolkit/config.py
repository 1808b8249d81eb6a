"""The sweep file: a validated description of datasets, reference training, method grids and executor.

Validation happens here, once, before anything runs, so that a typo or a missing input stops the sweep
with one sentence naming the file, the field and the fix instead of a traceback an hour into a job.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, BeforeValidator, Field, ValidationError, field_validator, model_validator

from toolkit.errors import SpotsweepError
from toolkit.methods import grids
from toolkit.methods.configs import Strict

if TYPE_CHECKING:
    from toolkit.methods.configs import MethodGrid as MethodConfig
else:
    MethodConfig = Annotated[Union[grids()], Field(discriminator="name")]  # noqa: UP007
    """One entry of a sweep's `methods:`: the grid of whichever registered method its `name` says."""


class SimulationConfig(Strict):
    """A synthetic tissue from `toolkit.data.synthetic` (sizes default to the preset's)."""

    preset: str = "starmap-like"
    seed: int = 0
    n_spatial_cells: int | None = Field(default=None, gt=0)
    n_reference_cells: int | None = Field(default=None, gt=0)
    n_genes: int | None = Field(default=None, gt=0)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        from toolkit.data.synthetic import PRESETS

        if value == "atlas":
            raise ValueError(
                "preset 'atlas' is too large to simulate in memory: write it with `spotsweep simulate --preset atlas "
                "--out DIR`, then point spatial at DIR/cells.zarr and reference at DIR/reference.h5ad"
            )
        if value not in PRESETS:
            raise ValueError(f"preset '{value}' is unknown; use one of {', '.join(sorted(PRESETS))}")
        return value


def _path_or_mapping(value: Any) -> Any:
    """`spatial: cells.h5ad` is short for `spatial: {path: cells.h5ad}`."""
    return {"path": value} if isinstance(value, str | Path) else value


class InputConfig(Strict):
    """One input file (or folder) and how to read it into the canonical AnnData (toolkit.data.readers)."""

    path: Path
    cells_table: Path | None = None
    """For a counts CSV: the table of cell id, x, y, cell type."""
    cell_type_key: str = "cell_type"
    layer: str | None = None
    spatial_key: str = "spatial"
    x_key: str | None = None
    y_key: str | None = None
    annotations: Path | None = None
    labels: dict[str, str] | Path | None = None
    """Rename cell types (old -> new), e.g. onto the reference's names."""
    allow_non_integer: bool = False

    def paths(self) -> dict[str, Path]:
        named = {"path": self.path, "cells_table": self.cells_table, "annotations": self.annotations}
        if isinstance(self.labels, Path):
            named["labels"] = self.labels
        return {name: path for name, path in named.items() if path is not None}


InputField = Annotated[InputConfig | None, BeforeValidator(_path_or_mapping)]


class DatasetConfig(Strict):
    """Single-cell-resolution spatial cells plus a single-cell reference, binned into pseudospots."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    simulate: SimulationConfig | None = None
    spatial: InputField = None
    reference: InputField = None
    window: float | None = Field(default=None, gt=0)
    edge_rule: Literal["half-open", "li2022"] = "half-open"
    allow_missing_cell_types: bool = False
    """Go on when spatial cell types are absent from the reference (they stay in the truth's denominator)."""

    @model_validator(mode="after")
    def _one_source(self) -> DatasetConfig:
        from_files = self.spatial is not None or self.reference is not None
        if self.simulate is None and not from_files:
            raise ValueError("needs either 'simulate' or both 'spatial' and 'reference' files")
        if self.simulate is not None and from_files:
            raise ValueError("has both 'simulate' and input files; keep one of them")
        if from_files and (self.spatial is None or self.reference is None):
            raise ValueError("needs both 'spatial' and 'reference' files")
        if from_files and self.window is None:
            raise ValueError("needs a pseudospot 'window' size when it reads files")
        return self


class ExecutorConfig(Strict):
    """Where tasks run: local processes (default) or a SLURM cluster described by a profile."""

    kind: str = Field(default="local", pattern=r"^[a-z][a-z0-9_-]*$")
    """The backend that runs the tasks: one of toolkit.backends.BACKENDS (local, slurm); the launcher checks it."""
    profile: Path | None = None
    """For kind slurm: a cluster profile such as hpc/profiles/gpu-cluster.yaml (partition, GPUs, ...)."""
    max_parallel: int | None = Field(default=None, gt=0)
    """Tasks running at once; on SLURM it overrides the profile's array_parallelism."""
    timeout_min: float = Field(default=120, gt=0)
    container: Path | None = None
    """An Apptainer image (.sif) to run every job in; None runs them on the host."""
    binds: list[str] = Field(default_factory=list)
    """Extra `apptainer --bind` specs (host[:container]) the jobs need, e.g. input data folders."""

    @model_validator(mode="after")
    def _slurm_needs_profile(self) -> ExecutorConfig:
        if self.kind == "slurm" and self.profile is None:
            raise ValueError(
                "kind 'slurm' needs a cluster profile; add 'profile: hpc/profiles/NAME.yaml' or pass --profile"
            )
        return self


class SweepConfig(Strict):
    """A whole study: datasets x method grid, run by one executor into one output folder."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    output: Path
    datasets: list[DatasetConfig] = Field(min_length=1)
    methods: list[MethodConfig] = Field(min_length=1)
    executor: ExecutorConfig = ExecutorConfig()

    @model_validator(mode="after")
    def _unique_datasets(self) -> SweepConfig:
        names = [dataset.name for dataset in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError("two datasets share a name; give each its own 'name'")
        return self


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Annotated, Optional, list and unions)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in getattr(annotation, "__args__", ()) for model in _models_in(arg)]


def _tags(model: type[BaseModel]) -> tuple[Any, ...]:
    """The values of a union member's `name: Literal[...]` discriminator."""
    field = model.model_fields.get("name")
    return getattr(field.annotation, "__args__", ()) if field else ()


def _walk(loc: tuple[Any, ...]) -> tuple[str, list[str]]:
    """('methods', 0, 'destvi', 'bath_size') -> ('methods[0].bath_size', fields valid beside it).

    Union tags in pydantic's location (the method name) are dropped: users never wrote them.
    """
    models: list[type[BaseModel]] = [SweepConfig]
    text = ""
    for position, part in enumerate(loc):
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        tagged = [m for m in models if part in _tags(m)]
        if len(models) > 1 and tagged and position < len(loc) - 1:
            models = tagged[:1]
            continue
        text += f".{part}" if text else str(part)
        owner = next((m for m in models if part in m.model_fields), None)
        if position == len(loc) - 1:
            return text, list(models[0].model_fields) if models else []
        models = _models_in(owner.model_fields[part].annotation) if owner else []
    return text, list(models[0].model_fields) if models else []


def _explain(error: dict[str, Any]) -> str:
    loc = tuple(part for part in error["loc"] if not str(part).startswith("function-"))
    where, known = _walk(loc) if loc else ("", [])
    where = where or "the top level"
    if error["type"] == "extra_forbidden":
        hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
        fix = f"did you mean '{hint[0]}'?" if hint else f"remove it (known keys: {', '.join(known)})"
        return f"unknown key '{where}'; {fix}"
    if error["type"] == "missing":
        return f"the required key '{where}' is missing; add it"
    message = error["msg"].removeprefix("Value error, ")
    return f"'{where}' {message}" if error["type"] == "value_error" else f"'{where}': {message}"


def parse_sweep(data: Any, source: str) -> SweepConfig:
    """Validate an already-parsed sweep mapping; `source` names it in messages."""
    if not isinstance(data, dict):
        raise SpotsweepError(f"{source}: a sweep file must be a YAML mapping of keys to values.")
    try:
        return SweepConfig.model_validate(data)
    except ValidationError as exc:
        # An unknown key usually explains a "missing" one (a typo), so it is reported first.
        errors = sorted(exc.errors(), key=lambda error: error["type"] != "extra_forbidden")
        raise SpotsweepError(f"{source}: {_explain(errors[0])}.") from None


def check_inputs_exist(sweep: SweepConfig, source: str) -> None:
    """Missing input files are found now, not inside a job on a compute node."""
    for index, dataset in enumerate(sweep.datasets):
        for field in ("spatial", "reference"):
            given: InputConfig | None = getattr(dataset, field)
            for name, path in (given.paths() if given else {}).items():
                if not Path(path).exists():
                    where = f"datasets[{index}].{field}" + ("" if name == "path" else f".{name}")
                    raise SpotsweepError(
                        f"{source}: {where} points to '{path}', which does not exist; "
                        "fix the path (relative paths are read from the current directory)."
                    )


def load_sweep(path: Path | str) -> SweepConfig:
    """Read, validate and check a sweep file; every problem is one SpotsweepError sentence."""
    path = Path(path)
    if not path.is_file():
        raise SpotsweepError(f"{path}: no such sweep file; give the path of a YAML file such as sweeps/demo.yaml.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpotsweepError(f"{path}: not valid YAML{where}; fix the syntax there.") from None
    sweep = parse_sweep(data, str(path))
    check_inputs_exist(sweep, str(path))
    return sweep
