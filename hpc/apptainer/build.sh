#!/usr/bin/env bash
# Build the task image from containers/Apptainer.def, or reuse the cached one when nothing it is built
# from has changed. Prints the image path (stdout); everything else goes to stderr.
#
#   hpc/apptainer/build.sh [--base cuda|local] [-o OUT.sif] [--force] [--notest] [--compression C]
#                          [--build-arg K=V]... [--check]
#
# --base cuda  (default) the def's own defaults: a CUDA PyTorch image from Docker Hub, whose torch is
#              kept, and the pinned packages from the package index. For clusters (login node).
# --base local no Docker Hub, no TLS inside the build: a bare Debian base made with debootstrap from this
#              machine's apt mirror (cached), and every package, CPU torch included, from a wheelhouse
#              downloaded on the host (cached). For CI and laptops. Same def file, other build args.
# --compression gzip (default for cuda: every squashfs reader has it) or zstd (default for local:
#              20x faster to build on 2 cores, 3% larger; needs a kernel/squashfuse with zstd).
#
# The cache (SPOTSWEEP_CACHE, default ~/.cache/spotsweep) keeps the image under a hash of everything that
# goes into it: the def, the pins, pyproject.toml, the toolkit sources, this script and the build args.
# A rebuild happens only when one of them changes (or with --force); --check only says whether the
# cached image is current (exit 0, path on stdout) or not (exit 1). Set APPTAINER_TMPDIR where /tmp is
# small: the build unpacks the whole image there.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
def=containers/Apptainer.def
lock=hpc/apptainer/requirements.lock
cache=${SPOTSWEEP_CACHE:-$HOME/.cache/spotsweep}/apptainer

variant=cuda output="" force=0 notest=0 check=0 compression="" user_args=()
while (($#)); do
    case $1 in
        --base) variant=$2; shift 2 ;;
        -o | --output) output=$2; shift 2 ;;
        --force) force=1; shift ;;
        --check) check=1; shift ;;
        --notest) notest=1; shift ;;
        --compression) compression=$2; shift 2 ;;
        --build-arg) user_args+=("$2"); shift 2 ;;
        -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
        *) echo "build.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $variant == cuda || $variant == local ]] || { echo "build.sh: --base must be cuda or local" >&2; exit 2; }
[[ -n $compression ]] || { [[ $variant == local ]] && compression=zstd || compression=gzip; }
[[ $compression == gzip || $compression == zstd ]] || { echo "build.sh: --compression must be gzip or zstd" >&2; exit 2; }

log() { printf '[build-image %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v apptainer >/dev/null 2>&1 \
    || die "apptainer not found: on a cluster \`module load apptainer\`; on Debian 12 run hpc/apptainer/install.sh"
# The host python builds the spotsweep wheel and, for --base local, downloads the wheelhouse.
python=${PYTHON:-}
[[ -z $python && -x .venv/bin/python ]] && python=.venv/bin/python
python=${python:-python3}
"$python" -m pip --version >/dev/null 2>&1 || die "$python has no pip; set PYTHON or run \`make install\`."

# What the image is built from. Each file is hashed with its name, so renames count too. Not README.md: the
# wheel carries a one-line stand-in for it (below), so editing the documentation never rebuilds the image.
inputs_sha256() {
    local paths=("$def" "$lock" hpc/apptainer/build.sh pyproject.toml toolkit)
    {
        printf '%s\n' "variant=$variant" "compression=$compression" "${user_args[@]}"
        find "${paths[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum
    } | sha256sum | cut -c1-64
}
key=$(inputs_sha256)
mkdir -p "$cache/images"
image="$cache/images/spotsweep-$variant-${key:0:16}.sif"
if ((check)); then
    [[ -s $image ]] && { echo "$image"; exit 0; }
    log "no image for these inputs yet ($image)"
    exit 1
fi

# One build at a time per cache: a second caller waits, then finds the image built.
exec 9>"$cache/.lock"
flock 9

# Run a command with its full output in a log file; show only progress lines, and the end on failure.
quiet() {
    local logfile=$1 pid
    shift
    mkdir -p "$(dirname "$logfile")"
    : >"$logfile" # exists before tail opens it
    "$@" >>"$logfile" 2>&1 &
    pid=$!
    tail -n +1 -f --pid="$pid" "$logfile" | grep --line-buffered -E '^(INFO|WARNING|FATAL|ERROR)|^\[post|image OK' >&2 || true
    if ! wait "$pid"; then
        tail -n 30 "$logfile" >&2
        die "$1 failed; full log: $logfile"
    fi
}

finish() {
    if [[ -n $output ]]; then
        mkdir -p "$(dirname "$output")"
        rm -f "$output"
        ln "$image" "$output" 2>/dev/null || cp "$image" "$output"
        log "image: $output"
        echo "$output"
    else
        echo "$image"
    fi
    exit 0
}

if [[ $force == 0 && -s $image ]]; then
    log "cached, inputs unchanged: $image"
    finish
fi

start=$SECONDS
find "$cache" -maxdepth 1 -name 'build.*' -mmin +720 -exec rm -rf {} + # left by a killed build
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
ctx="$work/context"
mkdir -p "$ctx" "$work/src"

# 1. The toolkit as a wheel, built from a clean copy of the sources (no build/ or egg-info in the repo).
cp pyproject.toml "$work/src/"
echo "spotsweep: destVI training-settings sweeps on SLURM; documentation in the project's README.md" >"$work/src/README.md"
tar --exclude=__pycache__ --exclude='*.pyc' -cf - toolkit | tar -C "$work/src" -xf -
# (A pure-Python wheel for the image's interpreter: the host's own Python version does not matter.)
"$python" -m pip wheel --quiet --no-deps --ignore-requires-python --wheel-dir "$ctx" "$work/src" >&2
wheel=$(ls "$ctx"/spotsweep-*.whl)
version=$(basename "$wheel" | cut -d- -f2)
cp "$lock" "$ctx/requirements.lock"

# Warn (not fail) when the pins no longer match the tested environment: relock.py says how to refresh.
if [[ -x .venv/bin/python ]] && ! diff -q <(.venv/bin/python hpc/apptainer/relock.py 2>/dev/null | grep -v '^#') \
    <(grep -v '^#' "$lock") >/dev/null; then
    log "warning: $lock differs from .venv; refresh: .venv/bin/python hpc/apptainer/relock.py > $lock"
fi

revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ $revision != unknown ]] && ! GIT_OPTIONAL_LOCKS=0 git diff --quiet HEAD -- "$def" "$lock" pyproject.toml toolkit 2>/dev/null; then
    revision="$revision-dirty"
