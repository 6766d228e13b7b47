# scripts/lib/devhost.sh — devhost for the scripts that drive the whole pipeline on 127.0.0.1
# (scripts/fault-run, scripts/import-live-run). Source it after setting:
#   bin           the folder of the built binaries (devhost, handler)
#   app, state    devhost's app root and state folder
#   logs          the folder of devhost.log
#   devhost_port  the port devhost listens on
# (before calling the functions: sourcing only defines them) and defining `die MESSAGE` (prints
# and exits). Sets devhost_pid and last_restarts. Descriptor 8 is closed for the children: a
# caller may hold a lock on it.

# Fills $app from the repo's app with two changes, neither of which changes what is stored:
#  - local.settings.json: DATABASE_URL is $1, DB_CONNECT_TIMEOUT_SECONDS 2 (the handler answers
#    503 sooner while PostgreSQL is down);
#  - functions/ingest/function.json: the exponentialBackoff retry policy keeps retrying for
#    ever, but between 1 s and 5 s instead of 5 s and 5 min, so a PostgreSQL outage of a few
#    seconds does not leave a partition waiting minutes for its next attempt.
# Further settings NAME=VALUE may follow the URL.
make_app_root() {
  local database_url=$1 f name
  shift
  mkdir -p "$app"
  cp host.json "$app/"
  for f in functions/*/function.json; do
    name=$(basename "$(dirname "$f")")
    [[ $name == handler ]] && continue
    mkdir -p "$app/functions/$name"
    cp "$f" "$app/functions/$name/"
  done
  [[ -f $app/functions/ingest/function.json ]] || die "functions/ingest/function.json is missing"
  python3 - "$app" "$database_url" "$@" <<'PY'
import json, sys
app, url, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
with open("local.settings.json") as f:
    settings = json.load(f)
settings["Values"]["DATABASE_URL"] = url
settings["Values"]["DB_CONNECT_TIMEOUT_SECONDS"] = "2"
for item in extra:
    name, _, value = item.partition("=")
    settings["Values"][name] = value
with open(f"{app}/local.settings.json", "w") as f:
    json.dump(settings, f, indent=2)
path = f"{app}/functions/ingest/function.json"
with open(path) as f:
    fn = json.load(f)
retry = fn.get("retry") or {}
assert retry.get("strategy") == "exponentialBackoff" and retry.get("maxRetryCount") == -1, retry
retry["minimumInterval"], retry["maximumInterval"] = "00:00:01", "00:00:05"
with open(path, "w") as f:
    json.dump(fn, f, indent=2)
PY
}

start_devhost() {
  printf '\n===== devhost start %s =====\n' "$(date -u +%FT%TZ)" >>"$logs/devhost.log"
  "$bin/devhost" --app-root "$app" --handler "$bin/handler" --port "$devhost_port" \
    --state-dir "$state" >>"$logs/devhost.log" 2>&1 8>&- &
  devhost_pid=$!
}

# Prints the status as one line: ready restarts enqueued checkpointed drained max_retrying
# (enqueued/checkpointed: events in the hub / checkpointed, summed over partitions).
status_line() {
  local json
  json=$(curl -fsS --max-time 5 "http://127.0.0.1:$devhost_port/admin/status" 2>/dev/null) || return 1
  python3 -c '
import json, sys
s = json.load(sys.stdin)
enq = ckp = 0
drained = True
retrying = 0
for hub in s["hubs"].values():
    for p in hub["partitions"]:
        last = p["lastEnqueuedSequence"]
        enq += 0 if last is None else last + 1
        for c in p["consumers"].values():
            done = c["lastCheckpointedSequence"]
            ckp += 0 if done is None else done + 1
            retrying = max(retrying, c["retrying"])
            if done != last or c["retrying"] != 0:
                drained = False
print(int(s["handler"]["ready"]), s["handler"]["restarts"], enq, ckp, int(drained), retrying)
' <<<"$json"
}

# Waits until devhost answers and its handler is ready.
wait_devhost() {
  local deadline=$((SECONDS + 90)) line
  while (( SECONDS < deadline )); do
    kill -0 "$devhost_pid" 2>/dev/null || die "devhost exited (see $logs/devhost.log)"
    if line=$(status_line) && [[ ${line%% *} == 1 ]]; then
      return 0
    fi
    sleep 0.2
  done
  die "devhost or its handler not ready after 90 s"
}

# Waits until every consumer has checkpointed every event the hub holds, at most $1 seconds;
# leaves enq and ckp (events in the hub, checkpointed) set.
wait_drained() {
  local deadline=$((SECONDS + $1)) line ready restarts drained retrying=0
  enq=? ckp=?
  while :; do
    if line=$(status_line); then
      read -r ready restarts enq ckp drained retrying <<<"$line"
      last_restarts=$restarts
      (( drained == 1 )) && return 0
    fi
    kill -0 "$devhost_pid" 2>/dev/null || die "devhost died on its own (see $logs/devhost.log)"
    (( SECONDS < deadline )) \
      || die "not drained after ${1}s: hub holds $enq events, $ckp checkpointed, retrying $retrying"
    sleep 0.5
  done
}
