#!/bin/sh
# Fetches Debian's cloud kernel (without installing it) into DIR, once, and prints the
# path of its vmlinuz: `apt-get download` of the package linux-image-cloud-amd64
# depends on, then `dpkg-deb --fsys-tarfile | tar -x ./boot`. Used by the initramfs
# boot tests (tests/initramfs.rs) and `make demo`. Usage: scripts/kernel.sh DIR
set -eu
dir=${1:?usage: scripts/kernel.sh DIR}
found=$(ls "$dir"/boot/vmlinuz-* 2>/dev/null | head -n 1 || true)
if [ -n "$found" ]; then
	echo "$found"
	exit 0
fi
pkg=$(apt-cache depends linux-image-cloud-amd64 | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n 1)
if [ -z "$pkg" ]; then
	echo "kernel.sh: apt-cache knows no linux-image-cloud-amd64: run apt-get update" >&2
	exit 1
fi
mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -q "$pkg" >&2)
dpkg-deb --fsys-tarfile "$tmp"/*.deb | tar -x -C "$tmp" ./boot
rm -rf "$dir/boot"
mv "$tmp/boot" "$dir/boot"
ls "$dir"/boot/vmlinuz-* | head -n 1
