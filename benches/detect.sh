#!/usr/bin/env bash
# Detection cost (issue 4): `apitap detect` against `apitap flows` on the same capture, side by
# side in one run. Uses the scenario suite's benign hour (~178k transactions at ~50 requests/s)
# and a model learned from its four training hours. Prints, for each mode against flows (best of
# RUNS runs each): user CPU seconds and their ratio (the cost of detection: one thread does all
# the work), and wall seconds, transactions/s and their ratio (throughput: by default detect reads
# packets on one thread and detects on another, as the daemon does). Needs 2 free cores for
# the wall figures to mean anything.
#
#   benches/detect.sh            (BENCH_DIR, default /tmp/apitap-detect-bench; RUNS, default 3)
#
# With INSTRUCTIONS=1 (needs valgrind) it also counts instructions retired, which a busy shared
# machine does not disturb: flows and detect on a 0.2-hour benign sample, and detect on a
# 77-transaction capture for its fixed start-up cost (model load; under valgrind the model's
# SHA-256 check runs without CPU extensions, which inflates that part), so the per-transaction
# ratio leaves the start-up out.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${BENCH_DIR:-/tmp/apitap-detect-bench}"
RUNS="${RUNS:-3}"
mkdir -p "$DIR"
cargo build --release --quiet
BIN="$PWD/target/release/apitap"
export APITAP_PSEUDONYM_KEY=detect-bench-key-not-a-secret
cd "$DIR"
printf '[identity]\ntrusted_proxies = ["10.0.0.0/24"]\n[detect.signatures]\ntls_terminated_servers = ["10.1.0.0/24"]\n' > apitap.toml
[ -f train.pcap ] || "$BIN" generate --scenario security-train --out train.pcap
[ -f benign.pcap ] || "$BIN" generate --scenario security-benign --out benign.pcap
[ -f spec.yaml ] || "$BIN" generate --scenario security-attack --hours 0.01 --out /dev/null --spec-out spec.yaml --labels /dev/null
[ -f model/model.json ] || "$BIN" learn --config apitap.toml --spec spec.yaml --model model train.pcap
TX=$("$BIN" flows benign.pcap 2>&1 >/dev/null | sed -n 's/.* \([0-9]*\) transactions,.*/\1/p')

best() { # best user CPU seconds and best wall seconds of RUNS runs of "$@"
  local bu="" bw=""
  for _ in $(seq "$RUNS"); do
    local u w
    /usr/bin/time -o "$DIR/time" -f "%U %e" "$@" >/dev/null 2>&1
    read -r u w < <(tail -1 "$DIR/time")
    if [ -z "$bu" ] || awk "BEGIN{exit !($u < $bu)}"; then bu=$u; fi
    if [ -z "$bw" ] || awk "BEGIN{exit !($w < $bw)}"; then bw=$w; fi
  done
  echo "$bu $bw"
}
DET=(detect --config apitap.toml --spec spec.yaml --model model --alerts /dev/null)
read -r FLOWS FLOWS_W < <(best "$BIN" flows --quiet benign.pcap)
read -r ONE ONE_W < <(best "$BIN" "${DET[@]}" --threads 1 benign.pcap)
read -r TWO TWO_W < <(best "$BIN" "${DET[@]}" benign.pcap)
read -r ADAPT ADAPT_W < <(best "$BIN" "${DET[@]}" --threads 1 --adapt benign.pcap)
echo "benign hour: $TX transactions; best of $RUNS runs; CPU = user seconds, wall = elapsed seconds"
awk -v tx="$TX" -v f="$FLOWS" -v fw="$FLOWS_W" -v o="$ONE" -v ow="$ONE_W" -v t="$TWO" -v tw="$TWO_W" \
    -v a="$ADAPT" -v aw="$ADAPT_W" 'BEGIN {
  printf "%-26s %7s %9s %7s %10s %9s\n", "mode", "CPU s", "CPU ratio", "wall s", "tx/s wall", "wall ratio";
  printf "%-26s %7.2f %9s %7.2f %10.0f %9s\n", "flows", f, "1.00x", fw, tx / fw, "1.00x";
  printf "%-26s %7.2f %8.2fx %7.2f %10.0f %8.2fx\n", "detect --threads 1", o, o / f, ow, tx / ow, ow / fw;
  printf "%-26s %7.2f %8.2fx %7.2f %10.0f %8.2fx\n", "detect (2 threads)", t, t / f, tw, tx / tw, tw / fw;
  printf "%-26s %7.2f %8.2fx %7.2f %10.0f %8.2fx\n", "detect --threads 1 --adapt", a, a / f, aw, tx / aw, aw / fw;
}'

if [ "${INSTRUCTIONS:-0}" = 1 ]; then
  [ -f small.pcap ] || "$BIN" generate --scenario security-benign --hours 0.2 --out small.pcap
  [ -f tiny.pcap ] || "$BIN" generate --scenario security-benign --hours 0.0003 --out tiny.pcap
  ir() { valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null "$@" 2>&1 >/dev/null |
    sed -n 's/.*I *refs: *//p' | tr -d ,; }
  DET+=(--threads 1)
  IF=$(ir "$BIN" flows --quiet small.pcap)
  ID=$(ir "$BIN" "${DET[@]}" small.pcap)
  IT=$(ir "$BIN" "${DET[@]}" tiny.pcap)
  awk -v f="$IF" -v d="$ID" -v t="$IT" 'BEGIN {
    printf "instructions on the 0.2-hour sample: flows %.2f G, detect %.2f G (start-up %.2f G)\n", f/1e9, d/1e9, t/1e9;
    printf "detect vs flows: %.2fx, %.2fx without start-up\n", d / f, (d - t) / f;
  }'
fi
