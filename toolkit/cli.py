"""The `spotsweep` command line (also `python -m toolkit`).

Every subcommand is a thin shell over a library function; any SpotsweepError becomes one line on stderr
and exit status 2, never a traceback.
"""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from toolkit.cli_options import Container, Executor, Out, Profile
from toolkit.errors import SpotsweepError

if TYPE_CHECKING:
    import pandas as pd

    from toolkit.backends.dask_scheduler import DaskCluster
    from toolkit.data.readers import ReadOptions
    from toolkit.launch import RunSummary
    from toolkit.metrics import Scores

app = typer.Typer(
    help="Sweep spatial deconvolution methods (destVI, ...) over their training settings, reproducibly.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)
console = Console(soft_wrap=True)
"""Lines are never broken at the console's width: a log file (not a terminal: 80 columns) keeps each
message, path and all, on its line. Tables still fit the width."""
warnings_console = Console(soft_wrap=True, stderr=True)
"""Notes and warnings go to stderr, apart from the results on stdout."""

OutDir = Annotated[Path, typer.Argument(metavar="OUT", help="A sweep's output folder (the sweep file's 'output').")]
TaskStateName = enum.Enum(  # type: ignore[misc]  # a functional Enum: one choice per state
    "TaskStateName", {n: n for n in ("done", "failed", "pruned", "running", "pending", "started", "missing")}, type=str
)
"""The states `spotsweep status --state` lists (toolkit.status.ALL_STATES, which a test keeps equal)."""


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="Folder to write reference.h5ad and cells.h5ad into.")],
    preset: Annotated[
        str, typer.Option(help="Tissue preset: starmap-like, merfish-like, or atlas (10 million cells, to Zarr).")
    ] = "starmap-like",
    seed: Annotated[int, typer.Option(metavar="N", min=0, help="Random seed: same seed, same tissue.")] = 0,
    n_spatial_cells: Annotated[
        Optional[int], typer.Option(metavar="N", min=1, help="Spatial cells (default: the preset's).")
    ] = None,
    n_reference_cells: Annotated[
        Optional[int], typer.Option(metavar="N", min=1, help="Reference cells (default: the preset's).")
    ] = None,
    n_genes: Annotated[Optional[int], typer.Option(metavar="N", min=1, help="Genes (default: the preset's).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace reference.h5ad and cells.h5ad (.zarr) in --out.")] = False,
) -> None:
    """Generate a synthetic single-cell reference and a single-cell-resolution spatial section."""
    if out.exists() and not out.is_dir():
        raise SpotsweepError(f"{out}: --out is an existing file, not a folder; give a folder to write into.")
    names = ("reference.h5ad", "cells.zarr" if preset == "atlas" else "cells.h5ad")
    taken = [out / name for name in names if (out / name).exists()]
    if taken and not overwrite:  # a folder of the user's own data: replaced silently before
        raise SpotsweepError(
            f"{taken[0]}: already exists, and simulate would replace it; choose another --out or pass --overwrite."
        )
    from toolkit.data.synthetic import simulate as generate
    from toolkit.layout import write_atomically

    atlas = preset == "atlas"
    if atlas:  # its reference is the merfish-like one of the same seed; its cells go to Zarr chunk by chunk
        from toolkit.data.atlas import BASE_PRESET, write_atlas

        summary = write_atlas(out / "cells.zarr", n_spatial_cells, seed, n_genes=n_genes)
        preset, n_spatial_cells = BASE_PRESET, 1000
    reference, cells = generate(
        preset, seed, n_spatial_cells=n_spatial_cells, n_reference_cells=n_reference_cells, n_genes=n_genes
    )
    write_atomically(out / "reference.h5ad", lambda tmp: reference.write_h5ad(tmp))
    if atlas:
        cells_file, n_cells = out / "cells.zarr", summary["n_cells"]
    else:
        cells_file, n_cells = out / "cells.h5ad", cells.n_obs
        write_atomically(cells_file, lambda tmp: cells.write_h5ad(tmp))
    console.print(f"wrote {out / 'reference.h5ad'} ({reference.n_obs} cells) and {cells_file} ({n_cells} cells)")


