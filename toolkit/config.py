"""The sweep file: a validated description of datasets, reference training, method grids and executor.

Validation happens here, once, before anything runs, so that a typo or a missing input stops the sweep
with one sentence naming the file, the field and the fix instead of a traceback an hour into a job.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from toolkit.errors import SpotsweepError


def _as_list(value: Any) -> Any:
    """Let a sweep axis be written as a scalar (`seed: 0`) or a list (`seed: [0, 1]`)."""
    return value if isinstance(value, list) else [value]


def _unique_list(value: list) -> list:
    if not value:
        raise ValueError("must list at least one value")
    if len(set(map(str, value))) != len(value):
        raise ValueError("lists a value twice")
    return value


Axis = Annotated[list, BeforeValidator(_as_list), AfterValidator(_unique_list)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimulationConfig(_Strict):
    """A synthetic tissue from `toolkit.data.synthetic` (sizes default to the preset's)."""

    preset: str = "starmap-like"
    seed: int = 0
    n_spatial_cells: int | None = Field(default=None, gt=0)
    n_reference_cells: int | None = Field(default=None, gt=0)
    n_genes: int | None = Field(default=None, gt=0)


class DatasetConfig(_Strict):
    """Single-cell-resolution spatial cells plus a single-cell reference, binned into pseudospots."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    simulate: SimulationConfig | None = None
    spatial: Path | None = None
    reference: Path | None = None
    cell_type_key: str = "cell_type"
    window: float | None = Field(default=None, gt=0)
    edge_rule: Literal["half-open", "li2022"] = "half-open"

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


class CondSCVIConfig(_Strict):
    """How the CondSCVI reference model is trained, once per dataset and variant."""

    max_epochs: int = Field(default=300, gt=0)
    batch_size: int = Field(default=128, gt=0)
    lr: float = Field(default=1e-3, gt=0)
    n_latent: int = Field(default=5, gt=0)
    n_hidden: int = Field(default=128, gt=0)
    n_layers: int = Field(default=2, gt=0)
    seed: int = 0


class DestVIGrid(_Strict):
    """The destVI settings to sweep; every field is an axis (a scalar is a one-value axis)."""

    name: Literal["destvi"] = "destvi"
    variant: Axis = Field(default=["2022"])
    amortization: Axis = Field(default=["both"])
    batch_size: Axis = Field(default=[128])
    max_epochs: Axis = Field(default=[2000])
    seed: Axis = Field(default=[0])
    lr: float = Field(default=3e-3, gt=0)
    n_epochs_kl_warmup: int = Field(default=200, ge=0)

    @model_validator(mode="after")
    def _check_values(self) -> DestVIGrid:
        for value in self.variant:
            if str(value) not in {"2022", "current"}:
                raise ValueError(f"variant '{value}' is unknown; use 2022 or current")
        for value in self.amortization:
            if value not in {"both", "latent", "proportion", "none"}:
                raise ValueError(f"amortization '{value}' is unknown; use both, latent, proportion or none")
        for field in ("batch_size", "max_epochs"):
            for value in getattr(self, field):
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise ValueError(f"{field} {value!r} must be a whole number of at least 1")
        for value in self.seed:
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"seed {value!r} must be a whole number")
        return self


class ExecutorConfig(_Strict):
    """Where tasks run: local processes (default) or a SLURM cluster."""

    kind: Literal["local"] = "local"
    max_parallel: int | None = Field(default=None, gt=0)
    timeout_min: float = Field(default=120, gt=0)
    container: Path | None = None
    """An Apptainer image (.sif) to run every job in; None runs them on the host."""
    binds: list[str] = Field(default_factory=list)
    """Extra `apptainer --bind` specs (host[:container]) the jobs need, e.g. input data folders."""


class SweepConfig(_Strict):
    """A whole study: datasets x method grid, run by one executor into one output folder."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    output: Path
    datasets: list[DatasetConfig] = Field(min_length=1)
    reference: CondSCVIConfig = CondSCVIConfig()
    methods: list[DestVIGrid] = Field(min_length=1)
    executor: ExecutorConfig = ExecutorConfig()

    @model_validator(mode="after")
    def _unique_datasets(self) -> SweepConfig:
        names = [dataset.name for dataset in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError("two datasets share a name; give each its own 'name'")
        return self


def _location(loc: tuple[Any, ...]) -> str:
    """('methods', 0, 'bath_size') -> 'methods[0].bath_size'."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _known_fields(loc: tuple[Any, ...]) -> list[str]:
    """Field names valid at the place of an unknown key, for a 'did you mean' hint."""
    model: type[BaseModel] = SweepConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return list(model.model_fields)


def _explain(error: dict[str, Any]) -> str:
    loc = tuple(part for part in error["loc"] if not str(part).startswith("function-"))
    where = _location(loc) or "the top level"
    if error["type"] == "extra_forbidden":
        hint = difflib.get_close_matches(str(loc[-1]), _known_fields(loc), n=1)
        fix = f"did you mean '{hint[0]}'?" if hint else f"remove it (known keys: {', '.join(_known_fields(loc))})"
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
            path = getattr(dataset, field)
            if path is not None and not Path(path).exists():
                raise SpotsweepError(
                    f"{source}: datasets[{index}].{field} points to '{path}', which does not exist; "
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
