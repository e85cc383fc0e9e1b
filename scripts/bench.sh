#!/usr/bin/env bash
# scripts/bench.sh (`make bench`): a benchmark, not a test.
# Builds a realistic three-layer image (debootstrap --variant=minbase bookworm, then a layer of
# additions, then a layer of deletions/whiteouts), pushes it to a throwaway local registry, and times
# barge pull against skopeo copy + umoci unpack and the curl | pigz/gzip -dc | tar -x pipelines over
# the same blobs; barge pull of the same image with zstd layers (a twin layout made once by
# skopeo copy --dest-compress-format zstd, cached beside the gzip one); barge commit (no-op and a
# small change) against umoci repack of the same change;
# barge push of an image with a 200 MiB incompressible layer against skopeo copy of that image from
# one registry to another. Every pull gets a fresh loop-mounted ext4, made outside the timed region
# (after `rm -rf`, creating files on this machine's journal-less root ext4 gets slow); commits and
# repacks run on the tree their step just pulled or unpacked.
# Once, untimed: barge's pulled tree must equal umoci's (path, type, mode, owner, size, link target,
# mtime, content) and `pull -g` must leave a clean `git status`.
# Prints a markdown table (median wall seconds of RUNS runs, peak RSS, the issues' targets) and
# writes target/bench/ (results.md, runs.tsv).
#
# Environment: RUNS (3), BENCH_CACHE (/var/cache/barge-bench: debootstrap tarball, .debs, the image
# layout), BENCH_WORK (/tmp/barge-bench), BENCH_REBUILD=1 (rebuild the image), BENCH_MIRROR (Debian
# mirror; default: the one apt uses), SCRATCH=ext4|tmpfs|dir (where outputs go; default ext4),
# BENCH_PUSH_MIB (200: size of the random layer pushed), BENCH_CHECK=0 (skip the tree comparison).
# Run as root.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/registry.sh
. "$ROOT/scripts/registry.sh"

