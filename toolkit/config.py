"""The sweep file: a validated description of datasets, reference training, method grids and executor.

Validation happens here, once, before anything runs, so that a typo or a missing input stops the sweep
with one sentence naming the file, the field and the fix instead of a traceback an hour into a job.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from toolkit.errors import SpotsweepError, printable
from toolkit.methods import grids
from toolkit.methods.configs import Strict

if TYPE_CHECKING:
    from toolkit.data.readers import ReadOptions
    from toolkit.methods.configs import MethodGrid as MethodConfig
else:
    MethodConfig = Annotated[Union[grids()], Field(discriminator="name")]  # noqa: UP007
    """One entry of a sweep's `methods:`: the grid of whichever registered method its `name` says."""


def _plain_path(value: Any) -> Any:
    """A path that is safe to write into a job script: no newline or other control character."""
    if value is not None and any(ord(ch) < 32 or ord(ch) == 127 for ch in str(value)):
        raise ValueError(f"{str(value)!r} holds a newline or another control character; write the path on one line")
    return value


def _plain_name(value: str) -> str:
    """A name that becomes a folder (data/<dataset>), part of every task id and of SLURM job names."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", value):
        raise ValueError(
            f"'{printable(value)}' is not a plain name; use 1 to 100 letters, digits, '_', '.' or '-', starting "
            "with a letter or digit (it becomes a folder and part of each task id)"
        )
    return value


PlainName = Annotated[str, AfterValidator(_plain_name)]
"""A sweep's or a dataset's name: never '..', a hidden folder, an option-like '-x' or a path."""

PlainPath = Annotated[Path, AfterValidator(_plain_path)]
"""A path of a sweep file: it may reach an sbatch script or an `apptainer exec` line, so it is one plain line."""

PlainText = Annotated[str, AfterValidator(_plain_path)]
"""A string that may reach a job script, such as an `apptainer --bind` spec: one plain line."""


def when_set(default: Any = None, **kwargs: Any) -> Any:
    """A field added after task ids were fixed: part of a task's id only when the sweep sets it.

    A task's id hashes its dataset's settings; a new field at its default must not re-key every finished
    task and reference model (tests/test_architecture.py pins the ids of every file in sweeps/).
    """
    return Field(default=default, json_schema_extra={"identity": "when-set"}, **kwargs)


def for_reading(default: Any = None, **kwargs: Any) -> Any:
    """A field that only says how to read the results (units, orientation): never part of a task's id."""
    return Field(default=default, json_schema_extra={"identity": "never"}, **kwargs)


def identity(model: BaseModel) -> dict[str, Any]:
    """The settings as hashed into task ids: every field, except `when_set` ones left at their default and
    `for_reading` ones."""
    dumped: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("identity") == "never" or (extra.get("identity") == "when-set" and value == field.default):
            continue
        dumped[name] = (
            identity(value) if isinstance(value, BaseModel) else model.model_dump(mode="json", include={name})[name]
        )
    return dumped


class SimulationConfig(Strict):
    """A synthetic tissue from `toolkit.data.synthetic` (sizes default to the preset's).

    `atlas` is written chunk by chunk into Zarr (millions of cells, `n_spatial_cells`, default 10 million)
    and its reference is the merfish-like reference of the same seed.
    """

    preset: str = "starmap-like"
    seed: int = 0
    n_spatial_cells: int | None = Field(default=None, gt=0)
    n_reference_cells: int | None = Field(default=None, gt=0)
    n_genes: int | None = Field(default=None, gt=0)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        from toolkit.data.synthetic import PRESETS

        if value not in (*PRESETS, "atlas"):
            raise ValueError(f"preset '{value}' is unknown; use one of {', '.join(sorted((*PRESETS, 'atlas')))}")
        return value


def _path_or_mapping(value: Any) -> Any:
    """`spatial: cells.h5ad` is short for `spatial: {path: cells.h5ad}`."""
    return {"path": value} if isinstance(value, str | Path) else value