CellsArgument = Annotated[
    Path,
    typer.Argument(
        metavar="CELLS",
        help="Spatial cells: an AnnData .h5ad or .zarr, a MERSCOPE output folder, or a counts CSV "
        "(with --cells-table).",
    ),
]
CellsTable = Annotated[
    Optional[Path], typer.Option(help="For a counts CSV: the cell table (cell id, x, y, cell type).")
]
Annotations = Annotated[
    Optional[Path], typer.Option(help="CSV of extra obs columns by cell id (e.g. MERSCOPE cell types).")
]
GeneList = Annotated[
    Optional[Path],
    typer.Option(help="Genes to keep: a text file (one per line) or an AnnData whose genes to share."),
]
Bbox = Annotated[Optional[str], typer.Option(help="Keep windows centred in XMIN,YMIN,XMAX,YMAX (coordinates' unit).")]
ClusterOptions = Annotated[
    Optional[Path], typer.Option(help="YAML of LocalCluster / dask_jobqueue.SLURMCluster keyword arguments.")
]


@app.command()
def build(
    cells: CellsArgument,
    out: Annotated[Path, typer.Option(help="The pseudospot AnnData Zarr store to write.")],
    window: Annotated[float, typer.Option(help="Side of the square window, in the coordinates' unit.")],
    cell_type_key: Annotated[str, typer.Option(help="Column with the cell types (obs or cell table).")] = "cell_type",
    edge_rule: Annotated[str, typer.Option(help="half-open, or li2022 (drop cells on grid lines).")] = "half-open",
    origin: Annotated[tuple[float, float], typer.Option(help="Where the grid starts: X Y.")] = (0.0, 0.0),
    cells_table: CellsTable = None,
    annotations: Annotations = None,
    layer: Annotated[Optional[str], typer.Option(help="AnnData layer with the raw counts (default X).")] = None,
    spatial_key: Annotated[str, typer.Option(help="AnnData obsm key of the coordinates.")] = "spatial",
    x_key: Annotated[Optional[str], typer.Option(help="Column of the x coordinate (obs or cell table).")] = None,
    y_key: Annotated[Optional[str], typer.Option(help="Column of the y coordinate (obs or cell table).")] = None,
    labels: Annotated[Optional[Path], typer.Option(help="Two-column CSV renaming cell types: old,new.")] = None,
    genes: GeneList = None,
    columns: Annotated[Optional[str], typer.Option(help="Keep these grid columns (x), e.g. 0,1,2.")] = None,
    rows: Annotated[Optional[str], typer.Option(help="Keep these grid rows (y), e.g. 4,5.")] = None,
    bbox: Bbox = None,
    allow_non_integer: Annotated[bool, typer.Option(help="The values are not raw counts: sum them anyway.")] = False,
    table: Annotated[str, typer.Option(help="SpatialData store: the table of cells.")] = "table",
    scheduler: Annotated[str, typer.Option(help="threads, local (dask.distributed) or slurm.")] = "threads",
    workers: Annotated[Optional[int], typer.Option(help="Threads, local workers or SLURM workers.")] = None,
    cluster_options: ClusterOptions = None,
    chunk_cells: Annotated[Optional[int], typer.Option(help="Cells per chunk (default: about 32 MiB).")] = None,
    memory_mib: Annotated[int, typer.Option(help="Memory for the spots' sums held at once (MiB).")] = 1024,
    progress: Annotated[bool, typer.Option(help="Show progress bars on stderr.")] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output store.")] = False,
) -> None:
    """Sum the cells of each square window into pseudospots with their true cell-type proportions.

    The cells are read and summed chunk by chunk with Dask, so inputs larger than memory work.
    """
    from toolkit.backends.dask_scheduler import DaskCluster, load_cluster_options
    from toolkit.data.readers import ReadOptions
    from toolkit.layout import check_not_an_input, check_replaceable
    from toolkit.pseudospots import GridSubset

    check_not_an_input(out, (cells, cells_table, annotations, labels, genes, cluster_options), "--out")
    if out.exists() and not overwrite:
        raise SpotsweepError(f"{out}: already exists; choose another --out or pass --overwrite.")
    check_replaceable(out, "--out")
    dask = DaskCluster(scheduler, workers, load_cluster_options(cluster_options))  # type: ignore[arg-type]
    subset = GridSubset.parse(columns=columns, rows=rows, bbox=bbox)
    grid = {"window": window, "origin": origin, "edge_rule": edge_rule, "subset": subset, "overwrite": overwrite}
    grid |= {"allow_non_integer": allow_non_integer, "memory_budget": memory_mib << 20, "progress": progress}
    options = ReadOptions(
        cell_type_key=cell_type_key,
        layer=layer,
        spatial_key=spatial_key,
        x_key=x_key,
        y_key=y_key,
        cells_table=cells_table,
        annotations=annotations,
        labels=labels,
        allow_non_integer=allow_non_integer,
        table=table,
    )
    _build_store(cells, options, chunk_cells, genes, out, dask, grid)


