"""The `spotsweep` command line (also `python -m toolkit`).

Every subcommand is a thin shell over a library function; any SpotsweepError becomes one line on stderr
and exit status 2, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from toolkit.errors import SpotsweepError

if TYPE_CHECKING:
    import pandas as pd

app = typer.Typer(
    help="Sweep spatial deconvolution methods (destVI, ...) over their training settings, reproducibly.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()

OutDir = Annotated[Path, typer.Argument(help="A sweep's output folder (the sweep file's 'output').")]


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="Folder to write reference.h5ad and cells.h5ad into.")],
    preset: Annotated[str, typer.Option(help="Tissue preset: starmap-like or merfish-like.")] = "starmap-like",
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same tissue.")] = 0,
    n_spatial_cells: Annotated[Optional[int], typer.Option(help="Spatial cells (default: the preset's).")] = None,
    n_reference_cells: Annotated[Optional[int], typer.Option(help="Reference cells (default: the preset's).")] = None,
    n_genes: Annotated[Optional[int], typer.Option(help="Genes (default: the preset's).")] = None,
) -> None:
    """Generate a synthetic single-cell reference and a single-cell-resolution spatial section."""
    from toolkit.data.synthetic import simulate as generate
    from toolkit.layout import write_atomically

    reference, cells = generate(
        preset, seed, n_spatial_cells=n_spatial_cells, n_reference_cells=n_reference_cells, n_genes=n_genes
    )
    for name, data in (("reference.h5ad", reference), ("cells.h5ad", cells)):
        write_atomically(out / name, lambda tmp, data=data: data.write_h5ad(tmp))
    console.print(
        f"wrote {out / 'reference.h5ad'} ({reference.n_obs} cells) and {out / 'cells.h5ad'} ({cells.n_obs} cells)"
    )


@app.command()
def build(
    cells: Annotated[Path, typer.Argument(help="Single-cell-resolution spatial AnnData (.h5ad) with obsm['spatial'].")],
    out: Annotated[Path, typer.Option(help="The pseudospot Zarr store to write.")],
    window: Annotated[float, typer.Option(help="Side of the square window, in the coordinates' unit.")],
    cell_type_key: Annotated[str, typer.Option(help="obs column with the cell types.")] = "cell_type",
    edge_rule: Annotated[str, typer.Option(help="half-open, or li2022 (drop cells on grid lines).")] = "half-open",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output store.")] = False,
) -> None:
    """Sum the cells of each square window into pseudospots with their true cell-type proportions."""
    import anndata as ad

    from toolkit.pseudospots import build_pseudospots, write_spots

    if out.exists() and not overwrite:
        raise SpotsweepError(f"{out}: already exists; choose another --out or pass --overwrite.")
    if edge_rule not in ("half-open", "li2022"):
        raise SpotsweepError(f"--edge-rule '{edge_rule}' is unknown; use half-open or li2022.")
    if not cells.exists():
        raise SpotsweepError(f"{cells}: no such file; give the path of a .h5ad file.")
    spots = build_pseudospots(
        ad.read_h5ad(cells),
        window,
        cell_type_key=cell_type_key,
        edge_rule=edge_rule,
        source=str(cells),  # type: ignore[arg-type]
    )
    if out.exists():
        import shutil

        shutil.rmtree(out)
    write_spots(spots, out)
    console.print(f"wrote {out}: {spots.n_obs} spots x {spots.n_vars} genes")


@app.command()
def run(
    sweep: Annotated[Path, typer.Argument(help="Sweep file (YAML), e.g. sweeps/demo.yaml.")],
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default: the sweep file's 'output').")] = None,
    retry_failed: Annotated[bool, typer.Option(help="Also rerun tasks that failed before.")] = False,
    max_parallel: Annotated[Optional[int], typer.Option(help="Tasks running at once (local executor).")] = None,
) -> None:
    """Run every task of a sweep not done yet (local processes through submitit), then aggregate and report."""
    from toolkit.config import load_sweep
    from toolkit.launch import run_sweep

    config = load_sweep(sweep)
    summary = run_sweep(config, out, retry_failed=retry_failed, max_parallel=max_parallel)
    root = out or config.output
    states = ", ".join(f"{n} {k}" for k, n in summary.states.items() if n)
    console.print(
        f"{config.name}: submitted {summary.submitted}, already done or skipped {summary.skipped}; {states}; "
        f"{summary.seconds:.0f} s. Summary: {root / 'summary.nc'}, report: {root / 'report' / 'index.md'}"
    )
    if summary.states["failed"]:
        console.print(f"[red]{summary.states['failed']} tasks failed[/red]: see `spotsweep status {root}`")
        raise typer.Exit(1)


@app.command()
def status(out: OutDir) -> None:
    """Show each task's state (done, failed with its reason and log, started, missing) and the counts."""
    from toolkit.status import count_states, sweep_states

    states = sweep_states(out)
    table = Table("task", "state", "reason / log")
    for state in states:
        table.add_row(state.task.id, state.state, f"{state.reason}  {state.log}".strip())
    console.print(table)
    console.print(", ".join(f"{n} {k}" for k, n in count_states(states).items()))


