#!/usr/bin/env bash
# scripts/bench.sh (`make bench`): a benchmark, not a test.
# Builds a realistic three-layer image (debootstrap --variant=minbase bookworm, then a layer of
# additions, then a layer of deletions/whiteouts), pushes it to a throwaway local registry, and times
# barge pull against skopeo copy + umoci unpack and the curl | pigz/gzip -dc | tar -x pipelines over
# the same blobs. Every step that writes gets a fresh loop-mounted ext4, made outside the timed region
# (after `rm -rf`, creating files on this machine's journal-less root ext4 gets slow).
# Prints a markdown table (median wall seconds of RUNS runs, peak RSS) and writes target/bench/.
#
# Environment: RUNS (3), BENCH_CACHE (/var/cache/barge-bench: debootstrap tarball, .debs, the image
# layout), BENCH_WORK (/tmp/barge-bench), BENCH_REBUILD=1 (rebuild the image), BENCH_MIRROR (Debian
# mirror; default: the one apt uses), SCRATCH=ext4|tmpfs|dir (where outputs go; default ext4).
# Run as root.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/registry.sh
. "$ROOT/scripts/registry.sh"

RUNS=${RUNS:-3}
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

MNT=$WORK/mnt
IMG=$WORK/scratch-ext4.img
mkdir -p "$CACHE" "$WORK" "$MNT" "$OUT"