def _build_store(
    cells: Path,
    options: ReadOptions,
    chunk_cells: int | None,
    genes: Path | None,
    out: Path,
    dask: DaskCluster,
    grid: dict[str, Any],
) -> None:
    """`build` once its arguments are checked: open the cells, then sum them on the Dask scheduler asked for."""
    from toolkit.data.readers import load_gene_list, open_cells
    from toolkit.pseudospots.out_of_core import build_spots_store

    source = open_cells(cells, options, chunk_cells=chunk_cells)
    kept = None if genes is None else load_gene_list(genes, source.genes)
    with dask.open() as scheduler:
        summary = build_spots_store(source, out, genes=kept, scheduler=scheduler, **grid)
    console.print(
        f"wrote {out}: {summary.n_spots} spots x {summary.n_genes} genes from {summary.n_cells_used} of "
        f"{summary.n_cells_in} cells in {summary.seconds:.1f} s ({summary.cells_per_second:,.0f} cells/s)",
    )


SETTINGS_EPILOG = (
    "destVI budgets in a sweep file's method block (each may be a list, and lists are swept): "
    "max_steps: 30000 (a budget in optimizer steps instead of max_epochs); "
    "n_steps_kl_warmup: 2400 (the KL warm-up in steps instead of n_epochs_kl_warmup); "
    "drop_last: [false, true] (drop each epoch's last, shorter minibatch). "
    "Every destVI task scores its model 50 times during training (trajectory_points: 0 turns it off)."
)


@app.command(epilog=SETTINGS_EPILOG)
def run(
    sweep: Annotated[Path, typer.Argument(metavar="SWEEP", help="Sweep file (YAML), e.g. sweeps/demo.yaml.")],
    out: Out = None,
    retry_failed: Annotated[bool, typer.Option(help="Also rerun tasks that failed before.")] = False,
    max_parallel: Annotated[
        Optional[int], typer.Option(metavar="N", min=1, help="Tasks running at once (SLURM: array %N).")
    ] = None,
    executor: Executor = None,
    profile: Profile = None,
    wait: Annotated[
        Optional[bool],
        typer.Option("--wait/--no-wait", help="SLURM: wait with a progress bar (default when interactive)."),
    ] = None,
    container: Container = None,
    max_tasks: Annotated[
        int, typer.Option(metavar="N", min=1, help="Refuse a sweep of more tasks than this.")
    ] = 10_000,
    rerun_changed: Annotated[
        bool,
        typer.Option(
            help="Retrain, into this folder, the finished tasks whose input files changed since they ran "
            "(their old results are moved aside as result.stale-*.json)."
        ),
    ] = False,
    merge: Annotated[
        bool, typer.Option(help="Add this sweep's tasks to an output folder that holds another sweep's.")
    ] = False,
) -> None:
    """Run every task of a sweep not done yet (local processes or one SLURM array), then aggregate and report."""
    from toolkit.launch import load_sweep, run_sweep, with_executor

    config = with_executor(load_sweep(sweep), executor, profile, container)
    waiting = sys.stdout.isatty() if wait is None else wait
    summary = run_sweep(
        config,
        out,
        retry_failed=retry_failed,
        max_parallel=max_parallel,
        wait=waiting,
        max_tasks=max_tasks,
        rerun_changed=rerun_changed,
        merge=merge,
    )
    _say_how_it_ran(config.name, out or config.output, summary)


