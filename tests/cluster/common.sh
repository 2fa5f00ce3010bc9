# shellcheck shell=bash
# Helpers shared by start.sh, stop.sh, nodes.sh and watchdog.sh (sourced).

# alive PIDFILE DIR: the process named in PIDFILE runs and belongs to this
# cluster (its command line mentions DIR), so a recycled PID is never touched.
alive() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  local cmdline
  { cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline"); } 2>/dev/null || return 1
  [[ $cmdline == *"$2"* ]]
}

# Reads the admin token and API port of cluster DIR into TOKEN and API_PORT.
cluster_env() {
  TOKEN=$(sed -n '1s/,.*//p' "$1/pki/tokens.csv")
  API_PORT=$(cat "$1/api-port")
}

# cluster_api DIR PATH [curl args...]: authenticated request to the apiserver.
cluster_api() {
  local dir=$1 path=$2
  shift 2
  curl -sS -f --max-time 10 --cacert "$dir/pki/ca.crt" \
    -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$API_PORT$path" "$@"
}