fi
args=(--build-arg "CONTEXT=$ctx" --build-arg "VERSION=$version" --build-arg "REVISION=$revision"
    --build-arg "INPUTS_SHA256=$key")

if [[ $variant == local ]]; then
    # 2. A bare Debian base, made once: debootstrap from the mirror this machine's apt already uses
    #    (never a host written into the repo). It plays the part of the docker base image.
    . /etc/os-release
    codename=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}
    mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null | awk -v c="$codename" '$2 == c {print $1; exit}')
    [[ -n $mirror ]] || die "no apt source for $codename (apt-get indextargets): --base local needs a Debian apt mirror"
    base="$cache/base-debian-$codename.sif"
    if [[ ! -s $base ]]; then
        log "building the base OS (debootstrap $codename from $mirror), once"
        printf 'Bootstrap: debootstrap\nOSVersion: %s\nMirrorURL: %s\n' "$codename" "$mirror" >"$work/base.def"
        quiet "$cache/logs/base-debian-$codename.log" \
            apptainer build --fakeroot --force "$work/base.partial.sif" "$work/base.def"
        mv "$work/base.partial.sif" "$base"
    fi

    # 3. Every wheel the image needs, downloaded here where pip's TLS and index configuration work.
    #    Keyed by the pins and pyproject.toml: toolkit edits reuse it. pip picks wheels for the host's
    #    Python, so that must be the image's (Debian 12: 3.11).
    host_py=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    [[ $codename != bookworm || $host_py == 3.11 ]] \
        || die "--base local installs wheels for Debian 12's Python 3.11 but $python is $host_py; set PYTHON=python3.11"
    torch_pin=$(grep '^torch==' "$lock") || die "$lock pins no torch"
    wheel_key=$(cat "$lock" pyproject.toml | sha256sum | cut -c1-16)
    wheelhouse="$cache/wheelhouse-$wheel_key"
    if [[ ! -f $wheelhouse/.complete ]]; then
        log "downloading the wheelhouse ($torch_pin and the pinned dependencies)"
        rm -rf "$wheelhouse" && mkdir -p "$wheelhouse"
        "$python" -m pip download --quiet --dest "$wheelhouse" -c "$lock" "$torch_pin" "$wheel" 2> >(grep -v 'is ignored' >&2)
        rm -f "$wheelhouse"/spotsweep-*.whl
        # Source-only packages become wheels here, so the image needs no build tools.
        for sdist in "$wheelhouse"/*.tar.gz "$wheelhouse"/*.zip; do
            [[ -e $sdist ]] || continue
            "$python" -m pip wheel --quiet --no-deps --wheel-dir "$wheelhouse" "$sdist" >&2
            rm -f "$sdist"
        done
        touch "$wheelhouse/.complete"
    fi
    cp -al "$wheelhouse" "$ctx/wheelhouse" 2>/dev/null || cp -a "$wheelhouse" "$ctx/wheelhouse"
    args+=(--build-arg BOOTSTRAP=localimage --build-arg "BASE=$base" --build-arg "OS_VERSION=$codename"
        --build-arg PACKAGE_SOURCE=wheelhouse --build-arg TORCH=lock)
fi
for arg in "${user_args[@]}"; do args+=(--build-arg "$arg"); done
((notest)) && args+=(--notest)
[[ $compression == zstd ]] && args+=(--mksquashfs-args "-comp zstd -Xcompression-level 3")

# 4. The image. --fakeroot: root lacks some capabilities in containers/VMs, and users are not root.
log "building $image from $def ($variant); full log: $cache/logs/build-${key:0:16}.log"
quiet "$cache/logs/build-${key:0:16}.log" apptainer build --fakeroot --force "${args[@]}" "$work/image.sif" "$def"
mv "$work/image.sif" "$image"
printf '{"variant": "%s", "inputs_sha256": "%s", "revision": "%s", "build_seconds": %d, "bytes": %d}\n' \
    "$variant" "$key" "$revision" $((SECONDS - start)) "$(stat -c %s "$image")" >"${image%.sif}.json"
log "built in $((SECONDS - start)) s: $image ($(du -h "$image" | cut -f1))"

# Keep the two newest images per variant (every toolkit edit makes a new one) and wheelhouses.
ls -t "$cache/images/spotsweep-$variant-"*.sif | tail -n +3 | while read -r old; do
    rm -f "$old" "${old%.sif}.json"
done
ls -dt "$cache"/wheelhouse-* 2>/dev/null | tail -n +3 | xargs -r rm -rf
ls -t "$cache"/logs/build-*.log 2>/dev/null | tail -n +6 | xargs -r rm -f
finish
