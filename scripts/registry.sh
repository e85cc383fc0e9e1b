# shellcheck shell=bash
# scripts/registry.sh: a throwaway Docker "distribution" registry for demo.sh and bench.sh.
# Source it, then:
#   registry_start DIR   start docker-registry on 127.0.0.1 (a free port chosen by the kernel),
#                        with config, storage and log under DIR; sets REGISTRY=127.0.0.1:PORT
#   registry_stop        stop it again (only the process registry_start started); safe to repeat
# Call registry_stop from an EXIT trap so that the registry never outlives the script.

REGISTRY=
REGISTRY_PID=
REGISTRY_DIR=

registry_start() {
  local dir=$1 conf log secret port=
  command -v docker-registry >/dev/null || {
    echo "docker-registry not found: apt-get install docker-registry (or: make deps)" >&2
    return 1
  }
  mkdir -p "$dir/storage"
  dir=$(cd "$dir" && pwd)
  conf=$dir/config.yml
  log=$dir/registry.log
  secret=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
  # Format of /etc/docker/registry/config.yml from the docker-registry package. Port 0: the kernel
  # picks a free port, which the registry then logs as "listening on 127.0.0.1:PORT".
  cat > "$conf" <<CONF
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:0
  secret: $secret
CONF
  : > "$log"
  docker-registry serve "$conf" >>"$log" 2>&1 </dev/null &
  REGISTRY_PID=$!
  REGISTRY_DIR=$dir
  for _ in $(seq 1 100); do
    port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$log" | head -n 1)
    [[ -n $port ]] && break
    if ! kill -0 "$REGISTRY_PID" 2>/dev/null; then
      echo "docker-registry exited at start; its log ($log):" >&2
      tail -n 20 "$log" >&2
      REGISTRY_PID=
      return 1
    fi
    sleep 0.1
  done
  if [[ -z $port ]]; then
    echo "docker-registry did not start listening within 10 s; its log ($log):" >&2
    tail -n 20 "$log" >&2
    registry_stop
    return 1
  fi
  REGISTRY=127.0.0.1:$port
  for _ in $(seq 1 50); do
    curl -fsS -o /dev/null "http://$REGISTRY/v2/" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "docker-registry on $REGISTRY does not answer /v2/; its log ($log):" >&2
  tail -n 20 "$log" >&2
  registry_stop
  return 1
}

registry_stop() {
  local pid=$REGISTRY_PID
  REGISTRY_PID=
  [[ -n $pid ]] || return 0
  # Only our own process: still alive and still serving our config file.
  if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF "$REGISTRY_DIR/config.yml"; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
}