def _say_how_it_ran(name: str, root: Path, summary: RunSummary) -> None:
    """The run's outcome in a line or two; exit status 1 when a task failed."""
    states = ", ".join(f"{n} {k}" for k, n in summary.states.items() if n)
    if summary.jobs:
        jobs = ", ".join(f"{kind} {job}" for kind, job in summary.jobs.items())
        console.print(f"{name}: SLURM jobs: {jobs}")
    if summary.jobs and not summary.waited:
        console.print(
            f"{name}: submitted {summary.submitted} tasks, {summary.skipped} already done or skipped; "
            f"follow with `spotsweep status {root}`; the aggregate job writes {root / 'summary.nc'} at the end."
        )
        return
    console.print(
        f"{name}: submitted {summary.submitted}, already done or skipped {summary.skipped}; {states}; "
        f"{summary.seconds:.0f} s. Summary: {root / 'summary.nc'}, report: {root / 'report' / 'index.html'} "
        f"(and index.md)"
    )
    if summary.states["failed"]:
        console.print(f"[red]{summary.states['failed']} tasks failed[/red]: see `spotsweep status {root}`")
        raise typer.Exit(1)


@app.command(epilog=SETTINGS_EPILOG)
def plan(
    sweep: Annotated[Path, typer.Argument(metavar="SWEEP", help="Sweep file (YAML), e.g. sweeps/starmap-189.yaml.")],
    out: Annotated[
        Optional[Path], typer.Option(help="Output folder to count done tasks in (default: the sweep's).")
    ] = None,
) -> None:
    """A dry run: the tasks, their spots, steps and estimated hours, and what is done already. Writes nothing."""
    from toolkit.launch import check_size, load_sweep
    from toolkit.plan import SOURCES, PlannedTask, plan_sweep

    config = load_sweep(sweep)
    check_size(config)
    result = plan_sweep(config, out)
    table = Table("task", "spots", "batch", "epochs", "steps", "trains as", "CPU h", "GPU h", "state")

    def shown(planned: PlannedTask, device: str) -> str:
        hours = planned.hours(device)
        return "-" if not planned.steps else ("not measured" if hours is None else f"{hours:.2f}")

    for planned in result.tasks:
        table.add_row(
            planned.task.id,
            str(planned.n_spots),
            str(planned.batch_size) if planned.steps else "-",
            str(planned.task.max_epochs),
            f"{planned.steps:,}",
            planned.mode,
            shown(planned, "cpu"),
            shown(planned, "gpu"),
            planned.state,
        )
    console.print(table)
    for name, counts in result.axis_counts().items():
        console.print(f"{name}: " + ", ".join(f"{value} ({n})" for value, n in counts.items()))
    done = sum(planned.state == "done" for planned in result.tasks)
    steps = sum(planned.steps for planned in result.tasks if planned.state != "done")
    cpu, unmeasured = result.total_hours("cpu")
    gpu, gpu_unmeasured = result.total_hours("gpu")  # destVI with augmentation: a CPU figure, none on a GPU
    spots = ", ".join(f"{name} {n:,}" for name, n in result.spots.items())
    console.print(
        f"{config.name}: {len(result.tasks)} tasks ({done} done), spots {spots}; to run: {steps:,} optimizer steps, "
        f"about {cpu:.1f} CPU hours"
        + (f" plus {unmeasured} tasks without a measured figure" if unmeasured else "")
        + f"; about {gpu:.1f} GPU hours"
        + (f" plus {gpu_unmeasured} tasks without a measured figure" if gpu_unmeasured else "")
        + " on one GPU, one task at a time.",
    )
    console.print(f"CPU figures: {SOURCES['cpu']}. GPU figures: {SOURCES['gpu']}.")