@app.command()
def aggregate(out: OutDir) -> None:
    """Merge every task result into OUT/summary.nc, one xarray dataset with the swept settings as dims."""
    from toolkit.aggregate import write_summary

    dataset = write_summary(out)
    console.print(f"wrote {out / 'summary.nc'}: " + ", ".join(f"{k}={v}" for k, v in dataset.sizes.items()))


@app.command()
def report(out: OutDir) -> None:
    """Draw the figures and tables of OUT/summary.nc into OUT/report/ (markdown + PNG)."""
    from toolkit.report import write_report

    console.print(f"wrote {write_report(out)}")


def _read_table(path: Path, what: str) -> pd.DataFrame:
    import pandas as pd

    if not path.is_file():
        raise SpotsweepError(f"{path}: no such {what} table; give a CSV or TSV file of spots x cell types.")
    try:
        return pd.read_csv(path, sep=None, engine="python", index_col=0)
    except (ValueError, pd.errors.ParserError) as exc:
        raise SpotsweepError(
            f"{path}: cannot read the {what} table ({exc}); give a CSV or TSV with a header row."
        ) from None


@app.command()
def score(
    truth: Annotated[Path, typer.Argument(help="Truth table: spots x cell types (proportions, or cell counts).")],
    predicted: Annotated[Path, typer.Argument(help="Predicted proportions (or abundances): spots x cell types.")],
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
    predicted_table.columns = [str(c).removeprefix(strip_prefix) for c in predicted_table.columns]
    if label_map is not None:
        mapping = _read_table(label_map, "label map")
        truth_table = truth_table.rename(columns={str(k): str(v) for k, v in mapping.iloc[:, 0].items()})
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
    table = Table("metric", "mean over cell types", "mean over spots")
    means = scores.means()
    for name in metrics.METRICS:
        table.add_row(name, f"{means[f'{name}_cell_type']:.4f}", f"{means[f'{name}_spot']:.4f}")
    console.print(
        f"scored {truth_table.shape[1]} cell types over {truth_table.shape[0]} spots: {', '.join(truth_table.columns)}"
    )
    console.print(table)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        scores.per_cell_type.to_csv(out / "per_cell_type.csv")
        scores.per_spot.to_csv(out / "per_spot.csv")
        console.print(f"wrote {out / 'per_cell_type.csv'} and {out / 'per_spot.csv'}")


def main() -> None:
    """Entry point: user errors become one line and exit status 2."""
    try:
        app()
    except SpotsweepError as exc:
        print(f"spotsweep: error: {exc}", file=sys.stderr)
        sys.exit(2)