unmount_scratch() { if mountpoint -q "$MNT"; then umount "$MNT"; fi; }
cleanup() {
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

# ============================================================ registry and push
rm -rf "$WORK/registry"
registry_start "$WORK/registry"
REF=$REGISTRY/bench/debian:bookworm
log "registry http://$REGISTRY; pushing $REF"
skopeo copy -q --dest-tls-verify=false "oci:$LAYOUT:bookworm" "docker://$REF"

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
printf 'step\trun\twall_s\tmaxrss_kib\trc\n' > "$TSV"
# measure STEP RUN CMD...: wall time from EPOCHREALTIME, peak RSS from GNU time (%M, KiB: the largest
# single process of the command's tree, not the sum over a pipeline). One TSV row.
measure() {
  local label=$1 run=$2 t0 t1 rc=0 rss
  shift 2
  sync
  t0=$EPOCHREALTIME
  /usr/bin/time -o "$WORK/time.txt" -f '%e %M' "$@" >"$WORK/step.out" 2>"$WORK/step.err" || rc=$?
  t1=$EPOCHREALTIME
  rss=$(awk 'END { print $2 }' "$WORK/time.txt")
  if ((rc)); then log "FAILED ($rc): $label: $(head -c 300 "$WORK/step.err")"; fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$label" "$run" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')" \
    "${rss:-0}" "$rc" >> "$TSV"
  return "$rc"
}

# Shell pipelines, run under GNU time as one process tree each.
pipeline() { # decompressor outdir
  local s="set -euo pipefail; mkdir -p $2" u
  for u in "${URLS[@]}"; do s+="; curl -fsS $u | $1 -dc | tar -x --numeric-owner -C $2"; done
  echo "$s"
}

# barge rows: try once (untimed) and keep the rows only for what works. The skeleton exits 0 without
# pulling, so a pull also has to leave a tree behind.
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
BARGE_ROWS=()
barge_try "barge pull" pull "$REF" -r "$MNT/rootfs" && BARGE_ROWS+=("barge pull")
barge_try "barge pull -g" pull -g "$REF" -r "$MNT/rootfs" && BARGE_ROWS+=("barge pull -g")

log "timing $RUNS runs on a fresh $SCRATCH scratch filesystem per step"
for run in $(seq 1 "$RUNS"); do
  log "run $run/$RUNS"
  for row in "${BARGE_ROWS[@]}"; do
    fresh_scratch
    if [[ $row == "barge pull" ]]; then
      measure "$row" "$run" "$BARGE" pull "$REF" -r "$MNT/rootfs" || true
    else
      measure "$row" "$run" "$BARGE" pull -g "$REF" -r "$MNT/rootfs" || true
    fi
  done
  fresh_scratch
  measure "skopeo copy" "$run" skopeo copy -q --src-tls-verify=false "docker://$REF" "oci:$MNT/oci:bookworm" || true
  measure "umoci unpack" "$run" umoci unpack --image "$MNT/oci:bookworm" "$MNT/bundle" || true
  fresh_scratch
  measure "curl | pigz -dc | tar -x" "$run" bash -c "$(pipeline pigz "$MNT/rootfs")" || true
  fresh_scratch
  measure "curl | gzip -dc | tar -x" "$run" bash -c "$(pipeline gzip "$MNT/rootfs")" || true

  # ---------------------------------------------------------- commit/push benchmarks (issues 3/4)
  # Added with barge commit/push, each on a fresh scratch fs after an untimed barge pull -g:
  #   - no-op commit (nothing changed) with barge commit
  #   - small commit (a few files changed) with barge commit vs `umoci repack` of the same change
  #   - push of a 200 MiB layer with barge push vs `skopeo copy oci:... docker://...`
done
unmount_scratch

# ============================================================ table
# Per step: median wall time over runs (failed runs excluded), largest peak RSS, failures; one
# "step;median;rss_mib;failures" line each (median and rss empty when no run succeeded).
summarise() { # "step;step;..." (the skopeo+umoci total is the per-run sum of its two steps)
  awk -F'\t' -v steps="$*" '
    NR == 1 { next }
    { key = $1; if (key == "skopeo copy" || key == "umoci unpack") { tot[$2] += $3; if ($4 > trss) trss = $4; if ($5 != 0) tfail++; truns[$2] = 1 } }
    { if ($5 != 0) { fail[key]++; next } wall[key, ++n[key]] = $3; if ($4 > rss[key]) rss[key] = $4 }
    function median(k, cnt,   i, j, t, a) {
      for (i = 1; i <= cnt; i++) a[i] = wall[k, i]
      for (i = 2; i <= cnt; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
      return cnt % 2 ? a[(cnt + 1) / 2] : (a[cnt / 2] + a[cnt / 2 + 1]) / 2
    }
    END {
      if (!tfail) { c = 0; for (r in truns) { c++; wall["skopeo copy + umoci unpack", c] = tot[r] }
                    n["skopeo copy + umoci unpack"] = c; rss["skopeo copy + umoci unpack"] = trss }
      cnt = split(steps, s, ";")
      for (i = 1; i <= cnt; i++) {
        k = s[i]
        if (n[k] > 0) printf "%s;%.3f;%.1f;%d\n", k, median(k, n[k]), rss[k] / 1024, fail[k]
        else printf "%s;;;%d\n", k, fail[k] + 0
      }
    }' "$TSV"
}
STEPS="barge pull;barge pull -g;skopeo copy + umoci unpack;skopeo copy;umoci unpack;curl | pigz -dc | tar -x;curl | gzip -dc | tar -x"
# targets SUMMARY: issue 2's goals for barge pull, when it has a median: at most as slow as
# curl | pigz | tar, at most a quarter of skopeo + umoci, peak RSS at most 16 MiB.
targets() {
  awk -F';' '
    { med[$1] = $2; rss[$1] = $3 }
    function verdict(ok) { return ok ? "met" : "NOT met" }
    END {
      b = "barge pull"; p = "curl | pigz -dc | tar -x"; s = "skopeo copy + umoci unpack"
      if (med[b] == "") exit
      if (med[p] != "") printf "Target: barge pull <= curl | pigz | tar (%.3f s <= %.3f s): %s.\n", med[b], med[p], verdict(med[b] <= med[p])
      if (med[s] != "") printf "Target: barge pull <= skopeo + umoci / 4 (%.3f s <= %.3f s): %s.\n", med[b], med[s] / 4, verdict(med[b] <= med[s] / 4)
      printf "Target: barge pull peak RSS <= 16 MiB (%.1f MiB): %s.\n", rss[b], verdict(rss[b] <= 16)
    }' <<<"$1"
}
summary=$(summarise "$STEPS")
MD=$OUT/results.md
{
  echo "Image \`bench/debian:bookworm\`: ${#LAYERS[@]} layers (debootstrap minbase bookworm, additions, deletions),"
  echo "$(mib "$compressed") MiB compressed, $(mib "$uncompressed") MiB uncompressed; pulled from a local registry on"
  echo "127.0.0.1 over plain HTTP into a fresh $SCRATCH filesystem per step; medians of $RUNS runs."
  echo "Machine: $(nproc) CPUs, Linux $(uname -r); $(skopeo --version), umoci $(umoci --version | awk '{print $NF}'), pigz $(pigz --version 2>&1 | awk '{print $2}')."
  echo
  echo "| step | median wall s | peak RSS MiB |"
  echo "|---|---:|---:|"
  while IFS=';' read -r step med rss fails; do
    shown=${step//|/\\|}
    if [[ -n $med ]]; then
      note=""
      ((fails)) && note=" ($fails failed runs)"
      echo "| $shown$note | $med | $rss |"
    else
      echo "| $shown | n/a | n/a |"
    fi
  done <<<"$summary"
  echo
  echo "Peak RSS is that of the largest single process (GNU time %M), not the sum over a pipeline."
  targets "$summary"
  for k in "${!NA_REASON[@]}"; do echo "n/a: $k: ${NA_REASON[$k]}"; done
} > "$MD"
echo
cat "$MD"
log "written $MD and $TSV in $((SECONDS - start)) s"
