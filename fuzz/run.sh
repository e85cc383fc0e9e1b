#!/usr/bin/env bash
# Runs barge's fuzz targets (used by `make fuzz` and `make fuzz-smoke`).
#
#   fuzz/run.sh SECONDS [TARGET...]    each target (default: all) for SECONDS, one after another
#
# Builds the targets with `cargo +nightly fuzz build`, then runs each binary on
# fuzz/corpus-grown/TARGET (what the fuzzer adds; not committed) and the committed
# seeds fuzz/corpus/TARGET. Findings land in fuzz/artifacts/TARGET/, logs in
# fuzz/logs/TARGET.log. Prints one line per target (executions, exec/s, corpus,
# findings) and exits 1 if any target found a crash, timeout or OOM.
#
# The unpack target writes files: run as root where unshare(1) works, it runs in
# its own mount namespace where everything but fuzz/ is read-only and its scratch
# directory is a private tmpfs (fast, and gone afterwards), so a containment bug cannot
# write anywhere else on the machine.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(reference manifest auth credentials http_response gzip unpack registries_conf zstd archive)
fi
toolchain=${FUZZ_TOOLCHAIN:-nightly}
bin=target/x86_64-unknown-linux-gnu/release
export BARGE_FUZZ_SCRATCH=${BARGE_FUZZ_SCRATCH:-${TMPDIR:-/tmp}/barge-fuzz-unpack}

mkdir -p logs
for t in "${targets[@]}"; do
  # One build per target (cargo fuzz builds one or all); after the first, each is quick.
  cargo "+$toolchain" fuzz build -O "$t" >logs/build.log 2>&1 || {
    cat logs/build.log >&2
    exit 1
  }
done

# Runs "$@" with the whole file system read-only except fuzz/, on a tmpfs scratch directory.
sandboxed() {
  mkdir -p "$BARGE_FUZZ_SCRATCH"
  if [[ $(id -u) == 0 ]] && unshare --mount --propagation private true 2>/dev/null; then
    unshare --mount --propagation private -- sh -c \
      'mount --bind "$1" "$1" && mount -t tmpfs -o size=1g barge-fuzz "$2" && mount -o remount,bind,ro / && shift 2 && exec "$@"' \
      sh "$here" "$BARGE_FUZZ_SCRATCH" "$@"
  else
    "$@"
  fi
}

found=0
printf '%-14s %12s %8s %8s %s\n' target executions exec/s corpus findings
for t in "${targets[@]}"; do
  mkdir -p "corpus-grown/$t" "artifacts/$t"
  before=$(find "artifacts/$t" -type f | wc -l)
  run=("$bin/$t" "corpus-grown/$t" "corpus/$t" "-max_total_time=$seconds" -timeout=10
    -rss_limit_mb=2048 -print_final_stats=1 "-artifact_prefix=artifacts/$t/")
  [[ $t == http_response ]] && run+=(-max_len=65536)
  status=0
  if [[ $t == unpack ]]; then
    sandboxed "${run[@]}" >"logs/$t.log" 2>&1 || status=$?
  else
    "${run[@]}" >"logs/$t.log" 2>&1 || status=$?
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "logs/$t.log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "logs/$t.log" | tail -1)
  corpus=$(grep -o 'corp: [0-9]*' "logs/$t.log" | tail -1 | cut -d' ' -f2)
  new=$(($(find "artifacts/$t" -type f | wc -l) - before))
  if ((status != 0 || new > 0)); then
    found=1
    what="$new new in fuzz/artifacts/$t/ (exit $status; see fuzz/logs/$t.log)"
  else
    what=none
  fi
  printf '%-14s %12s %8s %8s %s\n' "$t" "${execs:-?}" "${rate:-?}" "${corpus:-?}" "$what"
done
exit "$found"
