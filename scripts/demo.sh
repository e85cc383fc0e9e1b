#!/usr/bin/env bash
# scripts/demo.sh (`make demo`): barge on a fresh Debian machine, end to end.
# Installs what it needs (make deps), builds the static barge (make), starts a throwaway registry on
# 127.0.0.1, builds a small busybox image with umoci and pushes it with skopeo, then pulls it with
# barge into a directory, lists the tree and runs busybox from it with chroot, changes, commits,
# pushes and pulls it back, and ends by booting the committed tree as an initramfs in qemu.
# Run as root. DEMO_KEEP=1 keeps the work directory (the registry is always stopped).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/registry.sh
. "$ROOT/scripts/registry.sh"

MAKE=${MAKE:-make}
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir=$ROOT/$target_dir
BARGE=${BARGE:-$target_dir/x86_64-unknown-linux-musl/release/barge}
[[ $BARGE == /* ]] || BARGE=$ROOT/$BARGE

# One word as a shell would need it typed: as is when safe, else in single quotes.
quote() {
  local a=$1 q="'\\''"
  if [[ -n $a && $a != *[^A-Za-z0-9_./:=@+,%-]* ]]; then
    printf '%s' "$a"
  else
    printf "'%s'" "${a//\'/$q}"
  fi
}
# Print a command with its quoting (so pasting it runs the same thing), then run it.
run() {
  printf '\n$'
  local a
  for a in "$@"; do printf ' '; quote "$a"; done
  printf '\n'
  "$@"
}
step() { printf '\n=== %s\n' "$*"; }

[[ $(id -u) == 0 ]] || { echo "demo.sh: run as root (it installs packages and uses chroot)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/barge-demo.XXXXXX)
cleanup() {
  registry_stop
  if [[ ${DEMO_KEEP:-0} == 1 ]]; then
    echo "kept $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "step 0: packages and the static barge binary"
run "$MAKE" --no-print-directory deps
run "$MAKE" --no-print-directory
run "$BARGE" --version || true

step "step 1: a throwaway registry on 127.0.0.1 and a small busybox image pushed to it"
registry_start "$WORK/registry"
echo "registry: http://$REGISTRY (storage $WORK/registry/storage, pid $REGISTRY_PID)"
REF=$REGISTRY/demo/busybox:latest
OCI=$WORK/oci
BUNDLE=$WORK/bundle
run umoci init --layout "$OCI"
run umoci new --image "$OCI:latest"
run umoci unpack --image "$OCI:latest" "$BUNDLE"
R=$BUNDLE/rootfs
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp}
chmod 1777 "$R/tmp"
install -m 0755 /bin/busybox "$R/bin/busybox"
# busybox makes its applet symlinks (-> /bin/busybox) in /bin, /sbin, /usr/bin and /usr/sbin.
run chroot "$R" /bin/busybox --install -s
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$R/etc/passwd"
printf 'root:x:0:\n' > "$R/etc/group"
run umoci repack --image "$OCI:latest" "$BUNDLE"
run umoci config --image "$OCI:latest" --config.entrypoint /bin/sh \
  --config.env PATH=/usr/sbin:/usr/bin:/sbin:/bin
run skopeo copy -q --dest-tls-verify=false "oci:$OCI:latest" "docker://$REF"
printf "\n\$ skopeo inspect --tls-verify=false %s | jq '{Digest, Layers, Os, Architecture}'\n" "$(quote "docker://$REF")"
skopeo inspect --tls-verify=false "docker://$REF" | jq '{Digest, Layers, Os, Architecture}'

step "step 2: barge pull -g: the root filesystem, one git branch per layer"
DIR=$WORK/busybox
if ! run "$BARGE" pull "$REF" -r "$DIR" -g; then
  echo >&2
  echo "demo.sh: FAILED at step 2: 'barge pull $REF -r $DIR -g' did not succeed (see the error above)" >&2
  exit 1
fi
if [[ ! -x $DIR/bin/busybox ]]; then
  echo "demo.sh: FAILED at step 2: barge pull exited 0 but $DIR/bin/busybox is missing" >&2
  exit 1
fi
run ls -la "$DIR"
ls -la "$DIR/bin" > "$WORK/bin.txt"
printf '\n$ ls -la %s | head -n 12\n' "$(quote "$DIR/bin")"
head -n 12 "$WORK/bin.txt"
echo "... $(find "$DIR" -path "$DIR/.git" -prune -o -print | wc -l) paths in the tree"
run git -C "$DIR" branch
run chroot "$DIR" /bin/busybox echo "hello from a rootfs pulled by barge"

step "step 3: change the tree (as a container would) and commit exactly that as a new layer"
run chroot "$DIR" /bin/sh -c 'echo "barge demo" > /etc/motd && rm /bin/vi && mkdir -p /srv/www && echo hi > /srv/www/index.html && chmod 0700 /root'
run git -C "$DIR" status --short
run "$BARGE" commit -r "$DIR" -m "demo: motd, no vi, a web root"
run git -C "$DIR" branch
run git -C "$DIR" log -1

step "step 4: push it under a new name; the base layer is mounted, not uploaded again"
NEW=$REGISTRY/demo/busybox_changed:v1
run "$BARGE" push "$NEW" -r "$DIR"

step "step 5: pull it back into a fresh directory and compare the trees"
BACK=$WORK/back
run "$BARGE" pull "$NEW" -r "$BACK"
run cat "$BACK/etc/motd"
printf '\n$ diff -r --no-dereference --exclude=.git %s %s\n' "$(quote "$DIR")" "$(quote "$BACK")"
if diff -r --no-dereference --exclude=.git "$DIR" "$BACK"; then
  echo "identical: the pushed image is the tree we changed"
else
  echo "demo.sh: FAILED at step 5: the pulled-back tree differs" >&2
  exit 1
fi

step "step 6: air-gapped: the image onto a \"USB stick\" (an OCI layout), then pulled with no network"
STICK=$WORK/usb/images
run "$BARGE" copy "$NEW" "oci:$STICK:changed"
run "$BARGE" inspect --raw "oci:$STICK:changed"
echo
OFFLINE=$WORK/offline
run unshare -n "$BARGE" pull "oci:$STICK:changed" -r "$OFFLINE"
if ! diff -r --no-dereference --exclude=.git "$DIR" "$OFFLINE"; then
  echo "demo.sh: FAILED at step 6: the tree pulled offline differs" >&2
  exit 1
fi
echo "identical: pulled from the layout inside a network namespace with no interfaces"

step "step 7: pack the committed tree as an initramfs and boot it in qemu (pull, change, commit, pack)"
# The kernel is Debian's cloud kernel, fetched (not installed) once into $target_dir/kernel.
KERNEL=$("$ROOT/scripts/kernel.sh" "$target_dir/kernel")
INITRD=$WORK/demo.cpio.gz
run "$BARGE" initramfs -r "$DIR" -o "$INITRD" --init /bin/sh -c \
  'echo "hello from an initramfs packed by barge"; cat /etc/motd; ls -l /srv/www; ls -ld /root'
echo "the guest's console (escape codes, firmware lines and the kernel's panic when /init exits left out):"
run timeout 120 qemu-system-x86_64 -accel tcg -m 256 -nographic -no-reboot -nic none \
  -kernel "$KERNEL" -initrd "$INITRD" -append "console=ttyS0 panic=-1 quiet" </dev/null \
  | tee "$WORK/console.txt" | sed $'s/\x1b\\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g; s/\r$//' \
  | grep -a -v -e '^\[ *[0-9]' -e '^SeaBIOS' -e '^Booting from' -e '^ *$' || true
if ! grep -a -q 'hello from an initramfs packed by barge' "$WORK/console.txt"; then
  echo "demo.sh: FAILED at step 7: the guest did not print the marker (console in $WORK/console.txt)" >&2
  exit 1
fi

step "done: pulled, changed, committed, pushed, pulled back, carried offline and booted $REF (work dir removed on exit unless DEMO_KEEP=1)"