class InputConfig(Strict):
    """One input file (or folder) and how to read it into the canonical AnnData (toolkit.data.readers)."""

    path: PlainPath
    cells_table: PlainPath | None = None
    """For a counts CSV: the table of cell id, x, y, cell type."""
    cell_type_key: str = "cell_type"
    layer: str | None = None
    spatial_key: str = "spatial"
    x_key: str | None = None
    y_key: str | None = None
    annotations: PlainPath | None = None
    labels: dict[str, str] | Path | None = None
    """Rename cell types (old -> new), e.g. onto the reference's names."""
    allow_non_integer: bool = False
    table: str = when_set("table")
    """For a SpatialData store: the table of cells (spatialdata-io names it `table`)."""

    def read_options(self) -> ReadOptions:
        """How toolkit.data.readers reads it: every key but the path."""
        from toolkit.data.readers import ReadOptions

        return ReadOptions(**self.model_dump(exclude={"path"}))

    def paths(self) -> dict[str, Path]:
        named = {"path": self.path, "cells_table": self.cells_table, "annotations": self.annotations}
        if isinstance(self.labels, Path):
            named["labels"] = self.labels
        return {name: path for name, path in named.items() if path is not None}


InputField = Annotated[InputConfig | None, BeforeValidator(_path_or_mapping)]


class SubsetConfig(Strict):
    """Part of the pseudospot grid, in the full grid's own indices (as `spotsweep build --columns/--rows/--bbox`).

    Whole windows are kept or dropped, never clipped, so a kept spot equals the full grid's spot (the
    blog's 57-spot STARmap subset is `columns: [0, 1, 2]`). `bbox` keeps the windows whose centre lies in
    [xmin, xmax] x [ymin, ymax].
    """

    columns: list[int] | None = Field(default=None, min_length=1)
    rows: list[int] | None = Field(default=None, min_length=1)
    bbox: tuple[float, float, float, float] | None = None

    @model_validator(mode="after")
    def _something(self) -> SubsetConfig:
        if self.columns is None and self.rows is None and self.bbox is None:
            raise ValueError("keeps everything; give columns, rows or bbox (or remove subset)")
        if self.bbox is not None and (self.bbox[0] > self.bbox[2] or self.bbox[1] > self.bbox[3]):
            raise ValueError(
                f"bbox {list(self.bbox)} is not [xmin, ymin, xmax, ymax] with xmin <= xmax and ymin <= ymax"
            )
        return self

    def grid_subset(self) -> Any:
        """As the pseudospot builders take it."""
        from toolkit.pseudospots import GridSubset

        columns = None if self.columns is None else tuple(self.columns)
        rows = None if self.rows is None else tuple(self.rows)
        return GridSubset(columns, rows, self.bbox)


class ReferenceShiftConfig(Strict):
    """The reference as another technology would have measured it (toolkit/data/shift.py): per-gene capture
    factors, log-normal with sd `capture_sd`, each cell's counts drawn again at its own library size, and a
    fraction `missing_genes` of the genes the spots share removed. 0 and 0: every count drawn again only."""

    capture_sd: float = Field(ge=0, le=5)
    missing_genes: float = Field(default=0.0, ge=0, lt=1)
    seed: int = Field(default=0, ge=0)


