#!/usr/bin/env bash
# Builds a base image from Debian's own packages (no registry on the
# internet needed): a bookworm minbase root file system made by debootstrap
# from the machine's configured Debian mirror, as a one-layer OCI image
# layout. Prints the layout reference (DIR:NAME). Idempotent.
#
#   scripts/base-image.sh            python3: what the packaging tests and
#                                    benchmarks put models on. Like the
#                                    official python:*-slim images, its
#                                    config names the Python version in
#                                    PYTHON_VERSION. Cached under
#                                    $LEGION_BASE_CACHE (/var/cache/legion/base-image).
#   scripts/base-image.sh platform   + pip, venv, git and CA certificates:
#                                    what the legion platform image is built
#                                    on (scripts/platform-image.sh), since
#                                    pods fetch git sources and build
#                                    dependency layers with pip. Cached under
#                                    /var/cache/legion/platform-base.
set -euo pipefail
case "${1:-python}" in
  python)
    CACHE="${LEGION_BASE_CACHE:-/var/cache/legion/base-image}"
    TAG=python3
    INCLUDE=python3 ;;
  platform)
    CACHE="${LEGION_PLATFORM_BASE_CACHE:-/var/cache/legion/platform-base}"
    TAG=platform
    INCLUDE=python3,python3-pip,python3-venv,git,ca-certificates ;;
  *) echo "usage: $0 [python|platform]" >&2; exit 2 ;;
esac
LAYOUT="$CACHE/layout"
if [ -f "$LAYOUT/index.json" ]; then
  echo "$LAYOUT:$TAG"
  exit 0
fi
mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
mirror="${mirror:-http://deb.debian.org/debian}"
rm -rf "$CACHE/rootfs" "$CACHE/layout.tmp"
mkdir -p "$CACHE"
debootstrap --variant=minbase --include="$INCLUDE" bookworm "$CACHE/rootfs" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
  || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
# What a slim image leaves out: package lists and caches.
rm -rf "$CACHE/rootfs/var/lib/apt/lists/"* "$CACHE/rootfs/var/cache/apt/"*.bin "$CACHE/rootfs/var/cache/apt/archives/"*.deb
version=$(chroot "$CACHE/rootfs" python3 -c 'import platform; print(platform.python_version())')
umoci init --layout "$CACHE/layout.tmp"
umoci new --image "$CACHE/layout.tmp:$TAG"
umoci insert --image "$CACHE/layout.tmp:$TAG" "$CACHE/rootfs" /
umoci config --image "$CACHE/layout.tmp:$TAG" --os linux --architecture amd64 \
  --config.env "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  --config.env "PYTHON_VERSION=$version" --config.cmd python3
umoci gc --layout "$CACHE/layout.tmp"
rm -rf "$CACHE/rootfs"
mv "$CACHE/layout.tmp" "$LAYOUT"
echo "$LAYOUT:$TAG"