@app.command()
def status(
    out: OutDir,
    state: Annotated[
        Optional[list[TaskStateName]],
        typer.Option(
            "--state",
            metavar="STATE",
            help="List only the tasks in this state; repeat for several (--state running --state failed). "
            "The counts below the table still cover every task.",
        ),
    ] = None,
) -> None:
    """Show each task's state (done, failed with reason and log, running, pending, ...), counts and SLURM jobs."""
    from toolkit.launch import describe_jobs, sweep_states
    from toolkit.layout import OutputLayout
    from toolkit.status import count_states, read_progress

    states = sweep_states(out)
    layout = OutputLayout(out)
    shown = {name.value for name in state} if state else None
    table = Table("task", "state", "job", "progress", "reason / log")
    table.columns[0].overflow = "fold"  # a task id is what a user copies: never cut it to "..."
    for task in states:
        if shown is not None and task.state not in shown:
            continue
        progress = read_progress(layout, task.task.id) if task.state in ("running", "started") else None
        where = progress.describe(running=task.state == "running") if progress else ""
        table.add_row(task.task.id, task.state, task.job, where, f"{task.reason}  {task.log}".strip())
    console.print(table)
    console.print(", ".join(f"{n} {k}" for k, n in count_states(states).items()))
    for line in describe_jobs(out):
        console.print(line)
    from toolkit.tune.report import status_lines

    for line in status_lines(out):
        console.print(line)
    from toolkit.freshness import describe_changes

    for line in describe_changes(layout):
        warnings_console.print(f"warning: {line}")


from toolkit.tune.cli import tune  # noqa: E402  # `spotsweep tune` lives with the tuner (toolkit.tune)

app.command()(tune)


@app.command()
def aggregate(out: OutDir) -> None:
    """Merge every task result into OUT/summary.nc, one xarray dataset with the swept settings as dims."""
    from toolkit.aggregate import write_summary

    dataset = write_summary(out)
    console.print(f"wrote {out / 'summary.nc'}: " + ", ".join(f"{k}={v}" for k, v in dataset.sizes.items()))


@app.command()
def report(out: OutDir) -> None:
    """Draw the figures and tables of OUT/summary.nc into OUT/report/ (markdown + PNG, and one HTML page)."""
    from toolkit.report import write_report

    page = write_report(out)
    console.print(f"wrote {page} and {page.with_suffix('.html')} (open it in a browser: one file, figures inside)")