class DatasetConfig(Strict):
    """Where a dataset's pseudospots come from, and its single-cell reference.

    One source: `simulate` (a synthetic tissue and its reference), `spatial` cells + `reference` files
    binned at `window`, or `spots` (a store `spotsweep build` wrote) + `reference`. `subset` keeps part of
    the grid, with any source.
    """

    name: PlainName
    simulate: SimulationConfig | None = None
    spatial: InputField = None
    reference: InputField = None
    window: float | None = Field(default=None, gt=0)
    edge_rule: Literal["half-open", "li2022"] = "half-open"
    allow_missing_cell_types: bool = False
    """Go on when spatial cell types are absent from the reference (they stay in the truth's denominator)."""
    spots: PlainPath | None = when_set()
    """A pseudospot store written by `spotsweep build` (its window, edge rule and genes come with it)."""
    subset: SubsetConfig | None = when_set()
    reference_shift: ReferenceShiftConfig | None = when_set()
    """Make the reference differ from the spots as another technology would (issue 38's E2); the dataset
    then trains its own reference models on the shifted reference."""
    units: str | None = for_reading(max_length=20)
    """The coordinates' unit (px, um), for the report's maps; a synthetic tissue's preset knows its own."""
    orientation: str | None = for_reading(max_length=200)
    """Which way the tissue runs on the grid, e.g. "cortical depth along y: pia at high y", for the maps."""

    def described_axes(self) -> tuple[str, str]:
        """(units, orientation) for the report: the sweep's, else the synthetic preset's, else unknown ("")."""
        from toolkit.data.atlas import BASE_PRESET
        from toolkit.data.synthetic import PRESETS

        preset = None
        if self.simulate is not None:
            preset = PRESETS[BASE_PRESET if self.simulate.preset == "atlas" else self.simulate.preset]
        units = self.units or (preset.units if preset else "")
        orientation = self.orientation or (preset.orientation if preset else "")
        return units, orientation

    @model_validator(mode="after")
    def _one_source(self) -> DatasetConfig:
        sources = [name for name in ("simulate", "spatial", "spots") if getattr(self, name) is not None]
        if not sources:
            if self.reference is not None:
                raise ValueError("needs its spots too: 'spatial' cells (with a 'window') or a 'spots' store")
            raise ValueError(
                "needs either 'simulate', or 'spatial' and 'reference' files, or a 'spots' store and 'reference'"
            )
        if len(sources) > 1:
            raise ValueError(f"has both '{sources[0]}' and '{sources[1]}'; keep one of them")
        if self.simulate is not None and self.reference is not None:
            raise ValueError("has both 'simulate' and a 'reference' file; keep one of them")
        if self.simulate is None and self.reference is None:
            raise ValueError(f"needs a 'reference' file beside '{sources[0]}'")
        if self.spatial is not None and self.window is None:
            raise ValueError("needs a pseudospot 'window' size when it reads files")
        if self.spots is not None and self.window is not None:
            raise ValueError("sets a 'window', but a 'spots' store has its own; remove window")
        return self


class ExecutorOptions(Strict):
    """Where tasks run: a sweep's `executor:` block. What each backend takes is its own model, beside its code
    (`Options` in toolkit/backends/local.py, slurm/__init__.py, inline.py), a subclass of this one: the
    block is a union of them discriminated by `kind` (`executor_options`)."""

    kind: str = Field(default="local", pattern=r"^[a-z][a-z0-9_-]*$")
    """The backend that runs the tasks: one of toolkit.backends.BACKENDS (local, slurm, inline)."""


def executor_options(value: Any) -> Any:
    """An `executor:` mapping as the model of the backend its `kind` names (local by default); a setting of
    another backend is one sentence naming that backend. An unknown kind is left to the launcher to name
    the known ones."""
    if not isinstance(value, dict):
        return value
    from toolkit.backends import BACKENDS, options_model  # the registry: the one import upwards (pyproject)

    kind = value.get("kind", "local")
    if kind not in BACKENDS:
        return value
    model = options_model(kind)
    given = {key: setting for key, setting in value.items() if setting is not None or key in model.model_fields}
    for key, setting in given.items():
        if key in model.model_fields:
            continue
        owners = [other for other in BACKENDS if key in options_model(other).model_fields]
        if owners:
            message = (
                f"executor.{key} ({setting}) is a setting of kind '{owners[0]}'"
                + "".join(f" (and '{other}')" for other in owners[1:])
                + f", but executor.kind is '{kind}'; remove it, or set kind: {owners[0]}"
            )
        else:
            hint = difflib.get_close_matches(str(key), list(model.model_fields), n=1)
            fix = f"did you mean '{hint[0]}'?" if hint else f"remove it (known keys: {', '.join(model.model_fields)})"
            message = f"unknown key 'executor.{key}' for kind '{kind}'; {fix}"
        raise PydanticCustomError("executor_setting", message.replace("{", "{{").replace("}", "}}"))
    return model.model_validate(given)


class PrepareConfig(Strict):
    """Where Dask builds the pseudospot grids (never part of a task's id: the grid is the same anywhere)."""

    scheduler: Literal["threads", "local", "slurm"] = "threads"
    """threads (this process), local (a dask.distributed LocalCluster) or slurm (workers as SLURM jobs,
    with the keyword arguments the cluster profile's `dask` block maps to)."""
    workers: int | None = Field(default=None, gt=0)
    memory_mib: int = Field(default=1024, gt=0)
    """Memory for the spots' sums held at once."""
    cluster_options: dict[str, Any] = Field(default_factory=dict)
    """Extra keyword arguments for LocalCluster or dask_jobqueue.SLURMCluster (over the profile's)."""


