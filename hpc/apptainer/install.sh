#!/usr/bin/env bash
# Install Apptainer on a Debian 12 (bookworm) machine where we are root, for CI and single-node tests.
#
# Apptainer is not packaged for Debian 12. Debian unstable (sid) has 1.4.x, built against a newer glibc
# than bookworm's. We take sid's .deb, point its binaries at a private copy of sid's libc (patchelf:
# interpreter + RPATH), repackage it without the glibc dependency and install it with dpkg, so that
# `dpkg -r apptainer` removes everything again and apt sees no broken dependency.
#
# Usage: hpc/apptainer/install.sh [--force]   (idempotent: does nothing when apptainer already works)
# On a real cluster do NOT run this: Apptainer is installed by the admins (`module load apptainer`).
set -euo pipefail

force=0
[[ "${1:-}" == "--force" ]] && force=1

log() { printf '[install-apptainer] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

configured() {
    # Installed, runs, and configured for this sandbox (see configure_for_sandbox).
    command -v apptainer >/dev/null 2>&1 && apptainer --version >/dev/null 2>&1 \
        && grep -q '^root default capabilities = file' /etc/apptainer/apptainer.conf 2>/dev/null \
        && grep -q '^root:' /etc/subuid 2>/dev/null && grep -q '^root:' /etc/subgid 2>/dev/null
}

if [[ $force == 0 ]] && configured; then
    [[ -c /dev/fuse && $(id -u) == 0 ]] && chmod 666 /dev/fuse  # reset at boot; see configure_for_sandbox
    log "already installed: $(apptainer --version)"
    exit 0
fi
[[ $(id -u) == 0 ]] || die "run as root (it installs packages); on a cluster ask for the apptainer module instead."
[[ -r /etc/os-release ]] && . /etc/os-release
[[ "${ID:-}" == debian ]] || die "this installer is for Debian (found ${ID:-unknown}); see https://apptainer.org/docs/admin/main/installation.html"
codename=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}
arch=$(dpkg --print-architecture)
triplet=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)

# Runtime helpers from the machine's own suite: squashfs for building SIFs, uidmap + subuid for --fakeroot,
# fuse tools so unprivileged users can run images too, debootstrap for the local base, patchelf for us.
log "installing helper packages from $codename"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    ca-certificates squashfs-tools uidmap libseccomp2 libsqlite3-0 e2fsprogs fuse2fs squashfuse \
    fuse-overlayfs debootstrap patchelf libcap2-bin file >/dev/null

# The archive address comes from this machine's apt configuration, never from a file in the repo.
mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' | awk -v c="$codename" '$2 == c {print $1; exit}')
[[ -n "$mirror" ]] || die "no apt source for suite $codename found (apt-get indextargets); configure apt first."
log "Debian archive from apt sources: $mirror"

work=$(mktemp -d /tmp/apptainer-install.XXXXXX)
trap 'rm -rf "$work"' EXIT
# A private apt state for sid, so the system's sources and package database are left untouched.
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror sid main" >"$work/sources.list"
sid_apt=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=- -o "Dir::State::Lists=$work/lists"
    -o "Dir::Cache=$work/cache" -o Dir::State::status=/dev/null -o APT::Sandbox::User=root)
apt-get "${sid_apt[@]}" update -qq
(cd "$work/debs" && apt-get "${sid_apt[@]}" download -qq apptainer libc6)
apptainer_deb=$(ls "$work"/debs/apptainer_*.deb)
version=$(dpkg-deb -f "$apptainer_deb" Version)
log "repackaging apptainer $version from sid"

# sid's libc goes to a private directory inside the package; nothing else on the machine uses it.
pkg="$work/pkg"
dpkg-deb -R "$apptainer_deb" "$pkg"
libc_dir="/usr/lib/$triplet/apptainer/sid-libc"
dpkg-deb -x "$work"/debs/libc6_*.deb "$work/libc"
mkdir -p "$pkg$libc_dir"
cp -a "$work/libc/usr/lib/$triplet/." "$pkg$libc_dir/"
interp="$libc_dir/ld-linux-x86-64.so.2"
[[ -e "$pkg$interp" ]] || die "no ld-linux-x86-64.so.2 in sid's libc6 (architecture $arch is not handled)."

# Every dynamically linked executable of the package loads sid's libc first; other libraries
# (libseccomp, libsqlite3) come from bookworm through the default search path after the RPATH.
while IFS= read -r -d '' elf; do
    case $(file -b "$elf") in
        *ELF*executable*interpreter* | *ELF*pie\ executable*)
            patchelf --set-interpreter "$interp" --force-rpath --set-rpath "$libc_dir" "$elf" ;;
        *ELF*shared\ object*)
            [[ "$elf" == "$pkg$libc_dir"/* ]] || patchelf --force-rpath --set-rpath "$libc_dir" "$elf" ;;
    esac
done < <(find "$pkg/usr" -type f -print0)

# Drop the dependencies bookworm cannot satisfy (glibc >= 2.38) or we do not use (CNI networking).
sed -i -E -e '/^Depends:/ s/ ?libc6 \([^)]*\),?//; /^Depends:/ s/ ?containernetworking-plugins,?//' \
    -e "s/^Version: .*/Version: ${version}+spotsweep1/" -e '/^(Built-Using|Static-Built-Using):/d' "$pkg/DEBIAN/control"
(cd "$pkg" && find usr etc -type f ! -path 'etc/*' -exec md5sum {} + >DEBIAN/md5sums)
dpkg-deb -b -Zxz "$pkg" "$work/apptainer.deb" >/dev/null
dpkg -i "$work/apptainer.deb" >/dev/null

configure_for_sandbox() {
    # Root here lacks CAP_SYS_RESOURCE, and apptainer's default ("full") asks for every capability.
    # "file" gives root the capabilities listed by `apptainer capability`: all those we really hold.
    sed -i -E 's/^root default capabilities = .*/root default capabilities = file/' /etc/apptainer/apptainer.conf
    local bounding caps
    bounding=$(awk '/^CapBnd/ {print $2}' /proc/self/status)
    caps=$(capsh --decode="$bounding" | sed 's/.*=//' | tr '[:lower:]' '[:upper:]')
    apptainer capability add --user root "$caps" 2>/dev/null || die "apptainer capability add --user root $caps failed"
    # Unprivileged users mount images with squashfuse: Debian's udev makes /dev/fuse 0666, this VM has no udev.
    [[ -c /dev/fuse ]] && chmod 666 /dev/fuse
    # --fakeroot builds map root to a subordinate id range.
    grep -q '^root:' /etc/subuid || echo 'root:100000:65536' >>/etc/subuid
    grep -q '^root:' /etc/subgid || echo 'root:100000:65536' >>/etc/subgid
}
configure_for_sandbox

apptainer --version >/dev/null || die "apptainer installed but does not run; see the messages above."
log "installed: $(apptainer --version) (remove with: dpkg -r apptainer)"
