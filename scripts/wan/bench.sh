#!/usr/bin/env bash
# scripts/wan/bench.sh (`make bench-wan`, also run by `make bench`): barge against its peers across
# an emulated wide-area link (bed.sh: namespaces, netem.c, two registries). For each profile
# (RTT, rate, loss, congestion control) it times, in namespace bwcli against the registries in bwreg:
#   pull debian: barge pull | curl | pigz -dc | tar -x per layer | skopeo copy + umoci unpack
#   push small:  barge push of one small new layer onto the pulled base (same registry: mounts)
#   push cross:  barge push of an image pulled from :5001 to :5000 | skopeo copy :5001 -> :5000
# and counts, per step, the HTTP requests and client connections the registries saw (their logs).
# Every output goes to a fresh loop-mounted ext4 made outside the timed region.
# Writes target/bench/wan.tsv (every run) and target/bench/wan.md (medians), and prints the table.
#
# Environment: WAN_RUNS (3), WAN_PROFILES (all; e.g. "c-bbr d-reno"), WAN_STEPS ("pull push"), BENCH_CACHE (the OCI layout
# `make bench` builds: $BENCH_CACHE/oci, tag bookworm), BARGE (the musl release binary), WAN_DIR
# (/tmp/barge-wan). Run as root.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
W=${WAN_DIR:-/tmp/barge-wan}
export WAN_DIR=$W
RUNS=${WAN_RUNS:-3}
STEPS=${WAN_STEPS:-pull push}
CACHE=${BENCH_CACHE:-/var/cache/barge-bench}
target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
BARGE=${BARGE:-$target_dir/x86_64-unknown-linux-musl/release/barge}
OUT=$ROOT/target/bench
BED="bash $HERE/bed.sh"
REG=10.78.0.2:5000 REG2=10.78.0.2:5001 IMAGE=test/debian:bookworm
MNT=$W/mnt SCRATCH=$W/scratch.img

# name: RTT_MS MBIT LOSS_PPM CC
declare -A PROFILE=(
  [a-bbr]="0 0 0 bbr" [a-reno]="0 0 0 reno"
  [b-bbr]="20 200 0 bbr" [b-reno]="20 200 0 reno"
  [c-bbr]="100 50 0 bbr" [c-reno]="100 50 0 reno"
  [d-bbr]="300 10 1000 bbr" [d-reno]="300 10 1000 reno"
)
ORDER=(a-bbr a-reno b-bbr b-reno c-bbr c-reno d-bbr d-reno)
read -r -a WANT <<<"${WAN_PROFILES:-${ORDER[*]}}"

log() { printf '[wan %4ds] %s\n' "$SECONDS" "$*" >&2; }
die() { log "error: $*"; exit 1; }
[[ $(id -u) == 0 ]] || die "run as root (namespaces, mounts)"
[[ -x $BARGE ]] || die "no barge binary at $BARGE (run make first)"
[[ -d $CACHE/oci ]] || die "no image layout at $CACHE/oci (make bench builds it)"
for t in docker-registry skopeo umoci curl jq pigz gcc python3 unshare; do
  command -v $t >/dev/null || die "$t is missing (make deps)"
done
for p in "${WANT[@]}"; do [[ -n ${PROFILE[$p]:-} ]] || die "unknown profile $p (one of ${ORDER[*]})"; done
mkdir -p "$OUT" "$MNT"
TSV=$OUT/wan.tsv
printf 'profile\tstep\ttool\trun\twall_s\tmaxrss_kb\trequests\tconnections\trc\n' >"$TSV"

unmount_scratch() { if mountpoint -q "$MNT"; then umount "$MNT"; fi; }
cleanup() { unmount_scratch; $BED down; }
trap cleanup EXIT
fresh_scratch() {
  unmount_scratch
  rm -f "$SCRATCH"; truncate -s 4G "$SCRATCH"
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$SCRATCH"
  mount -o loop "$SCRATCH" "$MNT"
}

# The floor: manifest, then each layer with its own curl, through pigz into tar.
cat >"$W/curlpipe.sh" <<'EOF'
#!/usr/bin/env bash
set -euo pipefail
accept="application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
m=$(curl -fsS -H "Accept: $accept" "http://$1/v2/$2/manifests/$3")
mkdir -p "$4"
for d in $(jq -r '.layers[].digest' <<<"$m"); do
  curl -fsS "http://$1/v2/$2/blobs/$d" | pigz -dc | tar -x --numeric-owner -C "$4"
done
EOF
# skopeo with an empty blob-info cache of its own, so every run starts cold.
cat >"$W/skopeo.sh" <<'EOF'
#!/bin/sh
exec unshare -m --propagation private sh -c 'mount -t tmpfs wan-skopeo /var/lib/containers/cache && exec skopeo "$@"' skopeo "$@"
EOF
chmod +x "$W/curlpipe.sh" "$W/skopeo.sh"

