#!/usr/bin/env bash
# scripts/wan/bed.sh: the WAN test bed of `make bench-wan`, inside network namespaces it makes
# (bwcli 10.78.0.1 <-> bwmid <-> bwreg 10.78.0.2); the host's own interfaces are never touched.
# The kernel here has no sch_netem, so the middle namespace runs netem.c (built on first use), a
# user-space `netem delay rate loss limit` on both directions. Two docker-registry instances run in
# bwreg (10.78.0.2:5000 and :5001), storage under $WAN_DIR.
#
#   bed.sh link RTT_MS MBIT LOSS_PPM   (re)make the link; RTT_MS 0 = a plain veth pair, no emulator
#   bed.sh cc bbr|reno                 TCP congestion control in bwcli and bwreg
#   bed.sh regs                        (re)start the registries
#   bed.sh seed OCI_LAYOUT:TAG REPO:TAG   copy an image into both registries (skopeo, once)
#   bed.sh down                        stop netem and the registries (by their PIDs), delete the namespaces
# Environment: WAN_DIR (/tmp/barge-wan). Run as root.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
W=${WAN_DIR:-/tmp/barge-wan}
CLI=bwcli MID=bwmid REG=bwreg
mkdir -p "$W"

die() { echo "bed.sh: $*" >&2; exit 1; }

# PID FILE WORD: kill the process named in FILE if it is alive and its command line has WORD.
stop_recorded() {
  local file=$1 word=$2 pid
  [[ -f $file ]] || return 0
  pid=$(<"$file")
  if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$word"; then
    kill "$pid" 2>/dev/null || true
    for _ in {1..50}; do [[ -e /proc/$pid ]] || break; sleep 0.1; done
  fi
  rm -f "$file"
}

netem_bin() {
  if [[ ! -x $W/netem || $HERE/netem.c -nt $W/netem ]]; then
    gcc -O2 -Wall -o "$W/netem" "$HERE/netem.c" || die "cannot build netem.c (apt-get install gcc)"
  fi
  echo "$W/netem"
}

namespaces() {
  for ns in $CLI $MID $REG; do
    ip netns list | grep -qw "^$ns" || ip netns add "$ns"
    ip -n "$ns" link set lo up
    # a fresh start for every connection: no cached ssthresh/RTT from an earlier run
    ip netns exec "$ns" sysctl -qw net.ipv4.tcp_no_metrics_save=1
  done
}

unlink_all() {
  ip -n $CLI link del c0 2>/dev/null || true
  ip -n $REG link del r0 2>/dev/null || true
  ip -n $MID link del m0 2>/dev/null || true
  ip -n $MID link del m1 2>/dev/null || true
}

addresses() {
  ip -n $CLI addr add 10.78.0.1/24 dev c0
  ip -n $REG addr add 10.78.0.2/24 dev r0
  ip -n $CLI link set c0 up
  ip -n $REG link set r0 up
}

link() {
  local rtt=$1 mbit=$2 loss=$3 emu
  namespaces
  stop_recorded "$W/netem.pid" netem
  unlink_all
  if ((rtt == 0)); then
    ip link add c0 netns $CLI type veth peer name r0 netns $REG
    addresses
    return
  fi
  emu=$(netem_bin)
  ip link add c0 netns $CLI type veth peer name m0 netns $MID
  ip link add r0 netns $REG type veth peer name m1 netns $MID
  for d in m0 m1; do
    ip -n $MID link set $d promisc on up
    ip netns exec $MID "$emu" offload $d
  done
  ip netns exec $CLI "$emu" offload c0
  ip netns exec $REG "$emu" offload r0
  addresses
  ip netns exec $MID chrt -f 10 "$emu" bridge m0 m1 $((rtt * 500)) $((mbit * 1000000)) "$loss" 1000 \
    >>"$W/netem.log" 2>&1 </dev/null &
  echo $! >"$W/netem.pid"
  sleep 0.3
  [[ -e /proc/$(<"$W/netem.pid") ]] || { tail -3 "$W/netem.log" >&2; die "netem did not start"; }
}

registry_config() { # PORT
  cat <<EOF
version: 0.1
log: {level: info, formatter: text}
storage:
  cache: {blobdescriptor: inmemory}
  filesystem: {rootdirectory: $W/storage-$1}
  delete: {enabled: true}
  maintenance: {uploadpurging: {enabled: false}}
http:
  addr: 10.78.0.2:$1
  secret: barge-wan-bench-$1
EOF
}

regs() {
  for port in 5000 5001; do
    stop_recorded "$W/registry-$port.pid" "docker-registry serve"
    registry_config $port >"$W/registry-$port.yml"
    ip netns exec $REG setsid docker-registry serve "$W/registry-$port.yml" >>"$W/registry-$port.log" 2>&1 </dev/null &
    echo $! >"$W/registry-$port.pid"
  done
  for port in 5000 5001; do
    for _ in {1..100}; do
      ip netns exec $CLI curl -fs -o /dev/null --max-time 2 "http://10.78.0.2:$port/v2/" && continue 2
      sleep 0.2
    done
    tail -5 "$W/registry-$port.log" >&2
    die "registry :$port did not come up"
  done
}

seed() { # OCI_LAYOUT:TAG REPO:TAG
  for port in 5000 5001; do
    ip netns exec $CLI curl -fsS -o /dev/null "http://10.78.0.2:$port/v2/${2%:*}/manifests/${2##*:}" 2>/dev/null && continue
    ip netns exec $CLI skopeo copy -q --dest-tls-verify=false "oci:$1" "docker://10.78.0.2:$port/$2"
  done
}

case ${1:-} in
  link) link "${2:?RTT_MS}" "${3:?MBIT}" "${4:-0}" ;;
  cc) for ns in $CLI $REG; do ip netns exec $ns sysctl -qw net.ipv4.tcp_congestion_control="${2:?bbr|reno}"; done ;;
  regs) regs ;;
  seed) seed "${2:?OCI_LAYOUT:TAG}" "${3:?REPO:TAG}" ;;
  down)
    for port in 5000 5001; do stop_recorded "$W/registry-$port.pid" "docker-registry serve"; done
    stop_recorded "$W/netem.pid" netem
    for ns in $CLI $MID $REG; do ip netns del $ns 2>/dev/null || true; done
    ;;
  *) die "usage: bed.sh link RTT_MS MBIT LOSS_PPM | cc bbr|reno | regs | seed LAYOUT:TAG REPO:TAG | down" ;;
esac
