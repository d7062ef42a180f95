#!/usr/bin/env bash
# Detection cost (issue 4): `apitap detect` against `apitap flows` on the same capture, side by
# side in one run. Uses the scenario suite's benign hour (~178k transactions at ~50 requests/s)
# and a model learned from its four training hours. Prints user CPU seconds, transactions/s and
# the slowdown ratio of each mode against flows (best of RUNS runs each).
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

best() { # best user CPU seconds of RUNS runs of "$@"
  local b=""
  for _ in $(seq "$RUNS"); do
    local t
    /usr/bin/time -o "$DIR/time" -f "%U" "$@" >/dev/null 2>&1
    t=$(tail -1 "$DIR/time")
    if [ -z "$b" ] || awk "BEGIN{exit !($t < $b)}"; then b=$t; fi
  done
  echo "$b"
}
FLOWS=$(best "$BIN" flows --quiet benign.pcap)
DETECT=$(best "$BIN" detect --config apitap.toml --spec spec.yaml --model model --alerts /dev/null benign.pcap)
ADAPT=$(best "$BIN" detect --adapt --config apitap.toml --spec spec.yaml --model model --alerts /dev/null benign.pcap)
echo "benign hour: $TX transactions; user CPU seconds, best of $RUNS"
awk -v tx="$TX" -v f="$FLOWS" -v d="$DETECT" -v a="$ADAPT" 'BEGIN {
  printf "%-22s %8s %12s %10s\n", "mode", "cpu s", "tx/s", "vs flows";
  printf "%-22s %8.2f %12.0f %10s\n", "flows", f, tx / f, "1.00x";
  printf "%-22s %8.2f %12.0f %9.2fx\n", "detect", d, tx / d, d / f;
  printf "%-22s %8.2f %12.0f %9.2fx\n", "detect --adapt", a, tx / a, a / f;
}'

if [ "${INSTRUCTIONS:-0}" = 1 ]; then
  [ -f small.pcap ] || "$BIN" generate --scenario security-benign --hours 0.2 --out small.pcap
  [ -f tiny.pcap ] || "$BIN" generate --scenario security-benign --hours 0.0003 --out tiny.pcap
  ir() { valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null "$@" 2>&1 >/dev/null |
    sed -n 's/.*I *refs: *//p' | tr -d ,; }
  DET=(detect --config apitap.toml --spec spec.yaml --model model --alerts /dev/null)
  IF=$(ir "$BIN" flows --quiet small.pcap)
  ID=$(ir "$BIN" "${DET[@]}" small.pcap)
  IT=$(ir "$BIN" "${DET[@]}" tiny.pcap)
  awk -v f="$IF" -v d="$ID" -v t="$IT" 'BEGIN {
    printf "instructions on the 0.2-hour sample: flows %.2f G, detect %.2f G (start-up %.2f G)\n", f/1e9, d/1e9, t/1e9;
    printf "detect vs flows: %.2fx, %.2fx without start-up\n", d / f, (d - t) / f;
  }'
fi