RUNS=${RUNS:-3}
PUSH_MIB=${BENCH_PUSH_MIB:-200}
CACHE=${BENCH_CACHE:-/var/cache/barge-bench}
WORK=${BENCH_WORK:-/tmp/barge-bench}
SCRATCH=${SCRATCH:-ext4}
OUT=$ROOT/target/bench
MAKE=${MAKE:-make}
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir=$ROOT/$target_dir
BARGE=${BARGE:-$target_dir/x86_64-unknown-linux-musl/release/barge}
[[ $BARGE == /* ]] || BARGE=$ROOT/$BARGE

FIXTURE_VERSION=1            # bump when the image recipe below changes (rebuilds the cached layout)
LAYOUT=$CACHE/oci            # OCI layout with tag "bookworm"
SDE=1700000000               # fixed mtimes, so a rebuild from the same inputs gives the same layers
ACCEPT="application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"

start=$SECONDS
log() { printf '[bench %4ds] %s\n' "$((SECONDS - start))" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (debootstrap, chroot, mount)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number"
[[ $PUSH_MIB =~ ^[1-9][0-9]*$ ]] || die "BENCH_PUSH_MIB must be a positive number"

MNT=$WORK/mnt
IMG=$WORK/scratch-ext4.img
mkdir -p "$CACHE" "$WORK" "$MNT" "$OUT"

unmount_scratch() { if mountpoint -q "$MNT"; then umount "$MNT"; fi; }

# A second throwaway registry (push target), started empty for each push step. registry.sh keeps one
# registry in REGISTRY/REGISTRY_PID/REGISTRY_DIR: swap them around its calls.
REGB= REGB_PID= REGB_DIR=
regb_swap() {
  local r=$REGISTRY p=$REGISTRY_PID d=$REGISTRY_DIR
  REGISTRY=$REGB REGISTRY_PID=$REGB_PID REGISTRY_DIR=$REGB_DIR
  REGB=$r REGB_PID=$p REGB_DIR=$d
}
regb_start() { # storage dir (made empty)
  local rc=0
  rm -rf "$1"
  regb_swap
  registry_start "$1" || rc=$?
  regb_swap
  return "$rc"
}
regb_stop() {
  [[ -n $REGB_PID ]] || return 0
  regb_swap
  registry_stop
  regb_swap
  rm -rf "$REGB_DIR"
  REGB= REGB_DIR=
}
cleanup() {
  regb_stop || true
  unmount_scratch || true
  rm -f "$IMG"
  registry_stop
  rm -rf "$WORK/registry"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ============================================================ tools and barge
log "packages (make deps) and the release binary (make)"
"$MAKE" --no-print-directory deps >&2
"$MAKE" --no-print-directory >&2
for t in debootstrap umoci skopeo curl jq pigz gzip tar mkfs.ext4 dpkg-deb apt-get; do
  command -v "$t" >/dev/null || die "missing $t (make deps)"
done
[[ -x /usr/bin/time ]] || die "missing /usr/bin/time (apt-get install time)"

# ============================================================ fixture image (cached OCI layout)
# The bookworm mirror apt is configured with (deb822 .sources or one-line .list), else deb.debian.org.
find_mirror() {
  local f uri
  if [[ -n ${BENCH_MIRROR:-} ]]; then echo "$BENCH_MIRROR"; return; fi
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] || continue
    uri=$(awk '
      function flush() { if (types ~ /(^| )deb( |$)/ && suites ~ /(^| )bookworm( |$)/ && enabled != "no" && uris != "") { split(uris, u, " "); print u[1]; found = 1; exit } types = suites = uris = enabled = "" }
      /^[ \t]*$/ { flush(); next }
      /^#/ { next }
      { key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, "")
        if (key == "types") types = $0; else if (key == "suites") suites = $0
        else if (key == "uris") uris = $0; else if (key == "enabled") enabled = tolower($0) }
      END { if (!found) flush() }' "$f")
    [[ -n $uri ]] && { echo "$uri"; return; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r $f ]] || continue
    uri=$(awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                             if ($(i + 1) == "bookworm") { print $i; exit } }' "$f")
    [[ -n $uri ]] && { echo "$uri"; return; }
  done
  echo "http://deb.debian.org/debian"
}

ROOTFS_TAR=$CACHE/bookworm-minbase.tar
make_rootfs() {
  if [[ -s $ROOTFS_TAR ]]; then log "using cached rootfs $ROOTFS_TAR"; return; fi
  local mirror dir=$WORK/bookworm-rootfs t0=$SECONDS
  mirror=$(find_mirror)
  log "debootstrap --variant=minbase bookworm from $mirror (log $CACHE/debootstrap.log)"
  rm -rf "$dir"
  debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -n 20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log $CACHE/debootstrap.log)"; }
  # Tidy like the official images: no package caches, lists, logs, or the host's resolv.conf/hostname.
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/cache/apt/*.bin "$dir"/var/lib/apt/lists/* \
    "$dir"/var/log/bootstrap.log "$dir"/var/log/dpkg.log "$dir"/var/log/alternatives.log \
    "$dir"/var/log/apt/* "$dir"/etc/resolv.conf "$dir"/etc/hostname "$dir"/debootstrap
  mkdir -p "$dir/var/lib/apt/lists/partial"
  find "$dir" -exec touch -h -d "@$SDE" {} +
  tar -C "$dir" --numeric-owner --xattrs --xattrs-include='*' --sort=name -cpf "$ROOTFS_TAR.tmp" .
  mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
  rm -rf "$dir"
  log "rootfs: $(du -h "$ROOTFS_TAR" | cut -f1) in $((SECONDS - t0)) s"
}

# Packages unpacked (not installed) into layer 2: about 60 MB of python, perl modules and zoneinfo.
EXTRA_DEBS=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib perl-modules-5.36
            tzdata ca-certificates less)
fetch_debs() {
  local missing=() p
  mkdir -p "$CACHE/debs"
  chown _apt:root "$CACHE/debs" 2>/dev/null || true # apt downloads as _apt (sandboxed)
  for p in "${EXTRA_DEBS[@]}"; do compgen -G "$CACHE/debs/${p}_*.deb" >/dev/null || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  log "apt-get download ${missing[*]}"
  if ! (cd "$CACHE/debs" && apt-get download "${missing[@]}" >/dev/null 2>&1); then
    apt-get update -qq
    (cd "$CACHE/debs" && apt-get download "${missing[@]}" >/dev/null)
  fi
}

# Set the mtime of everything changed since marker $1 to the fixed time $2.
settle_mtimes() { find "$3" -newer "$1" -exec touch -h -d "@$2" {} +; }
created() { date -u -d "@$((SDE + $1 * 3600))" +%Y-%m-%dT%H:%M:%SZ; }

build_image() {
  local B=$WORK/bundle R marker=$WORK/.marker O t0=$SECONDS
  make_rootfs
  fetch_debs
  rm -rf "$LAYOUT" "$B" "$CACHE/oci.stamp"
  umoci init --layout "$LAYOUT"
  umoci new --image "$LAYOUT:bookworm"
  umoci unpack --image "$LAYOUT:bookworm" "$B" >/dev/null
  R=$B/rootfs

  log "layer 1: minbase rootfs"
  tar -C "$R" --numeric-owner --xattrs --xattrs-include='*' -xpf "$ROOTFS_TAR"
  umoci repack --refresh-bundle --image "$LAYOUT:bookworm" --history.created "$(created 0)" \
    --history.created_by "debootstrap --variant=minbase bookworm" "$B"

  log "layer 2: additions (${EXTRA_DEBS[*]}, /opt/bench specials)"
  touch "$marker"
  sleep 0.01
  for deb in "$CACHE"/debs/*.deb; do
    dpkg-deb --fsys-tarfile "$deb" | tar -x -p --numeric-owner --keep-directory-symlink -C "$R"
  done
  O=$R/opt/bench
  mkdir -p "$O/replace-me" "$O/many"
  head -c 100000 /dev/zero | tr '\0' 'x' > "$O/hardlink-a"
  ln "$O/hardlink-a" "$O/hardlink-b"
  ln -s hardlink-a "$O/symlink-relative"
  ln -s /etc/os-release "$O/symlink-absolute"
  install -m 4755 "$R/usr/bin/true" "$O/setuid-true"
  mkdir -m 1777 "$O/sticky"
  for i in $(seq 1 500); do echo "small file $i" > "$O/many/f$i"; done
  for f in a b c; do echo "old $f" > "$O/replace-me/$f.conf"; done
  mkdir -p "$R/home/user"
  echo "owned by 1000" > "$R/home/user/file"
  chown -R 1000:1000 "$R/home/user"
  settle_mtimes "$marker" "$((SDE + 3600))" "$R"
  umoci repack --refresh-bundle --image "$LAYOUT:bookworm" --history.created "$(created 1)" \
    --history.created_by "dpkg-deb -x ${EXTRA_DEBS[*]}; /opt/bench" "$B"

  log "layer 3: deletions (whiteouts) and a few changes"
  touch "$marker"
  sleep 0.01
  rm "$R/etc/issue.net" "$O/hardlink-b"
  rm -r "$R/usr/share/common-licenses" "$R/usr/lib/python3.11/unittest" "$R/usr/share/zoneinfo/right"
  rm -r "$O/replace-me"
  mkdir "$O/replace-me"
  echo "new d" > "$O/replace-me/d.conf"
  echo "changed in layer 3" >> "$R/etc/motd"
  settle_mtimes "$marker" "$((SDE + 7200))" "$R"
  umoci repack --refresh-bundle --image "$LAYOUT:bookworm" --history.created "$(created 2)" \
    --history.created_by "rm files and directories from layers 1 and 2" "$B"

  umoci config --image "$LAYOUT:bookworm" --created "$(created 2)" --author "barge scripts/bench.sh" \
    --history.created "$(created 2)" --config.cmd /bin/bash \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  umoci gc --layout "$LAYOUT"
  rm -rf "$B"
  echo "$FIXTURE_VERSION" > "$CACHE/oci.stamp"
  log "image built in $((SECONDS - t0)) s"
}

if [[ ${BENCH_REBUILD:-0} == 1 || ! -d $LAYOUT || $(cat "$CACHE/oci.stamp" 2>/dev/null) != "$FIXTURE_VERSION" ]]; then
  build_image
else
  log "using cached image layout $LAYOUT (BENCH_REBUILD=1 rebuilds it)"
fi

# The same image with zstd layers (issue 9): `skopeo copy --dest-compress-format zstd` into an empty
# layout (skopeo recompresses only blobs it writes), cached beside the gzip layout and remade when that
# one's manifest changes.
ZLAYOUT=$CACHE/oci-zstd
make_zstd_twin() {
  local src
  src=$(jq -r '.manifests[0].digest' "$LAYOUT/index.json")
  if [[ -d $ZLAYOUT && $(cat "$CACHE/oci-zstd.stamp" 2>/dev/null) == "$src" ]]; then return; fi
  log "zstd twin of the image: skopeo copy --dest-compress-format zstd"
  rm -rf "$ZLAYOUT" "$CACHE/oci-zstd.stamp"
  skopeo copy -q --dest-compress-format zstd "oci:$LAYOUT:bookworm" "oci:$ZLAYOUT:bookworm"
  echo "$src" > "$CACHE/oci-zstd.stamp"
}
make_zstd_twin

# ============================================================ registry and push
rm -rf "$WORK/registry"
registry_start "$WORK/registry"
REF=$REGISTRY/bench/debian:bookworm
ZREF=$REGISTRY/bench/debian-zstd:bookworm
log "registry http://$REGISTRY; pushing $REF and $ZREF"
skopeo copy -q --dest-tls-verify=false "oci:$LAYOUT:bookworm" "docker://$REF"
# --preserve-digests: skopeo would otherwise reuse the gzip blobs it just pushed.
skopeo copy -q --dest-tls-verify=false --preserve-digests "oci:$ZLAYOUT:bookworm" "docker://$ZREF"
zcompressed=$(curl -fsS -H "Accept: $ACCEPT" "http://$REGISTRY/v2/bench/debian-zstd/manifests/bookworm" \
  | jq '[.layers[] | select(.mediaType | endswith("+zstd")) | .size] | add // 0')

manifest=$(curl -fsS -H "Accept: $ACCEPT" "http://$REGISTRY/v2/bench/debian/manifests/bookworm")
mapfile -t LAYERS < <(jq -r '.layers[].digest' <<<"$manifest")
compressed=$(jq '[.layers[].size] | add' <<<"$manifest")
URLS=()
for d in "${LAYERS[@]}"; do URLS+=("http://$REGISTRY/v2/bench/debian/blobs/$d"); done
uncompressed=0
for u in "${URLS[@]}"; do # also warms the page cache with the registry's blob files
  n=$(curl -fsS "$u" | gzip -dc | wc -c)
  uncompressed=$((uncompressed + n))
done
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
log "image: ${#LAYERS[@]} layers, $(mib "$compressed") MiB compressed, $(mib "$uncompressed") MiB uncompressed"

# ============================================================ timing harness
# fresh_scratch: an empty output filesystem at $MNT, made outside the timed region.
fresh_scratch() {
  unmount_scratch
  case $SCRATCH in
    ext4)
      rm -f "$IMG"
      truncate -s 4G "$IMG"
      mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$IMG"
      if ! mount -o loop "$IMG" "$MNT" 2>/dev/null; then
        log "cannot loop-mount ext4 here; using tmpfs for the outputs (SCRATCH=tmpfs)"
        SCRATCH=tmpfs
        fresh_scratch
      fi ;;
    tmpfs) mount -t tmpfs -o size=4g barge-bench "$MNT" ;;
    dir) rm -rf "$MNT"; mkdir -p "$MNT" ;;
    *) die "SCRATCH must be ext4, tmpfs or dir" ;;
  esac
  sync
}

TSV=$OUT/runs.tsv
printf 'step\trun\twall_s\tmaxrss_kib\trc\tok\tload1\n' > "$TSV"
# [EXPECT=RC] measure STEP RUN CMD...: wall time from EPOCHREALTIME, peak RSS from GNU time (%M, KiB:
# the largest single process of the command's tree, not the sum over a pipeline), the exit status and
# whether it is the expected one (EXPECT, default 0), the 1-minute load average before the step.
# One TSV row; returns 1 when the exit status is not the expected one.
measure() {
  local label=$1 run=$2 t0 t1 rc=0 rss ok=1 load
  shift 2
  sync
  read -r load _ </proc/loadavg
  t0=$EPOCHREALTIME
  /usr/bin/time -o "$WORK/time.txt" -f '%e %M' "$@" >"$WORK/step.out" 2>"$WORK/step.err" || rc=$?
  t1=$EPOCHREALTIME
  rss=$(awk 'END { print $2 }' "$WORK/time.txt")
  if ((rc != ${EXPECT:-0})); then
    ok=0
    log "FAILED ($rc): $label: $(head -c 300 "$WORK/step.err")"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$run" \
    "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')" "${rss:-0}" "$rc" "$ok" "$load" >> "$TSV"
  ((ok))
}

# Shell pipelines, run under GNU time as one process tree each.
pipeline() { # decompressor outdir
  local s="set -euo pipefail; mkdir -p $2" u
  for u in "${URLS[@]}"; do s+="; curl -fsS $u | $1 -dc | tar -x --numeric-owner -C $2"; done
  echo "$s"
}

# The small change committed by barge and repacked by umoci: one new file, one chmod.
small_change() { # rootfs run
  printf 'bench run %s\n' "$2" > "$1/etc/bench-small-change"
  chmod 0600 "$1/etc/motd"
}

# barge rows: try once (untimed) and keep the rows only for what works: a pull also has to leave a
# tree behind.
barge_try() { # label args...
  local label=$1 err
  shift
  fresh_scratch
  if "$BARGE" "$@" >"$WORK/try.out" 2>"$WORK/try.err" && [[ -x $MNT/rootfs/usr/bin/bash ]]; then
    return 0
  fi
  err=$(grep -m1 . "$WORK/try.err" || true)
  [[ -n $err ]] || err="no usr/bin/bash in the pulled tree"
  NA_REASON[$label]=$err
  log "$label: n/a ($err)"
  return 1
}
declare -A NA_REASON=()
declare -A ROW_OK=()
barge_try "barge pull" pull "$REF" -r "$MNT/rootfs" && ROW_OK[pull]=1
barge_try "barge pull -g" pull -g "$REF" -r "$MNT/rootfs" && ROW_OK[pullg]=1
if [[ ${ROW_OK[pullg]:-} ]]; then
  # commit/push exist? A no-op commit must say "nothing to commit" (exit 1).
  if "$BARGE" commit -r "$MNT/rootfs" -m "bench no-op" >"$WORK/try.out" 2>"$WORK/try.err"; then
    NA_REASON["barge commit"]="a commit of an unchanged tree succeeded (expected: nothing to commit)"
  elif grep -q "nothing to commit" "$WORK/try.err"; then
    ROW_OK[commit]=1
  else
    NA_REASON["barge commit"]=$(grep -m1 . "$WORK/try.err" || echo "no error message")
  fi
fi
# After the commit check: barge_try starts from a fresh scratch, which drops the -g tree.
barge_try "barge pull (zstd)" pull "$ZREF" -r "$MNT/rootfs" && ROW_OK[pullz]=1

# ------------------------------------------------------------ correctness, once, untimed
# Listing of a tree: one line per entry (path, type, mode, owner, size and link count of non-dirs,
# link target, mtime) and one per regular file's md5; .git at the root left out.
tree_list() { # dir out
  (
    cd "$1"
    find . -mindepth 1 -path ./.git -prune -o \
      \( -type d -printf '%P\t%y\t%m\t%U:%G\t-\t-\t-\t%T@\n' \) -o \
      -printf '%P\t%y\t%m\t%U:%G\t%s\t%n\t%l\t%T@\n' | LC_ALL=C sort
    find . -mindepth 1 -path ./.git -prune -o -type f -print0 | LC_ALL=C sort -z | xargs -0 -r md5sum
  ) > "$2"
}
same_tree() { # label a b
  tree_list "$2" "$WORK/a.list"
  tree_list "$3" "$WORK/b.list"
  if cmp -s "$WORK/a.list" "$WORK/b.list"; then
    log "check: $1: same trees ($(grep -c $'\t' "$WORK/a.list") entries)"
    CHECKS+=("$1: same")
  else
    log "check: $1: DIFFERENT (first differences below)"
    diff "$WORK/a.list" "$WORK/b.list" | head -n 10 >&2 || true
    CHECKS+=("$1: DIFFERENT ($(diff "$WORK/a.list" "$WORK/b.list" | grep -c '^[<>]') lines differ)")
  fi
}
CHECKS=()
if [[ ${BENCH_CHECK:-1} != 0 && ${ROW_OK[pull]:-} ]]; then
  log "check: barge pull vs skopeo copy + umoci unpack (untimed)"
  fresh_scratch
  "$BARGE" pull -q "$REF" -r "$MNT/barge" >/dev/null
  skopeo copy -q --src-tls-verify=false "docker://$REF" "oci:$MNT/oci:bookworm"
  umoci unpack --image "$MNT/oci:bookworm" "$MNT/bundle" >/dev/null
  same_tree "barge pull = umoci unpack" "$MNT/barge" "$MNT/bundle/rootfs"
  if [[ ${ROW_OK[pullz]:-} ]]; then
    "$BARGE" pull -q "$ZREF" -r "$MNT/barge-zstd" >/dev/null
    same_tree "barge pull (zstd) = barge pull (gzip)" "$MNT/barge-zstd" "$MNT/barge"
  fi
  if [[ ${ROW_OK[pullg]:-} ]]; then
    "$BARGE" pull -q -g "$REF" -r "$MNT/barge-g" >/dev/null
    same_tree "barge pull -g = barge pull (outside .git)" "$MNT/barge-g" "$MNT/barge"
    st=$(git -C "$MNT/barge-g" status --porcelain | head -n 5)
    if [[ -z $st ]]; then CHECKS+=("git status after pull -g: clean"); else
      CHECKS+=("git status after pull -g: NOT clean"); log "git status: $st"; fi
  fi
fi

# ------------------------------------------------------------ pull, commit, repack
log "timing $RUNS runs on a fresh $SCRATCH scratch filesystem per pull"
for run in $(seq 1 "$RUNS"); do
  log "run $run/$RUNS"
  if [[ ${ROW_OK[pull]:-} ]]; then
    fresh_scratch
    measure "barge pull" "$run" "$BARGE" pull "$REF" -r "$MNT/rootfs" || true
    fresh_scratch
    measure "barge pull --no-sync" "$run" "$BARGE" pull --no-sync "$REF" -r "$MNT/rootfs" || true
  fi
  if [[ ${ROW_OK[pullz]:-} ]]; then
    fresh_scratch
    measure "barge pull (zstd)" "$run" "$BARGE" pull "$ZREF" -r "$MNT/rootfs" || true
  fi
  if [[ ${ROW_OK[pullg]:-} ]]; then
    fresh_scratch
    if measure "barge pull -g" "$run" "$BARGE" pull -g "$REF" -r "$MNT/rootfs" && [[ ${ROW_OK[commit]:-} ]]; then
      EXPECT=1 measure "barge commit, no change" "$run" "$BARGE" commit -r "$MNT/rootfs" -m "no change" || true
      small_change "$MNT/rootfs" "$run"
      measure "barge commit, small change" "$run" "$BARGE" commit -r "$MNT/rootfs" -m "small change" || true
    fi
  fi
  fresh_scratch
  measure "barge copy, registry → layout" "$run" "$BARGE" copy -q "$REF" "oci:$MNT/oci-barge:bookworm" || true
  fresh_scratch
  measure "skopeo copy" "$run" skopeo copy -q --src-tls-verify=false "docker://$REF" "oci:$MNT/oci:bookworm" || true
  if measure "umoci unpack" "$run" umoci unpack --image "$MNT/oci:bookworm" "$MNT/bundle"; then
    # Without --refresh-bundle both repacks compare with the unpacked state: the second one's layer
    # holds the small change, as barge's does.
    measure "umoci repack, no change" "$run" umoci repack --image "$MNT/oci:bookworm" "$MNT/bundle" || true
    small_change "$MNT/bundle/rootfs" "$run"
    measure "umoci repack, small change" "$run" umoci repack --image "$MNT/oci:bookworm" "$MNT/bundle" || true
  fi
  fresh_scratch
  measure "curl | pigz -dc | tar -x" "$run" bash -c "$(pipeline pigz "$MNT/rootfs")" || true
  fresh_scratch
  measure "curl | pigz -dc | tar -x, sync -f" "$run" bash -c "$(pipeline pigz "$MNT/rootfs"); sync -f $MNT/rootfs" || true
  fresh_scratch
  measure "curl | gzip -dc | tar -x" "$run" bash -c "$(pipeline gzip "$MNT/rootfs")" || true
done

# ------------------------------------------------------------ initramfs (issue 10)
# barge pull --initramfs (the archive made straight from the layers, no tree left) against barge
# pull + find | cpio -o -H newc | gzip, RUNS runs each on a fresh scratch filesystem (--init /bin/sh:
# the bench image has no Cmd). Then once, untimed: both archives unpacked with cpio -idm (as root)
# must give the same tree (type, mode, owner, size, link count, mtime of files, symlink target,
# device numbers, content; cpio -idm restores no directory or symlink mtimes), barge's own
# additions (/init, /dev/console) aside; and the archives' sizes.
IR_BARGE="barge pull --initramfs x.cpio.gz"
IR_CPIO="barge pull + find | cpio -o -H newc | gzip"
ir_list() { # dir out
  (
    cd "$1"
    find . -mindepth 1 ! -type l ! -type d -printf '%P\t%y\t%m\t%U:%G\t%s\t%n\t%T@\n'
    find . -mindepth 1 -type d -printf '%P\t%y\t%m\t%U:%G\n'
    find . -mindepth 1 -type l -printf '%P\t%y\t%U:%G\t%l\n'
    find . -mindepth 1 \( -type c -o -type b \) -exec stat -c '%n\tdev\t%t:%T' {} +
    find . -mindepth 1 -type f -exec md5sum {} +
  ) | LC_ALL=C sort > "$2"
}
bench_initramfs() {
  local run a b extra differ
  for run in $(seq 1 "$RUNS"); do
    fresh_scratch
    measure "$IR_BARGE" "$run" "$BARGE" pull "$REF" --initramfs "$MNT/barge.cpio.gz" --init /bin/sh || true
    fresh_scratch
    measure "$IR_CPIO" "$run" bash -c "set -euo pipefail; '$BARGE' pull -q '$REF' -r '$MNT/rootfs'
      cd '$MNT/rootfs'; find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip > '$MNT/find.cpio.gz'" || true
  done
  "$BARGE" pull -q "$REF" --initramfs "$MNT/barge.cpio.gz" --init /bin/sh >/dev/null
  a=$MNT/unpacked-barge b=$MNT/unpacked-find
  mkdir "$a" "$b"
  (cd "$a" && gzip -dc "$MNT/barge.cpio.gz" | cpio -idm --quiet --no-absolute-filenames)
  (cd "$b" && gzip -dc "$MNT/find.cpio.gz" | cpio -idm --quiet --no-absolute-filenames)
  extra=$(cd "$a" && for p in init dev/console; do [[ -e $b/$p ]] || { rm -f "$p"; printf ' /%s' "$p"; }; done)
  ir_list "$a" "$WORK/ir-a.list"
  ir_list "$b" "$WORK/ir-b.list"
  if cmp -s "$WORK/ir-a.list" "$WORK/ir-b.list"; then
    CHECKS+=("barge pull --initramfs and find | cpio unpack to the same tree (barge adds$extra; $(wc -l < "$WORK/ir-a.list") lines compared)")
  else
    diff "$WORK/ir-a.list" "$WORK/ir-b.list" | head -n 10 >&2 || true
    differ=$({ diff "$WORK/ir-a.list" "$WORK/ir-b.list" || true; } | grep -c '^[<>]' || true)
    CHECKS+=("barge pull --initramfs vs find | cpio: DIFFERENT trees ($differ lines differ)")
  fi
  CHECKS+=("initramfs sizes: barge $(mib "$(stat -c %s "$MNT/barge.cpio.gz")") MiB (gzip level 1), find | cpio | gzip $(mib "$(stat -c %s "$MNT/find.cpio.gz")") MiB (gzip -6)")
}
if [[ ${ROW_OK[pull]:-} ]]; then
  log "initramfs: $RUNS runs of each"
  bench_initramfs
fi

# ------------------------------------------------------------ push
# A tree pulled with -g plus one file of PUSH_MIB MiB random bytes, committed (the layer is as big
# gzipped); pushed RUNS times to a new repository of the same registry (base layers mounted, the big
# one uploaded) and to an empty second registry (everything uploaded, base layers streamed from the
# first), beside skopeo copy of the same image from the first registry to an empty second one.
BIG_LABEL="barge commit, $PUSH_MIB MiB random file (1 run)"
PUSH_SAME="barge push, $PUSH_MIB MiB layer, same registry (base mounted)"
PUSH_OTHER="barge push, whole image to another registry"
SKOPEO_OTHER="skopeo copy, whole image to another registry"
COPY_OTHER="barge copy, whole image to another registry"
if [[ ${ROW_OK[commit]:-} ]]; then
  log "push: pull -g, $PUSH_MIB MiB of random data, commit"
  fresh_scratch
  P=$MNT/rootfs
  "$BARGE" pull -q -g "$REF" -r "$P" >/dev/null
  head -c "$((PUSH_MIB * 1048576))" /dev/urandom > "$P/opt/bench-random.bin"
  if measure "$BIG_LABEL" 1 "$BARGE" commit -r "$P" -m "$PUSH_MIB MiB of random bytes"; then
    PUSHED=$REGISTRY/bench/debian-big:latest
    if "$BARGE" push -q "$PUSHED" -r "$P" >/dev/null 2>"$WORK/try.err"; then
      ROW_OK[push]=1
    else
      NA_REASON["barge push"]=$(grep -m1 . "$WORK/try.err" || echo "no error message")
      log "barge push: n/a (${NA_REASON["barge push"]})"
    fi
  fi
  for run in $(seq 1 "$RUNS"); do
    [[ ${ROW_OK[push]:-} ]] || break
    log "push run $run/$RUNS"
    measure "$PUSH_SAME" "$run" "$BARGE" push "$REGISTRY/bench/push-$run:latest" -r "$P" || true
    regb_start "$MNT/registry-b"
    measure "$PUSH_OTHER" "$run" "$BARGE" push "$REGB/bench/debian-big:latest" -r "$P" || true
    regb_stop
    regb_start "$MNT/registry-b"
    measure "$COPY_OTHER" "$run" "$BARGE" copy -q "$PUSHED" "$REGB/bench/debian-big:latest" || true
    regb_stop
    regb_start "$MNT/registry-b"
    measure "$SKOPEO_OTHER" "$run" skopeo copy -q --src-tls-verify=false --dest-tls-verify=false \
      "docker://$PUSHED" "docker://$REGB/bench/debian-big:latest" || true
    regb_stop
  done
fi
unmount_scratch

# ============================================================ table
# Per step: median wall time over runs (runs with an unexpected exit status excluded), largest peak
# RSS, failures; one "step;median;rss_mib;failures" line each (median and rss empty when no run
# succeeded). Derived rows: "skopeo copy + umoci unpack" (per-run sum) and "pull -g overhead"
# (per-run difference pull -g - pull).
OVERHEAD="pull -g overhead (pull -g - pull)"
summarise() { # "step;step;..."
  awk -F'\t' -v steps="$*" -v ovh="$OVERHEAD" '
    NR == 1 { next }
    { key = $1; ok = $6 }
    key == "skopeo copy" || key == "umoci unpack" { tot[$2] += $3; if ($4 > trss) trss = $4; if (!ok) tfail++; truns[$2] = 1 }
    key == "barge pull" && ok { plain[$2] = $3 }
    key == "barge pull -g" && ok { withg[$2] = $3 }
    { if (!ok) { fail[key]++; next } wall[key, ++n[key]] = $3; if ($4 > rss[key]) rss[key] = $4 }
    function median(k, cnt,   i, j, t, a) {
      for (i = 1; i <= cnt; i++) a[i] = wall[k, i]
      for (i = 2; i <= cnt; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
      return cnt % 2 ? a[(cnt + 1) / 2] : (a[cnt / 2] + a[cnt / 2 + 1]) / 2
    }
    END {
      s = "skopeo copy + umoci unpack"
      if (!tfail) { c = 0; for (r in truns) wall[s, ++c] = tot[r]; n[s] = c; rss[s] = trss }
      c = 0; for (r in withg) if (r in plain) wall[ovh, ++c] = withg[r] - plain[r]
      n[ovh] = c; rss[ovh] = -1
      cnt = split(steps, st, ";")
      for (i = 1; i <= cnt; i++) {
        k = st[i]
        if (n[k] > 0) printf "%s;%.3f;%s;%d\n", k, median(k, n[k]), rss[k] < 0 ? "" : sprintf("%.1f", rss[k] / 1024), fail[k]
        else printf "%s;;;%d\n", k, fail[k] + 0
      }
    }' "$TSV"
}
STEPS="barge pull;barge pull (zstd);barge pull --no-sync;barge pull -g;$OVERHEAD;skopeo copy + umoci unpack;barge copy, registry → layout;skopeo copy;umoci unpack"
STEPS+=";curl | pigz -dc | tar -x;curl | pigz -dc | tar -x, sync -f;curl | gzip -dc | tar -x"
STEPS+=";barge commit, no change;umoci repack, no change;barge commit, small change;umoci repack, small change"
STEPS+=";$BIG_LABEL;$PUSH_SAME;$PUSH_OTHER;$COPY_OTHER;$SKOPEO_OTHER"
STEPS+=";$IR_BARGE;$IR_CPIO"

# targets SUMMARY: the issues' goals as markdown table rows "| issue | target | measured | met |",
# for the steps that have a median.
targets() {
  awk -F';' -v ovh="$OVERHEAD" -v same="$PUSH_SAME" -v other="$PUSH_OTHER" '
    { med[$1] = $2; rss[$1] = $3 }
    function row(issue, target, measured, ok) {
      printf "| %s | %s | %s | %s |\n", issue, target, measured, ok ? "met" : "**NOT met**"
    }
    END {
      b = "barge pull"; g = "barge pull -g"; p = "curl | pigz -dc | tar -x"; s = "skopeo copy + umoci unpack"
      n0 = "barge commit, no change"; n1 = "barge commit, small change"
      ns = "barge pull --no-sync"; ps = "curl | pigz -dc | tar -x, sync -f"
      if (med[b] != "" && med[ps] != "")
        row("#12", "barge pull (synced) <= curl \\| pigz -dc \\| tar -x, sync -f", sprintf("%.2f s vs %.2f s", med[b], med[ps]), med[b] <= med[ps])
      if (med[ns] != "" && med[p] != "")
        row("#12", "barge pull --no-sync <= curl \\| pigz -dc \\| tar -x", sprintf("%.2f s vs %.2f s", med[ns], med[p]), med[ns] <= med[p])
      if (med[b] != "")
        row("#2", "barge pull peak RSS <= 16 MiB", sprintf("%.1f MiB", rss[b]), rss[b] <= 16)
      z = "barge pull (zstd)"
      if (med[z] != "" && med[b] != "")
        row("#9", "barge pull (zstd) <= barge pull (gzip)", sprintf("%.2f s vs %.2f s", med[z], med[b]), med[z] <= med[b])
      if (med[z] != "")
        row("#9", "barge pull (zstd) peak RSS <= 16 MiB", sprintf("%.1f MiB", rss[z]), rss[z] <= 16)
      if (med[ovh] != "" && med[b] != "")
        row("#3", "pull -g adds <= the plain pull time", sprintf("+%.2f s vs %.2f s", med[ovh], med[b]), med[ovh] <= med[b])
      if (med[n0] != "")
        row("#3", "no-op commit <= 0.3 s", sprintf("%.3f s", med[n0]), med[n0] <= 0.3)
      if (med[n1] != "")
        row("#3", "small-change commit <= 0.5 s", sprintf("%.3f s", med[n1]), med[n1] <= 0.5)
      if (med[same] != "")
        row("#4", "push peak RSS <= 32 MiB (same registry)", sprintf("%.1f MiB", rss[same]), rss[same] <= 32)
      if (med[other] != "")
        row("#4", "push peak RSS <= 32 MiB (other registry)", sprintf("%.1f MiB", rss[other]), rss[other] <= 32)
    }' <<<"$1"
}
load_range() { awk -F'\t' 'NR > 1 { if (min == "" || $7 < min) min = $7; if ($7 > max) max = $7 } END { printf "%s-%s", min, max }' "$TSV"; }
summary=$(summarise "$STEPS")
target_rows=$(targets "$summary")
MD=$OUT/results.md
{
  echo "Image \`bench/debian:bookworm\`: ${#LAYERS[@]} layers (debootstrap minbase bookworm, additions, deletions),"
  echo "$(mib "$compressed") MiB compressed, $(mib "$uncompressed") MiB uncompressed, from a local registry on"
  echo "127.0.0.1 over plain HTTP; every pull into a fresh $SCRATCH filesystem; medians of $RUNS runs."
  echo "The zstd row pulls the same image recompressed by \`skopeo copy --dest-compress-format zstd\`"
  echo "($(mib "$zcompressed") MiB of zstd layers)."
  echo "Commits and repacks run on the tree just pulled (barge pull -g) or unpacked (umoci unpack); the"
  echo "small change is one new file and one chmod. The pushed image is that tree plus a $PUSH_MIB MiB file of"
  echo "random bytes, committed by barge (a $PUSH_MIB MiB gzip layer on top of the $(mib "$compressed") MiB of the base)."
  echo "Machine: $(nproc) CPUs, Linux $(uname -r); 1-minute load average $(load_range) during the"
  echo "measurements; $(skopeo --version), umoci $(umoci --version | awk '{print $NF}'), pigz $(pigz --version 2>&1 | awk '{print $2}'), $(git --version)."
  echo
  echo "| step | median wall s | peak RSS MiB |"
  echo "|---|---:|---:|"
  while IFS=';' read -r step med rss fails; do
    shown=${step//|/\\|}
    note=""
    ((fails)) && note=" ($fails failed runs)"
    echo "| $shown$note | ${med:-n/a} | ${rss:-n/a} |"
  done <<<"$summary"
  echo
  echo "Peak RSS is that of the largest single process of the step, barge's git children included"
  echo "(GNU time %M); not the sum over a pipeline. The no-op commit exits 1 (\"nothing to commit\"), as it should."
  if [[ -n $target_rows ]]; then
    echo
    echo "| issue | target | measured | met |"
    echo "|---|---|---|---|"
    echo "$target_rows"
  fi
  if ((${#CHECKS[@]})); then
    echo
    echo "Checked once (untimed): $(IFS=';'; echo "${CHECKS[*]}" | sed 's/;/; /g')."
  fi
  for k in "${!NA_REASON[@]}"; do echo "n/a: $k: ${NA_REASON[$k]}"; done
} > "$MD"
echo
cat "$MD"
log "written $MD and $TSV in $((SECONDS - start)) s"
