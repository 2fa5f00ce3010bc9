# shellcheck shell=bash
# The simulated container commands (sourced by sim.sh).
#
# A container's argv (command + args) is never run as given and never handed
# to a shell. Only these are acted out, on the node's mirror directory
# $CLUSTER_DIR/nodes/<node>/<hostPath path>:
#   true | false | mkdir [-p] [-m OCTAL] [--] PATH... | rm [-r] [-f] [--] PATH...
# (also as /bin/x or `busybox x`). Anything else "succeeds" without effect.
# A PATH on a hostPath volume maps through the container's volumeMounts to
# the mirror; one that resolves (.., symlinks) outside its volume is refused
# and fails the container. Paths on other volumes or the container's own
# filesystem have no effect.

# run_pod_commands POD NODE: init containers in order, then the containers;
# echoes {init: [{name, exitCode, message}], containers: [...]}.
run_pod_commands() {
  local pod=$1 node=$2 fields=() results=() i=0 kind name workdir n argv mounts
  local failed=0 code MESSAGE
  mapfile -d '' -t fields < <(jq -j -f "$SIM_LIB/containers.jq" <<<"$pod")
  while ((i < ${#fields[@]})); do
    kind=${fields[i]} name=${fields[i + 1]} workdir=${fields[i + 2]} n=${fields[i + 3]}
    argv=("${fields[@]:i + 4:n}")
    i=$((i + 4 + n))
    n=${fields[i]}
    mounts=("${fields[@]:i + 1:n * 2}")
    i=$((i + 1 + n * 2))
    code=0 MESSAGE=""
    if ((failed)); then
      # Init containers after a failed one never run; containers wait.
      [[ $kind == init ]] && continue
    else
      sim_exec || code=$?
      log_debug "pod $POD_NS/$POD_NAME container $name: exit $code${MESSAGE:+: $MESSAGE}"
      [[ $kind == init && $code != 0 ]] && failed=1
    fi
    results+=("$kind" "$name" "$code" "$MESSAGE")
  done
  jq -n -c '[$ARGS.positional | _nwise(4) | {kind: .[0], name: .[1], exitCode: (.[2] | tonumber)}
      + (if .[3] == "" then {} else {message: .[3]} end)]
    | {init: map(select(.kind == "init") | del(.kind)),
       containers: map(select(.kind == "main") | del(.kind))}' --args "${results[@]}"
}

# Acts out argv (set by run_pod_commands); returns the exit code.
sim_exec() {
  ((${#argv[@]})) || return 0
  local cmd=${argv[0]##*/}
  if [[ $cmd == busybox && ${#argv[@]} -gt 1 ]]; then
    argv=("${argv[@]:1}")
    cmd=${argv[0]##*/}
  fi
  case $cmd in
    true) return 0 ;;
    false) return 1 ;;
    mkdir) sim_mkdir "${argv[@]:1}" ;;
    rm) sim_rm "${argv[@]:1}" ;;
    *) log_debug "not simulated, counts as success: ${argv[*]}"; return 0 ;;
  esac
}

sim_mkdir() {
  local parents=0 paths=() a done=0 mode=
  while (($#)); do
    a=$1
    shift
    if ((done)) || [[ $a != -?* ]]; then paths+=("$a"); continue; fi
    case $a in
      --) done=1 ;;
      -p|--parents|-pv|-vp) parents=1 ;;
      -v|--verbose) ;;
      -m|--mode) mode=${1:-}; shift || true ;;
      -m*|--mode=*) mode=${a#-m}; mode=${mode#--mode=} ;;
      *) log_debug "mkdir option $a not simulated, counts as success"; return 0 ;;
    esac
  done
  if [[ -n $mode && ! $mode =~ ^[0-7]{3,4}$ ]]; then
    log_debug "mkdir mode $mode not simulated, counts as success"
    return 0
  fi
  MKDIR_MODE=$mode on_host_paths mkdir "$parents" "${paths[@]}"
}

sim_rm() {
  local recursive=0 paths=() a done=0
  for a in "$@"; do
    if ((done)) || [[ $a != -?* ]]; then paths+=("$a"); continue; fi
    case $a in
      --) done=1 ;;
      --recursive) recursive=1 ;;
      --force|--verbose) ;;
      -*[!rRfv]*) log_debug "rm option $a not simulated, counts as success"; return 0 ;;
      -*[rR]*) recursive=1 ;;
    esac
  done
  on_host_paths rm "$recursive" "${paths[@]}"
}