@app.command()
def export(
    out: OutDir,
    task: Annotated[
        str,
        typer.Argument(metavar="TASK", help="A task id (or an unambiguous start of one), as `spotsweep status` lists."),
    ],
    to: Annotated[Path, typer.Option(help="The SpatialData store to write (a .zarr folder).")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing store.")] = False,
) -> None:
    """Write one configuration's predicted and true proportions as a SpatialData store (windows + table)."""
    from toolkit.export import export_task
    from toolkit.layout import check_not_an_input, check_replaceable

    check_not_an_input(to, [out], "--to")
    if overwrite:
        check_replaceable(to, "--to")
    console.print(f"wrote {export_task(out, task, to, overwrite=overwrite)}: open it with spatialdata.read_zarr")


def _read_table(path: Path, what: str, numbers: bool = True) -> pd.DataFrame:
    import csv

    import pandas as pd

    if not path.is_file():
        raise SpotsweepError(f"{path}: no such {what} table; give a CSV or TSV file of spots x cell types.")
    try:
        table = pd.read_csv(path, sep=None, engine="python", index_col=0)
    except (ValueError, csv.Error, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        reason = " ".join(str(exc).split()) or "empty"
        raise SpotsweepError(
            f"{path}: cannot read the {what} table ({reason}); give a CSV or TSV with a header row."
        ) from None
    header = pd.read_csv(path, sep=None, engine="python", header=None, nrows=1, dtype=str).iloc[0, 1:]
    repeated = header[header.duplicated()].unique()  # pandas renames a repeat (B -> B.1): read the header raw
    if len(repeated):
        raise SpotsweepError(
            f"{path}: the {what} table names column {', '.join(map(str, repeated[:5]))} more than once; give each "
            "cell type one column (sum or drop the repeats)."
        )
    if table.shape[0] == 0:  # read as columns of text, it was "column a holds text, not numbers"
        raise SpotsweepError(f"{path}: the {what} table has a header but no rows (no spots); give one row per spot.")
    text = [str(column) for column in table.columns if not pd.api.types.is_numeric_dtype(table[column])]
    if numbers and text:
        raise SpotsweepError(
            f"{path}: column {text[0]} of the {what} table holds text, not numbers; keep only spot ids "
            "(first column) and cell-type columns of numbers."
        )
    negative = table.to_numpy() < 0 if numbers else None
    if negative is not None and negative.any():
        row, column = (int(i[0]) for i in negative.nonzero())
        raise SpotsweepError(
            f"{path}: the {what} table has {int(negative.sum())} negative values (such as "
            f"{table.iat[row, column]:g} at spot {table.index[row]}, column {table.columns[column]}); proportions "
            "and counts are never negative: fix those values or drop those spots."
        )
    return table


@app.command()
def score(
    truth: Annotated[
        Path, typer.Argument(metavar="TRUTH", help="Truth table: spots x cell types (proportions, or cell counts).")
    ],
    predicted: Annotated[
        Path, typer.Argument(metavar="PREDICTED", help="Predicted proportions (or abundances): spots x cell types.")
    ],
    truth_is_counts: Annotated[bool, typer.Option(help="The truth holds cells per type (Li et al.'s layout).")] = False,
    strip_prefix: Annotated[str, typer.Option(help="Prefix to drop from predicted column names.")] = "",
    label_map: Annotated[
        Optional[Path], typer.Option(help="Two-column CSV (truth name, predicted name) renaming truth cell types.")
    ] = None,
    exclude: Annotated[list[str], typer.Option(help="Cell types to leave out of the evaluation (repeatable).")] = [],  # noqa: B006
    out: Annotated[Optional[Path], typer.Option(help="Folder for per_cell_type.csv and per_spot.csv.")] = None,
) -> None:
    """Score predictions against a truth table with the Li et al. 2022 benchmark's metrics and preprocessing."""
    from toolkit import metrics

    truth_table = _read_table(truth, "truth")
    predicted_table = _read_table(predicted, "predicted")
    _check_none_missing(predicted_table, predicted)
    predicted_table.columns = [str(c).removeprefix(strip_prefix) for c in predicted_table.columns]
    if label_map is not None:
        mapping = _read_table(label_map, "label map", numbers=False)
        truth_table = truth_table.rename(columns={str(k): str(v) for k, v in mapping.iloc[:, 0].items()})
    truth_names = [str(c) for c in truth_table.columns if c not in exclude]
    predicted_names = [str(c) for c in predicted_table.columns if c not in exclude]
    if truth_is_counts:
        kept = [c for c in predicted_table.columns if c not in exclude]
        truth_table = metrics.li2022_truth(truth_table, kept)
    truth_table = truth_table.drop(columns=[c for c in exclude if c in truth_table.columns])
    if truth_table.shape[1] < 2:
        raise SpotsweepError(
            f"{truth}: fewer than two cell types are named alike in the truth and {predicted}; "
            "rename them with --label-map (and --strip-prefix for prefixed columns)."
        )
    predicted_table = metrics.li2022_prediction(predicted_table, truth_table.columns)
    scores = metrics.score(truth_table, predicted_table)
    _print_scores(truth_table, predicted_table, scores)
    _warn_unscored(truth_names, predicted_names, [str(c) for c in truth_table.columns])
    if out is not None:
        _write_scores(out, scores, [truth, predicted, label_map])


def _check_none_missing(predicted_table: pd.DataFrame, predicted: Path) -> None:
    """A missing prediction is not a zero: refuse it, naming one."""
    missing = predicted_table.isna().to_numpy()
    if missing.any():
        spot, column = predicted_table.index[missing.any(axis=1)][0], predicted_table.columns[missing.any(axis=0)][0]
        raise SpotsweepError(
            f"{predicted}: {int(missing.sum())} predictions are missing (NaN), such as spot {spot}, column {column}; "
            "fill them or drop those spots (a missing value is not a zero)."
        )


def _print_scores(truth_table: pd.DataFrame, predicted_table: pd.DataFrame, scores: Scores) -> None:
    """Each metric's means over cell types and over spots, with why one is undefined where it is."""
    from toolkit import metrics

    table = Table("metric", "mean over cell types", "mean over spots")
    means = scores.means()
    why_types = metrics.why_undefined(truth_table, predicted_table[truth_table.columns])
    why_spots = metrics.why_undefined(truth_table.T, predicted_table[truth_table.columns].T)
    for name in metrics.METRICS:
        by_type = metrics.shown(means[f"{name}_cell_type"], "{:.4f}", why_types)
        table.add_row(name, by_type, metrics.shown(means[f"{name}_spot"], "{:.4f}", why_spots))
    console.print(
        f"scored {truth_table.shape[1]} cell types over {truth_table.shape[0]} spots: {', '.join(truth_table.columns)}"
    )
    console.print(table)


def _write_scores(out: Path, scores: Scores, inputs: list[Path | None]) -> None:
    """per_cell_type.csv and per_spot.csv into `out`, never over an input."""
    from toolkit.layout import check_not_an_input, write_atomically

    written = (out / "per_cell_type.csv", out / "per_spot.csv")
    for path in written:
        check_not_an_input(path, inputs, "--out")
    if out.exists() and not out.is_dir():
        raise SpotsweepError(f"{out}: --out is an existing file, not a folder; give a folder for the score tables.")
    write_atomically(written[0], lambda tmp: scores.per_cell_type.to_csv(tmp))
    write_atomically(written[1], lambda tmp: scores.per_spot.to_csv(tmp))
    console.print(f"wrote {out / 'per_cell_type.csv'} and {out / 'per_spot.csv'}")


def _warn_unscored(truth_names: list[str], predicted_names: list[str], scored: list[str]) -> None:
    """Say which cell types had no counterpart and were left out: most left out means the names differ."""
    unscored_truth = [name for name in truth_names if name not in scored]
    unscored_predicted = [name for name in predicted_names if name not in scored]
    if not (unscored_truth or unscored_predicted):
        return
    severity = "warning" if len(unscored_truth) >= len(scored) or len(unscored_predicted) >= len(scored) else "note"
    warnings_console.print(
        f"{severity}: not scored, no counterpart by name: truth {', '.join(unscored_truth) or 'none'}; "
        f"predicted {', '.join(unscored_predicted) or 'none'}. Rename with --label-map, or leave types out "
        "with --exclude."
    )


def _interrupted() -> None:
    print(
        "spotsweep: interrupted (Ctrl-C): nothing it writes is left half-written (each file and store is moved "
        "into place only once complete, so what was there before stands); run the same command again to finish, "
        "and jobs already submitted to SLURM go on (see `spotsweep status`).",
        file=sys.stderr,
    )
    sys.exit(130)


def main() -> None:
    """Entry point: user errors become one line and exit status 2."""
    import errno

    try:
        app()
    except SpotsweepError as exc:
        print(f"spotsweep: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # a Ctrl-C before typer runs the command (while it starts) was a traceback
        _interrupted()
    except SystemExit as exc:
        if exc.code == 130:  # typer ends a command stopped by Ctrl-C with a silent 130: say what it left
            _interrupted()
        raise
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(
            f"spotsweep: error: {where}no space left on the device ({exc.strerror}); free space (or write "
            "elsewhere) and run the same command again: what was finished is kept.",
            file=sys.stderr,
        )
        sys.exit(2)
