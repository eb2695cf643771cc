#!/usr/bin/env bash
# kill9-demo: the durability walkthrough, scripted with the CLI.
# Starts dfsmrd on a fresh file, starts 200 report instances (one of them
# twice), leases and transitions each, kills the server with SIGKILL,
# restarts it on the same file and checks that every acknowledged
# transition is there and that the changelog is gap-free.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'kill -9 $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/dfsmrd" ./cmd/dfsmrd
go build -o "$work/dfsmr" ./cmd/dfsmr
addr=127.0.0.1:${PORT:-5093}
export DFSMR_ADDR=$addr
cli="$work/dfsmr"

serve() {
  "$work/dfsmrd" --addr "$addr" --db "$work/dfsmr.db" 2>>"$work/server.log" &
  pid=$!
  for _ in $(seq 100); do "$cli" machines >/dev/null 2>&1 && return; sleep 0.1; done
  echo "server did not start" >&2; exit 1
}

serve
for i in $(seq -w 1 200); do "$cli" start report --id "r-$i" -o json >/dev/null; done
"$cli" start report --id r-001 | grep -q "already exists"
echo "started 200 instances; starting r-001 again returned the existing one"

: >"$work/acked"
for _ in $(seq 200); do
  read -r id token < <("$cli" ready --machine report --worker demo -o json |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["instance"]["id"], r["lease"]["token"])')
  "$cli" transition "$id" "$token" ok -o json >/dev/null
  echo "$id" >>"$work/acked"
done
echo "leased and transitioned $(wc -l <"$work/acked") instances"

kill -9 "$pid"; wait "$pid" 2>/dev/null || true
echo "killed dfsmrd with SIGKILL; restarting on the same file"
serve

moved=$("$cli" instances --machine report --node uploadable -o json | wc -l)
echo "instances in uploadable after restart: $moved (acknowledged: $(wc -l <"$work/acked"))"
[ "$moved" -eq "$(wc -l <"$work/acked")" ]

"$cli" changes --from 1 -o json | python3 -c '
import json, sys
seqs = [int(json.loads(l)["seq"]) for l in sys.stdin]
assert seqs == list(range(1, len(seqs) + 1)), "gap in the changelog"
print(f"changelog 1..{len(seqs)} is gap-free")
'
kill "$pid"