# measure PROFILE STEP TOOL RUN CMD...: one timed run in bwcli, with the registries' view of it.
measure() {
  local profile=$1 step=$2 tool=$3 run=$4; shift 4
  local o0 o1 t0 t1 rc=0
  o0=$(stat -c %s "$W/registry-5000.log"); o1=$(stat -c %s "$W/registry-5001.log")
  ip -n bwcli tcp_metrics flush all 2>/dev/null || true
  sync
  t0=$EPOCHREALTIME
  ip netns exec bwcli /usr/bin/time -o "$W/time" -f '%M' "$@" >"$W/step.out" 2>&1 || rc=$?
  t1=$EPOCHREALTIME
  sleep 0.3 # the registries' last log lines
  local slice requests conns
  slice=$( (tail -c +$((o0 + 1)) "$W/registry-5000.log"; tail -c +$((o1 + 1)) "$W/registry-5001.log"))
  requests=$(grep -c '^10\.78\.0\.1 - - \[' <<<"$slice" || true)
  conns=$( (grep -o 'remoteaddr="10\.78\.0\.1:[0-9]*"' <<<"$slice" || true) | sort -u | wc -l)
  local wall; wall=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$profile" "$step" "$tool" "$run" "$wall" \
    "$(tail -1 "$W/time")" "$requests" "$conns" "$rc" >>"$TSV"
  log "$profile $step $tool run $run: ${wall}s, $requests requests, $conns connections, rc=$rc"
  ((rc == 0)) || tail -3 "$W/step.out" >&2
}

pull_step() { # PROFILE RUN
  local p=$1 r=$2
  fresh_scratch
  measure "$p" "pull debian" barge "$r" "$BARGE" pull -q --insecure $REG "$REG/$IMAGE" -r "$MNT/barge"
  fresh_scratch
  measure "$p" "pull debian" "curl|pigz|tar" "$r" "$W/curlpipe.sh" $REG "${IMAGE%:*}" "${IMAGE##*:}" "$MNT/curl"
  fresh_scratch
  measure "$p" "pull debian" "skopeo copy" "$r" "$W/skopeo.sh" copy -q --src-tls-verify=false \
    "docker://$REG/$IMAGE" "oci:$MNT/oci:x"
  measure "$p" "pull debian" "umoci unpack" "$r" umoci unpack --image "$MNT/oci:x" "$MNT/bundle"
}

push_steps() { # PROFILE: untimed pulls of the bases, then RUNS timed pushes
  local p=$1 stamp r
  stamp=$(date +%s)
  fresh_scratch
  ip netns exec bwcli "$BARGE" pull -q -g --insecure $REG "$REG/$IMAGE" -r "$MNT/D"
  ip netns exec bwcli "$BARGE" pull -q -g --insecure $REG2 "$REG2/$IMAGE" -r "$MNT/D2"
  for r in $(seq 1 "$RUNS"); do
    # a copy of the pulled base for each run: every push has exactly one new layer
    rm -rf "$MNT/Dr"; cp -a "$MNT/D" "$MNT/Dr"
    echo "$p $stamp $r" >"$MNT/Dr/wan-bench"
    "$BARGE" commit -q -r "$MNT/Dr" -m "wan bench $r"
    measure "$p" "push small" barge "$r" "$BARGE" push -q --insecure $REG "$REG/wan/s-$p-$stamp-$r:1" -r "$MNT/Dr"
    measure "$p" "push cross" barge "$r" "$BARGE" push -q --insecure $REG --insecure $REG2 \
      "$REG/wan/xb-$p-$stamp-$r:1" -r "$MNT/D2"
    measure "$p" "push cross" "skopeo copy" "$r" "$W/skopeo.sh" copy -q --src-tls-verify=false \
      --dest-tls-verify=false "docker://$REG2/$IMAGE" "docker://$REG/wan/xs-$p-$stamp-$r:1"
  done
}

$BED down
$BED link 0 0 0
$BED regs
log "seeding both registries with $CACHE/oci:bookworm"
$BED seed "$CACHE/oci:bookworm" "$IMAGE"
for p in "${WANT[@]}"; do
  read -r rtt mbit loss cc <<<"${PROFILE[$p]}"
  log "profile $p: RTT ${rtt} ms, ${mbit} Mbit/s (0: unlimited), loss ${loss} ppm, $cc"
  $BED link "$rtt" "$mbit" "$loss"
  $BED cc "$cc"
  if [[ " $STEPS " == *" pull "* ]]; then for r in $(seq 1 "$RUNS"); do pull_step "$p" "$r"; done; fi
  if [[ " $STEPS " == *" push "* ]]; then push_steps "$p"; fi
done

python3 "$HERE/table.py" "$TSV" >"$OUT/wan.md"
cat "$OUT/wan.md"
log "written $OUT/wan.md and $TSV"