# on_host_paths mkdir|rm FLAG PATH...: maps every PATH first (a refused one
# fails the command before anything is done), then acts on the mapped ones.
on_host_paths() {
  local op=$1 flag=$2 p mapped=() out
  shift 2
  if (($# == 0)); then MESSAGE="$op: missing operand"; return 1; fi
  for p in "$@"; do
    map_path "$p" || return 1
    [[ -n $MAPPED ]] && mapped+=("$MAPPED")
  done
  for p in "${mapped[@]}"; do
    if [[ $op == mkdir ]]; then
      local opts=()
      ((flag)) && opts=(-p)
      [[ -z ${MKDIR_MODE:-} ]] || opts+=(-m "$MKDIR_MODE")
      out=$(mkdir "${opts[@]}" -- "$p" 2>&1) || { MESSAGE=${out//$CLUSTER_DIR/}; return 1; }
    else
      out=$(rm_confined "$flag" "$p" 2>&1) || { MESSAGE=${out//$CLUSTER_DIR/}; return 1; }
    fi
    log_info "simulated $op on node path ${p#"$CLUSTER_DIR/nodes/"}"
  done
}

# rm -f, or rm -rf; the volume's own directory (a mount point) keeps existing.
rm_confined() {
  if [[ $2 == "$VOLUME_ROOT" ]]; then
    (($1)) || { echo "rm: cannot remove '$2': Is a directory"; return 1; }
    find "$2" -mindepth 1 -delete
  elif (($1)); then
    rm -rf -- "$2"
  else
    rm -f -- "$2"
  fi
}

# map_path PATH: sets MAPPED to the node-mirror path of the container path
# PATH ("" when it is on no hostPath volume) and VOLUME_ROOT; returns 1 with
# MESSAGE set when it resolves outside its volume.
map_path() {
  local path=$1 i mp best=-1 host="" rest="" node_root
  [[ $path == /* ]] || path=$workdir/$path
  while [[ $path == *//* ]]; do path=${path//\/\//\/}; done
  for ((i = 0; i + 1 < ${#mounts[@]}; i += 2)); do
    mp=${mounts[i]%/}
    if [[ $path == "$mp" || $path == "$mp"/* ]] && ((${#mp} > best)); then
      best=${#mp} host=${mounts[i + 1]} rest=${path#"$mp"}
    fi
  done
  MAPPED=""
  [[ -n $host ]] || return 0
  node_root=$(realpath -m -- "$CLUSTER_DIR/nodes/$node")
  VOLUME_ROOT=$(realpath -m -- "$node_root/$host")
  MAPPED=$(realpath -m -- "$VOLUME_ROOT/$rest")
  if [[ $VOLUME_ROOT != "$node_root"/* || ($MAPPED != "$VOLUME_ROOT" && $MAPPED != "$VOLUME_ROOT"/*) ]]; then
    MESSAGE="simulator refused $1: it resolves outside the hostPath volume ($host) of node $node"
    log_warning "pod $POD_NS/$POD_NAME: $MESSAGE"
    MAPPED=""
    return 1
  fi
}

# A kubelet creates hostPath DirectoryOrCreate volumes before the containers.
prepare_host_paths() {
  local pod=$1 node=$2 path node_root dir
  node_root=$(realpath -m -- "$CLUSTER_DIR/nodes/$node")
  while IFS= read -r -d '' path; do
    dir=$(realpath -m -- "$node_root/$path")
    if [[ $dir == "$node_root"/* ]]; then
      mkdir -p -- "$dir"
    else
      log_warning "pod $POD_NS/$POD_NAME: hostPath $path is outside node $node, not created"
    fi
  done < <(jq -j '.spec.volumes[]? | select(.hostPath.type == "DirectoryOrCreate")
                  | .hostPath.path, "\u0000"' <<<"$pod")
}
