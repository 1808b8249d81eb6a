#!/usr/bin/env bash
# Install the Debian packages of a single-node SLURM with accounting (run as root, once per machine).
#
# What: munge, slurmctld, slurmd, the client commands, slurmdbd and MariaDB (submitit reads job states
# with sacct, which needs accounting). Why a policy-rc.d: without systemd, the packages' postinst
# scripts would start system-wide daemons with the packages' /etc configs; hpc/slurm/start.sh runs its
# own daemons from a state directory instead, so nothing is started here.
# Idempotent: installed packages are left as they are.
set -euo pipefail

PACKAGES=(slurm-wlm slurmctld slurmd slurm-client slurmdbd munge mariadb-server mariadb-client)

if [[ $(id -u) -ne 0 ]]; then
    echo "install.sh: run as root (it installs Debian packages with apt-get)." >&2
    exit 1
fi

missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install.sh: SLURM, munge and MariaDB are already installed."
    exit 0
fi

# Keep the packages from starting daemons (restored on exit, also on failure).
policy=/usr/sbin/policy-rc.d
own_policy=0
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
fi
cleanup() { [[ $own_policy -eq 1 ]] && rm -f "$policy"; return 0; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends "${missing[@]}"; then
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
fi
echo "install.sh: installed ${missing[*]}; start the cluster with hpc/slurm/start.sh."
