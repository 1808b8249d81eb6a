"""Synthetic single-cell reference plus single-cell-resolution spatial tissue with every truth known.

The generator imitates two public data sets that deconvolution papers (DestVI and others) use:
a STARmap section of mouse visual cortex and a MERFISH section of mouse brain.  Both come with a
droplet-like single-cell reference at different cell-type frequencies.  Each cell carries a cell
type and a continuous within-type state; in the tissue the state varies smoothly across space so
that pseudospots (square windows of ``PRESETS[name].window`` starting at coordinate 0) differ in
their mean state.  Counts are negative binomial (gamma-Poisson) and the spatial section carries a
gene-wise capture difference (the platform effect) that the reference lacks.

Sizes other than the preset's default keep the cell density: the section's extent is scaled by
``sqrt(n_spatial_cells / default)`` so cells per window stay as in the real data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scipy.ndimage import gaussian_filter

from toolkit.errors import SpotsweepError

__all__ = ["PRESETS", "CellTypeSpec", "SimulationPreset", "simulate"]

_CHUNK_ELEMENTS = 1 << 21  # cells x genes per count block: bounds memory for the large presets
_GENERATOR_VERSION = 1


@dataclass(frozen=True)
class CellTypeSpec:
    """One cell type: how common it is in each modality and where it sits along the layer axis.

    The depth profile is ``floor + (1 - floor) * exp(-0.5 * ((u - center) / width) ** 2)`` over
    the fractional position ``u`` in [0, 1) along the layer axis; ``band_center=None`` is uniform.
    """

    name: str
    spatial_freq: float
    reference_freq: float
    lineage: str
    band_center: float | None = None
    band_width: float = 0.1
    band_floor: float = 1.0
    n_markers: int = 5

    def depth_profile(self, u: np.ndarray) -> np.ndarray:
        """Relative density of this type at fractional depth ``u`` (soft bands overlap)."""
        if self.band_center is None:
            return np.ones_like(u, dtype=float)
        bump = np.exp(-0.5 * ((u - self.band_center) / self.band_width) ** 2)
        return self.band_floor + (1.0 - self.band_floor) * bump


@dataclass(frozen=True)
class SimulationPreset:
    """All parameters of one imitated data set; frozen so presets cannot drift between callers."""

    name: str
    description: str
    cell_types: tuple[CellTypeSpec, ...]
    n_spatial_cells: int
    n_reference_cells: int
    n_genes: int
    extent: tuple[float, float]
    window: float
    units: str
    orientation: str
    """Which way the tissue runs on the grid, in words (the report's maps say it)."""
    layer_axis: int = 1
    n_state_dims: int = 2
    state_noise: float = 0.2
    state_effect_sd: float = 0.8
    state_gene_fraction: float = 0.1
    grid_step: float = 150.0
    cluster_scale: float = 300.0
    cluster_sd: float = 0.35
    base_log_sd: float = 1.2
    lineage_log_sd: float = 0.5
    type_log_sd: float = 0.25
    marker_log_fold: tuple[float, float] = (2.0, 3.5)
    dispersion_median: float = 4.0
    dispersion_log_sd: float = 0.5
    platform_log_sd: float = 0.5
    reference_library: tuple[float, float] = (5000.0, 0.35)
    spatial_library: tuple[float, float] = (300.0, 0.4)
    notes: tuple[str, ...] = field(default=())

    @property
    def type_names(self) -> list[str]:
        """Category list shared by reference and spatial, in preset order."""
        return [t.name for t in self.cell_types]

    @property
    def spatial_frequencies(self) -> np.ndarray:
        """Renormalised tissue frequencies (the tables are quoted, so they need not sum to 1)."""
        return _normalised([t.spatial_freq for t in self.cell_types])

    @property
    def reference_frequencies(self) -> np.ndarray:
        """Renormalised reference frequencies."""
        return _normalised([t.reference_freq for t in self.cell_types])


def _normalised(values: list[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return arr / arr.sum()


def _ct(
    name: str,
    spatial: float,
    reference: float,
    lineage: str,
    band: tuple[float, float, float] | None = None,
    n_markers: int = 5,
) -> CellTypeSpec:
    """Short constructor for the preset tables; ``band`` is (center, width, floor)."""
    if band is None:
        return CellTypeSpec(name, spatial, reference, lineage, n_markers=n_markers)
    center, width, floor = band
    return CellTypeSpec(name, spatial, reference, lineage, center, width, floor, n_markers)


_STARMAP_TYPES = (
    # Cortical layers along depth y (pia at y=0): L1 is cell-poor, L2/3 < L4 < L5 < L6, white matter last.
    _ct("ExcitatoryL2and3", 0.145, 0.15, "excitatory", (0.24, 0.07, 0.02)),
    _ct("ExcitatoryL4", 0.115, 0.12, "excitatory", (0.42, 0.05, 0.02)),
    _ct("ExcitatoryL5", 0.10, 0.14, "excitatory", (0.58, 0.07, 0.02)),
    _ct("ExcitatoryL6", 0.135, 0.20, "excitatory", (0.77, 0.07, 0.02)),
    _ct("Pvalb", 0.03, 0.07, "inhibitory", (0.5, 0.3, 0.3)),
    _ct("Sst", 0.03, 0.07, "inhibitory", (0.6, 0.3, 0.3)),
    _ct("Vip", 0.02, 0.07, "inhibitory", (0.3, 0.25, 0.3)),
    _ct("Astro", 0.14, 0.04, "glia", (0.03, 0.06, 0.6)),
    _ct("Olig", 0.14, 0.04, "glia", (0.95, 0.07, 0.3)),
    _ct("Micro", 0.06, 0.03, "glia"),
    _ct("Endo", 0.06, 0.04, "vascular"),
    _ct("Smc", 0.025, 0.03, "vascular"),
)

_MERFISH_TYPES = (
    # Coronal brain section, y from dorsal to ventral; fibre tracts (mature OD) at the ventral end.
    _ct("Excitatory", 0.14, 0.30, "excitatory", (0.3, 0.2, 0.3)),
    _ct("Inhibitory", 0.24, 0.32, "inhibitory", (0.65, 0.25, 0.4)),
    _ct("Astrocyte", 0.10, 0.08, "glia"),
    _ct("OD Mature 1", 0.05, 0.02, "oligodendrocyte", (0.9, 0.1, 0.15)),
    _ct("OD Mature 2", 0.06, 0.03, "oligodendrocyte", (0.85, 0.12, 0.2)),
    _ct("OD Mature 3", 0.02, 0.01, "oligodendrocyte", (0.9, 0.1, 0.15)),
    _ct("OD Immature 1", 0.04, 0.03, "oligodendrocyte", (0.7, 0.25, 0.5)),
    _ct("OD Immature 2", 0.01, 0.01, "oligodendrocyte"),
    _ct("Microglia", 0.05, 0.04, "glia"),
    _ct("Endothelial 1", 0.06, 0.03, "vascular"),
    _ct("Endothelial 2", 0.02, 0.01, "vascular"),
    _ct("Endothelial 3", 0.02, 0.01, "vascular"),
    _ct("Pericytes", 0.02, 0.02, "vascular"),
    _ct("Ependymal", 0.03, 0.02, "ependymal", (0.5, 0.02, 0.0)),
    _ct("Ambiguous", 0.14, 0.07, "ambiguous", n_markers=1),
)

PRESETS: dict[str, SimulationPreset] = {
    "starmap-like": SimulationPreset(
        name="starmap-like",
        description="STARmap mouse visual cortex section with an Allen VISp-like droplet reference.",
        cell_types=_STARMAP_TYPES,
        n_spatial_cells=1523,
        n_reference_cells=14000,
        n_genes=1020,
        extent=(7100.0, 13800.0),
        window=750.0,
        units="px",
        orientation="cortical depth along y: pia at low y, white matter at high y",
        grid_step=150.0,
        cluster_scale=300.0,
        cluster_sd=0.15,
        spatial_library=(250.0, 0.45),
        reference_library=(6000.0, 0.35),
        notes=("189 spots of 750 px with 1..17 cells in the real data",),
    ),
    "merfish-like": SimulationPreset(
        name="merfish-like",
        description="MERFISH mouse brain section with a droplet reference at different frequencies.",
        cell_types=_MERFISH_TYPES,
        n_spatial_cells=84000,
        n_reference_cells=160000,
        n_genes=483,
        extent=(7600.0, 6000.0),
        window=40.0,
        units="um",
        orientation="y from dorsal (low y) to ventral (high y), fibre tracts at the ventral end",
        grid_step=10.0,
        cluster_scale=25.0,
        cluster_sd=0.4,
        spatial_library=(300.0, 0.45),
        reference_library=(2000.0, 0.35),
        notes=("about 27,000 spots of 40 um with 1..16 cells in the real data",),
    ),
}


@dataclass(frozen=True)
class GeneModel:
    """Per-gene truths shared by both modalities (only the platform effect is spatial-only)."""

    type_log: np.ndarray  # (types, genes) log mean expression at state 0, up to a per-type constant
    loadings: np.ndarray  # (types, state dims, genes) how the state shifts log expression
    dispersion: np.ndarray  # (genes,) negative binomial inverse dispersion (gamma shape)
    platform: np.ndarray  # (genes,) multiplicative capture difference of the spatial platform
    marker_of: np.ndarray  # (genes,) name of the type a gene marks, "" when none


@dataclass(frozen=True)
class _StateField:
    """Smooth spatial functions of the state: dim 0 a monotone gradient in x, others random waves."""

    directions: np.ndarray  # (dims, 2) unit vectors in fractional coordinates
    frequencies: np.ndarray  # (dims,)
    phases: np.ndarray  # (dims,)
    noise: float

    def sample(self, u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """States at fractional positions ``u`` (n x 2), each in about [-1, 1] plus noise."""
        proj = u @ self.directions.T  # (n, dims)
        smooth = np.sin(np.pi * self.frequencies * (proj - 0.5) + self.phases)
        noisy = smooth + rng.normal(0.0, self.noise, size=smooth.shape)
        return noisy.astype(np.float32)


def simulate(
    preset: str = "starmap-like",
    seed: int = 0,
    *,
    n_spatial_cells: int | None = None,
    n_reference_cells: int | None = None,
    n_genes: int | None = None,
) -> tuple[AnnData, AnnData]:
    """Return (reference, spatial): raw counts with known cell types, states and positions.

    Identical arguments give identical data; the gene model depends only on (preset, seed, n_genes).
    """
    spec = lookup_preset(preset)
    seed = check_seed(seed)
    n_sp = check_size("n_spatial_cells", n_spatial_cells, spec.n_spatial_cells)
    n_ref = check_size("n_reference_cells", n_reference_cells, spec.n_reference_cells)
    n_g = check_size("n_genes", n_genes, spec.n_genes)

    root = np.random.default_rng(seed)
    gene_rng, field_rng, sp_layout_rng, sp_count_rng, ref_layout_rng, ref_count_rng = root.spawn(6)
    model = gene_model(spec, n_g, gene_rng)
    states_field = state_field(spec, field_rng)
    extent = scaled_extent(spec, n_sp)

    sp_codes = allocate_types(n_sp, spec.spatial_frequencies, sp_layout_rng)
    positions = sample_positions(spec, sp_codes, extent, sp_layout_rng)
    sp_states = states_field.sample(positions / np.asarray(extent), sp_layout_rng)
    sp_counts = _sample_counts(model, sp_codes, sp_states, spec.spatial_library, sp_count_rng, spatial=True)

    ref_codes = allocate_types(n_ref, spec.reference_frequencies, ref_layout_rng)
    ref_states = states_field.sample(ref_layout_rng.random((n_ref, 2)), ref_layout_rng)
    ref_counts = _sample_counts(model, ref_codes, ref_states, spec.reference_library, ref_count_rng, spatial=False)

    params = simulation_parameters(spec, seed, n_sp, n_ref, n_g, extent)
    reference = _assemble(spec, model, ref_counts, ref_codes, ref_states, params, "reference", "ref")
    spatial = _assemble(spec, model, sp_counts, sp_codes, sp_states, params, "spatial", "cell")
    spatial.obsm["spatial"] = positions
    spatial.var["platform_effect"] = model.platform.astype(np.float32)
    return reference, spatial


def spatial_positions(preset: str, seed: int = 0, n_spatial_cells: int | None = None) -> np.ndarray:
    """The spatial cells' positions exactly as `simulate` places them, without drawing any expression:
    what counting a tissue's windows needs (`spotsweep plan`)."""
    spec = lookup_preset(preset)
    seed = check_seed(seed)
    n_sp = check_size("n_spatial_cells", n_spatial_cells, spec.n_spatial_cells)
    _, _, sp_layout_rng, *_ = np.random.default_rng(seed).spawn(6)
    codes = allocate_types(n_sp, spec.spatial_frequencies, sp_layout_rng)
    return sample_positions(spec, codes, scaled_extent(spec, n_sp), sp_layout_rng)


def lookup_preset(preset: object) -> SimulationPreset:
    if preset == "atlas":
        raise SpotsweepError(
            "Preset 'atlas' in field 'preset' is too large to simulate in memory; write it to disk with "
            "`spotsweep simulate --preset atlas --out DIR` and build its spots with `spotsweep build DIR/cells.zarr`."
        )
    if not isinstance(preset, str) or preset not in PRESETS:
        choices = ", ".join(sorted(PRESETS))
        raise SpotsweepError(f"Unknown simulation preset {preset!r} in field 'preset'; use one of: {choices}.")
    return PRESETS[preset]


def check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SpotsweepError(f"'seed' must be a non-negative integer (got {seed!r}), e.g. 0.")
    return int(seed)


def check_size(name: str, value: object, default: int) -> int:
    """None means the preset default; anything but a positive integer is a user error."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise SpotsweepError(
            f"'{name}' must be a positive integer (got {value!r}); leave it out for the preset's default of {default}."
        )
    return int(value)


def scaled_extent(spec: SimulationPreset, n_cells: int) -> tuple[float, float]:
    """Keep cell density (hence cells per window) when the cell count departs from the default."""
    if n_cells == spec.n_spatial_cells:
        return spec.extent
    scale = math.sqrt(n_cells / spec.n_spatial_cells)
    return (spec.extent[0] * scale, spec.extent[1] * scale)


def allocate_types(n: int, freqs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exact largest-remainder counts, shuffled: frequencies hit the table up to rounding."""
    raw = freqs * n
    counts = np.floor(raw).astype(np.int64)
    short = n - int(counts.sum())
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[:short]] += 1
    codes = np.repeat(np.arange(len(freqs)), counts)
    return rng.permutation(codes)


def gene_model(spec: SimulationPreset, n_genes: int, rng: np.random.Generator) -> GeneModel:
    """Log-normal base profile + lineage and type deviations + strong markers + state loadings."""
    n_types = len(spec.cell_types)
    base = rng.normal(0.0, spec.base_log_sd, n_genes)
    lineages = sorted({t.lineage for t in spec.cell_types})
    lineage_dev = {name: _sparse_normal(rng, n_genes, 0.2, spec.lineage_log_sd) for name in lineages}
    type_log = np.empty((n_types, n_genes))
    marker_of = np.full(n_genes, "", dtype=object)
    marker_pool = np.resize(rng.permutation(n_genes), sum(t.n_markers for t in spec.cell_types))
    start = 0
    for i, ct in enumerate(spec.cell_types):
        type_log[i] = base + lineage_dev[ct.lineage] + rng.normal(0.0, spec.type_log_sd, n_genes)
        markers = marker_pool[start : start + ct.n_markers]
        start += ct.n_markers
        type_log[i, markers] += rng.uniform(*spec.marker_log_fold, size=len(markers))
        marker_of[markers] = ct.name
    loadings = np.stack(
        [
            np.stack(
                [
                    _sparse_normal(rng, n_genes, spec.state_gene_fraction, spec.state_effect_sd)
                    for _ in range(spec.n_state_dims)
                ]
            )
            for _ in range(n_types)
        ]
    )
    dispersion = spec.dispersion_median * np.exp(rng.normal(0.0, spec.dispersion_log_sd, n_genes))
    platform = np.exp(rng.normal(0.0, spec.platform_log_sd, n_genes))
    return GeneModel(type_log, loadings, dispersion, platform, marker_of)


def _sparse_normal(rng: np.random.Generator, n: int, fraction: float, sd: float) -> np.ndarray:
    """Normal effects on a random fraction of genes: programs touch some genes, not all."""
    values = rng.normal(0.0, sd, n)
    return np.where(rng.random(n) < fraction, values, 0.0)


def state_field(spec: SimulationPreset, rng: np.random.Generator) -> _StateField:
    dims = spec.n_state_dims
    angles = rng.uniform(0.0, np.pi, dims)
    angles[0] = 0.0  # first state dimension: a gradient along x, across the layers
    directions = np.column_stack([np.cos(angles), np.sin(angles)])
    frequencies = np.ones(dims)
    frequencies[1:] = rng.uniform(1.0, 2.0, dims - 1)
    phases = np.zeros(dims)
    phases[1:] = rng.uniform(0.0, 2 * np.pi, dims - 1)
    return _StateField(directions, frequencies, phases, spec.state_noise)


def _density_field(shape: tuple[int, int], sigma: float, sd: float, rng: np.random.Generator) -> np.ndarray:
    """Log-Gaussian random field: clusters cells so windows range from sparse to crowded.

    The standardised field is clipped at +-3 sd so a large section has no implausible hot spot.
    """
    noise = gaussian_filter(rng.normal(size=shape), sigma=sigma, mode="reflect")
    z = np.clip((noise - noise.mean()) / (noise.std() or 1.0), -3.0, 3.0)
    return np.exp(sd * z)


def sample_positions(
    spec: SimulationPreset, codes: np.ndarray, extent: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """Place each type's cells by its depth profile times a shared clustered density field.

    Real tissue is more regular than a Poisson process (cells exclude each other), so each type is
    drawn by systematic sampling along a Hilbert curve: window counts vary through the density field
    rather than through Poisson noise, which keeps the busiest windows near the real maxima.
    """
    shape = (max(1, round(extent[0] / spec.grid_step)), max(1, round(extent[1] / spec.grid_step)))
    step = np.array([extent[0] / shape[0], extent[1] / shape[1]])
    density = _density_field(shape, spec.cluster_scale / spec.grid_step, spec.cluster_sd, rng)
    depth = (np.arange(shape[spec.layer_axis]) + 0.5) / shape[spec.layer_axis]
    orders: dict[tuple[int, int], np.ndarray] = {}
    positions = np.empty((len(codes), 2))
    for code, ct in enumerate(spec.cell_types):
        members = np.flatnonzero(codes == code)
        if members.size == 0:
            continue
        profile = ct.depth_profile(depth)
        weight = density * (profile[None, :] if spec.layer_axis == 1 else profile[:, None])
        flips = (int(rng.integers(0, 2)), int(rng.integers(0, 2)))  # per-type curve orientation
        if flips not in orders:
            orders[flips] = _curve_order(shape, flips)
        order = orders[flips]
        flat = order[_systematic(weight.ravel()[order], members.size, rng)]
        cell = np.column_stack(np.unravel_index(flat, shape))
        positions[members] = rng.permutation(cell + rng.random((members.size, 2))) * step
    upper = np.nextafter(np.asarray(extent, dtype=float), 0.0)
    return np.minimum(positions, upper)


def _systematic(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` draws with one random start and equal spacing in cumulative weight."""
    cumulative = np.cumsum(weights)
    points = (rng.random() + np.arange(n)) * (cumulative[-1] / n)
    return np.minimum(np.searchsorted(cumulative, points, side="right"), len(weights) - 1)


def _curve_order(shape: tuple[int, int], flips: tuple[int, int]) -> np.ndarray:
    """Flat grid indices sorted along a (possibly mirrored) Hilbert curve."""
    ix, iy = np.indices(shape)
    ix = shape[0] - 1 - ix if flips[0] else ix
    iy = shape[1] - 1 - iy if flips[1] else iy
    return np.argsort(_hilbert_index(ix, iy).ravel(), kind="stable")


def _hilbert_index(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Position along a Hilbert curve: consecutive indices are neighbours in 2-D."""
    x = x.astype(np.int64).copy()
    y = y.astype(np.int64).copy()
    side = 1 << max(1, int(max(x.max(), y.max())).bit_length())
    d = np.zeros_like(x)
    s = side // 2
    while s > 0:
        rx = (x & s) > 0
        ry = (y & s) > 0
        d += s * s * ((3 * rx.astype(np.int64)) ^ ry.astype(np.int64))
        flip = ~ry & rx
        x = np.where(flip, side - 1 - x, x)
        y = np.where(flip, side - 1 - y, y)
        swap = ~ry
        x, y = np.where(swap, y, x), np.where(swap, x, y)
        s //= 2
    return d


def _sample_counts(
    model: GeneModel,
    codes: np.ndarray,
    states: np.ndarray,
    library: tuple[float, float],
    rng: np.random.Generator,
    *,
    spatial: bool,
) -> sp.csr_matrix:
    """Gamma-Poisson counts in blocks of cells so memory stays bounded for 10^5 cells."""
    n_cells, n_genes = len(codes), model.type_log.shape[1]
    median, sd = library
    sizes = median * np.exp(rng.normal(0.0, sd, n_cells))
    chunk = max(1, _CHUNK_ELEMENTS // n_genes)
    shape_param = model.dispersion.astype(np.float32)
    data, indices, row_nnz = [], [], []
    for start in range(0, n_cells, chunk):
        block = slice(start, start + chunk)
        mean = expected_counts(model, codes[block], states[block], sizes[block], spatial)
        gamma = rng.standard_gamma(shape_param, size=mean.shape, dtype=np.float32)
        counts = rng.poisson(mean * (gamma / shape_param))
        nonzero = counts > 0
        data.append(counts[nonzero].astype(np.float32))
        indices.append(np.nonzero(nonzero)[1].astype(np.int32))
        row_nnz.append(nonzero.sum(axis=1))
    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    if row_nnz:
        np.cumsum(np.concatenate(row_nnz), out=indptr[1:])
    if indptr[-1] < np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    return sp.csr_matrix((_concat(data, np.float32), _concat(indices, np.int32), indptr), shape=(n_cells, n_genes))


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    """Concatenate and drop the parts at once, so peak memory is about twice the output."""
    out = np.concatenate(parts) if parts else np.empty(0, dtype=dtype)
    parts.clear()
    return out


def expected_counts(
    model: GeneModel, codes: np.ndarray, states: np.ndarray, sizes: np.ndarray, spatial: bool
) -> np.ndarray:
    """Per-cell NB means: type profile shifted by state in log space, scaled to the library size."""
    log_rate = model.type_log[codes]
    for code in np.unique(codes):
        rows = codes == code
        log_rate[rows] += states[rows].astype(float) @ model.loadings[code]
    log_rate -= log_rate.max(axis=1, keepdims=True)
    rate = np.exp(log_rate)
    rate *= (sizes / rate.sum(axis=1))[:, None]
    if spatial:
        rate *= model.platform
    return rate


def simulation_parameters(
    spec: SimulationPreset, seed: int, n_sp: int, n_ref: int, n_genes: int, extent: tuple[float, float]
) -> dict:
    """JSON- and h5ad-serialisable record of what was generated (flat lists, no nested lists of dicts)."""
    return {
        "generator": "toolkit.data.synthetic",
        "version": _GENERATOR_VERSION,
        "preset": spec.name,
        "seed": seed,
        "n_spatial_cells": n_sp,
        "n_reference_cells": n_ref,
        "n_genes": n_genes,
        "n_state_dims": spec.n_state_dims,
        "extent": [float(extent[0]), float(extent[1])],
        "window": float(spec.window),
        "units": spec.units,
        "layer_axis": spec.layer_axis,
        "cell_types": spec.type_names,
        "spatial_frequencies": [float(f) for f in spec.spatial_frequencies],
        "reference_frequencies": [float(f) for f in spec.reference_frequencies],
        "platform_log_sd": spec.platform_log_sd,
        "spatial_library_median": spec.spatial_library[0],
        "reference_library_median": spec.reference_library[0],
    }


def _assemble(
    spec: SimulationPreset,
    model: GeneModel,
    counts: sp.csr_matrix,
    codes: np.ndarray,
    states: np.ndarray,
    params: dict,
    modality: str,
    prefix: str,
) -> AnnData:
    """Wrap counts and truths in the canonical AnnData (shared var_names and category list)."""
    n_cells, n_genes = counts.shape
    width = max(4, len(str(n_genes)))
    var_names = [f"Gene{i:0{width}d}" for i in range(1, n_genes + 1)]
    obs_names = [f"{prefix}{i:0{max(6, len(str(n_cells)))}d}" for i in range(n_cells)]
    cell_type = pd.Categorical.from_codes(codes, categories=spec.type_names)
    obs = pd.DataFrame({"cell_type": cell_type}, index=pd.Index(obs_names))
    var = pd.DataFrame(
        {
            "marker_of": pd.Series(model.marker_of, dtype=str).to_numpy(),
            "dispersion": model.dispersion.astype(np.float32),
        },
        index=pd.Index(var_names),
    )
    adata = AnnData(X=counts, obs=obs, var=var)
    adata.obsm["state"] = np.ascontiguousarray(states, dtype=np.float32)
    adata.varm["type_profile"] = type_profiles(model).T.astype(np.float32)
    adata.uns["simulation"] = {**params, "modality": modality}
    return adata


def type_profiles(model: GeneModel) -> np.ndarray:
    """Expression fractions per type at state 0 (rows sum to 1): the truth a deconvolver estimates."""
    shifted = np.exp(model.type_log - model.type_log.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
