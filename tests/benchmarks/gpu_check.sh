#!/usr/bin/env bash
# The GPU check (tests/benchmarks/gpu_check.py), in two steps, and its rehearsal on the CPU:
#   here, once:           bash tests/benchmarks/gpu_check.sh pack       -> .gpu/wheels and .gpu/starmap (ignored by git)
#   on the GPU machine:   bash tests/benchmarks/gpu_check.sh run OUT [OPTIONS]
#                         -> OUT/gpu_check.{json,md,log}, about 9 minutes (a 510 s deadline plus the install)
#   here, on the CPU:     bash tests/benchmarks/gpu_check.sh rehearse [OUT] -> the whole script at toy sizes
# The GPU machine has Python 3.12 with its own torch, lightning, jax, numpyro, h5py, xarray, ... but no
# package registry and no ../shared: `pack` downloads the wheels it lacks (what gpu_check imports beyond
# that machine's packages, versions as in this project's venv) and copies the STARmap files; pass .gpu
# along (the device tool's `carry: [".gpu"]`). OUT defaults to $OUT (the device tool's folder that comes
# back), else results/gpu-<device>.
set -euo pipefail
cd "$(dirname "$0")/../.."
PURE=(  # pure Python: built or fetched here as py3 wheels
  anndata==0.12.19 dask==2026.1.1 docrep==0.3.2 donfig==0.8.1.post1 importlib-metadata==10.2.0
  lazy-importer==0.1.0 legacy-api-wrap==1.5 ml-collections==1.1.0 mudata==0.3.10 natsort==8.4.0
  pyro-ppl==1.9.2 pytz==2026.6 scanpy==1.11.5 scverse-misc==0.0.3 scvi-tools==1.4.2 sparse==0.19.3
  tblib==3.2.2 zarr==3.1.6
)
BINARY=(google-crc32c==1.9.0 numcodecs==0.16.6 orjson==3.13.0)  # compiled: CPython 3.12 manylinux wheels
case "${1:-}" in
  pack)
    python3 -m pip wheel --quiet --no-deps -w .gpu/wheels "${PURE[@]}"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
      -d .gpu/wheels "${BINARY[@]}"
    mkdir -p .gpu/starmap
    cp ../shared/data/starmap/slice{1,2}_counts.csv.gz ../shared/data/starmap/slice{1,2}_cells.csv .gpu/starmap/
    du -sh .gpu
    ;;
  run)
    out="${2:-${OUT:-}}"
    if [ -d .gpu/wheels ]; then python3 -m pip install --quiet --no-index --no-deps .gpu/wheels/*.whl; fi
    if [ -d .gpu/starmap ]; then export SPOTSWEEP_STARMAP="${SPOTSWEEP_STARMAP:-$PWD/.gpu/starmap}"; fi
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    if [ -z "$out" ]; then  # the folder is named after the device, which only Python reads
      exec python3 -m tests.benchmarks.gpu_check --device cuda "${@:3}"
    fi
    mkdir -p "$out"
    python3 -m tests.benchmarks.gpu_check --device cuda --out "$out" "${@:3}" 2>&1 | tee "$out/gpu_check.log"
    ;;
  rehearse)
    out="${2:-/tmp/gpu-check-rehearsal}"
    mkdir -p "$out"
    PYTHON="${PYTHON:-.venv/bin/python}"
    "$PYTHON" -m tests.benchmarks.gpu_check --device cpu --toy --out "$out" "${@:3}" 2>&1 | tee "$out/gpu_check.log"
    ;;
  *)
    echo "usage: bash tests/benchmarks/gpu_check.sh pack | run [OUT] [OPTIONS] | rehearse [OUT] [OPTIONS]" >&2
    exit 2
    ;;
esac