class SweepConfig(Strict):
    """A whole study: datasets x method grid, run by one executor into one output folder."""

    name: PlainName
    output: PlainPath
    datasets: list[DatasetConfig] = Field(min_length=1)
    methods: list[MethodConfig] = Field(min_length=1)
    executor: Annotated[SerializeAsAny[ExecutorOptions], BeforeValidator(executor_options)] = Field(
        default_factory=lambda: executor_options({})
    )
    prepare: PrepareConfig = PrepareConfig()

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
    if error["type"] == "executor_setting":
        return error["msg"]
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
        raise SpotsweepError(f"{source}: {printable(_explain(errors[0]))}.") from None


def check_inputs_exist(sweep: SweepConfig, source: str) -> None:
    """Missing input files, and a `spots` path that is no spot store, are found now, not inside a job."""
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
            if given is not None and not (Path(given.path) / "uns" / "pseudospots").is_dir():
                from toolkit.data.readers import check_openable

                try:
                    check_openable(given.path, given.cells_table)
                except SpotsweepError as exc:
                    raise SpotsweepError(f"{source}: datasets[{index}].{field}: {exc}") from None
            if given is not None and (Path(given.path) / "uns" / "pseudospots").is_dir():
                # read as cells it failed inside the prepare job (a reference) or with a CLI option's advice
                fix = (
                    f"give it as datasets[{index}].spots (without window), or the cells it was built from here"
                    if field == "spatial"
                    else "a reference is single cells with their cell types: give those (a store belongs in spots)"
                )
                raise SpotsweepError(
                    f"{source}: datasets[{index}].{field} points to '{given.path}', a pseudospot store of "
                    f"`spotsweep build`, not single cells; {fix}."
                )
        if dataset.spots is not None:
            check_spot_store(dataset.spots, f"{source}: datasets[{index}].spots")


def check_spot_store(path: Path, where: str) -> None:
    """`path` is a pseudospot store: an AnnData Zarr folder whose uns holds how `spotsweep build` made it."""
    fix = (  # not `--out {path}`: that told a user with cells at the path to write over them
        "give single cells as `spatial:` with a `window:` instead, or build a store with "
        "`spotsweep build CELLS --window SIZE --out SPOTS.zarr` and give that"
    )
    if not Path(path).exists():
        raise SpotsweepError(f"{where} points to '{path}', which does not exist; {fix}.")
    if not (Path(path) / "uns" / "pseudospots").is_dir():
        raise SpotsweepError(
            f"{where} points to '{path}', which is not a pseudospot store (it has no uns/pseudospots); {fix}."
        )
    from toolkit.data.checks import check_zarr_store

    check_zarr_store(Path(path), where, SPOT_STORE_ELEMENTS)


SPOT_STORE_ELEMENTS = ("X", "obs", "var", "obsm/cell_counts", "obsm/proportions", "uns/pseudospots")
"""What a spot store of `spotsweep build` cannot be read without."""


def yaml_problem(path: Path, exc: Exception) -> str:
    """One sentence for a YAML file that does not load: a tag (which could build objects) or bad syntax."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}" if mark else ""
    if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in str(exc):
        tag = str(getattr(exc, "problem", "")).strip()
        return (
            f"{path}: the YAML tag{where} ({tag}) is not allowed: sweep files and profiles take plain values "
            "only (a tag could run code); remove the tag."
        )
    return f"{path}: not valid YAML{where}; fix the syntax there."


def read_yaml(path: Path) -> Any:
    """A YAML file's plain values; a file that is not UTF-8 text or not YAML is one sentence."""
    from toolkit import strict_yaml

    try:
        return strict_yaml.load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SpotsweepError(f"{path}: not UTF-8 text (a binary file?); give a YAML file saved as UTF-8.") from None
    except strict_yaml.DuplicateKey as exc:
        raise SpotsweepError(
            f"{path}: {printable(str(exc.problem))} (line {exc.line}); YAML would keep only the last, so keep one."
        ) from None
    except yaml.YAMLError as exc:
        raise SpotsweepError(yaml_problem(path, exc)) from None


def load_sweep(path: Path | str) -> SweepConfig:
    """Read, validate and check a sweep file; every problem is one SpotsweepError sentence."""
    path = Path(path)
    if not path.is_file():
        raise SpotsweepError(f"{path}: no such sweep file; give the path of a YAML file such as sweeps/demo.yaml.")
    data = read_yaml(path)
    sweep = parse_sweep(data, str(path))
    check_inputs_exist(sweep, str(path))
    return sweep
