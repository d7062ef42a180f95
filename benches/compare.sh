#!/usr/bin/env bash
# Side-by-side throughput benchmark of `apitap flows` against tshark and Suricata (HTTP-only eve)
# on one generated API capture. Prints Gbps, packets/s, transactions/s and peak RSS per tool.
#
#   benches/compare.sh [SIZE_MB]          (default 1100: a capture of at least 1 GB)
#
# Environment: BENCH_DIR (default /tmp/apitap-bench), BENCH_INSTALL=1 installs tshark and
# Suricata (bookworm-backports) when missing, BENCH_PEERS="tshark suricata" selects peers.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB="${1:-1100}"
DIR="${BENCH_DIR:-/tmp/apitap-bench}"
PEERS="${BENCH_PEERS:-suricata tshark}"
mkdir -p "$DIR"

if [ "${BENCH_INSTALL:-0}" = 1 ]; then
  export DEBIAN_FRONTEND=noninteractive
  command -v tshark >/dev/null || apt-get install -y -qq tshark >/dev/null
  if ! command -v suricata >/dev/null; then
    if [ ! -f /etc/apt/sources.list.d/backports.sources ]; then
      printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        > /etc/apt/sources.list.d/backports.sources
      apt-get update -qq
    fi
    apt-get install -y -qq -t bookworm-backports suricata >/dev/null
  fi
fi

cargo build --release --quiet
BIN=target/release/apitap
PCAP="$DIR/api-${SIZE_MB}mb.pcap"
if [ ! -f "$PCAP" ]; then
  echo "generating $PCAP ..." >&2
  "$BIN" generate --out "$PCAP" --seed 7 --size-mb "$SIZE_MB"
fi
BYTES=$(stat -c %s "$PCAP")

# Runs a command under GNU time with stdout to $OUT and stderr to $ERR; prints "seconds peak_kb".
OUT="$DIR/stdout"
ERR="$DIR/stderr"
measure() {
  local log="$DIR/time"
  /usr/bin/time -f '%e %M' -o "$log" "$@" >"$OUT" 2>"$ERR" || { tail -5 "$ERR" >&2; return 1; }
  cat "$log"
}

report() { # name seconds peak_kb packets transactions
  python3 - "$@" "$BYTES" <<'PY'
import sys
name, secs, kb, pkts, tx, size = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
secs = max(secs, 1e-3)
print(f"{name:<22} {secs:8.2f} s {size*8/secs/1e9:7.3f} Gbps {pkts/secs:12,.0f} pkt/s {tx/secs:11,.0f} tx/s {kb/1024:8.1f} MB peak RSS  ({tx:,} tx)")
PY
}

command -v /usr/bin/time >/dev/null || { echo "needs GNU time (apt-get install time)" >&2; exit 1; }
echo "capture: $PCAP ($BYTES bytes)"
# Output goes to /dev/null as in the issue's figure; the transaction count comes from the
# summary line apitap prints on stderr.
read -r SECS KB < <(OUT=/dev/null measure "$BIN" flows "$PCAP")
PKTS=$(sed -n 's/^apitap: \([0-9]*\) packets.*/\1/p' "$ERR" | head -1)
TX=$(sed -n 's/^apitap: .* flows, \([0-9]*\) transactions.*/\1/p' "$ERR" | head -1)
report "apitap flows" "$SECS" "$KB" "$PKTS" "$TX"

for peer in $PEERS; do
  case "$peer" in
    tshark)
      command -v tshark >/dev/null || { echo "tshark: not installed (BENCH_INSTALL=1)"; continue; }
      read -r SECS KB < <(measure tshark -n -r "$PCAP" -d tcp.port==80,http -d tcp.port==8080,http \
        -Y 'http.request || http.response' -T fields -e frame.time_epoch -e ip.src -e http.request.method \
        -e http.host -e http.request.uri -e http.response.code)
      TTX=$(awk -F'\t' '$3 != ""' "$OUT" | wc -l)
      report "tshark -Y http" "$SECS" "$KB" "$PKTS" "$TTX"
      ;;
    suricata)
      command -v suricata >/dev/null || { echo "suricata: not installed (BENCH_INSTALL=1)"; continue; }
      CONF="${SURICATA_CONF:-../shared/bench/suricata-http-only.yaml}"
      for mode in single autofp; do
        SDIR="$DIR/suricata-$mode"; rm -rf "$SDIR"; mkdir -p "$SDIR"
        args=(-c "$CONF" --disable-detection -k none -r "$PCAP" -l "$SDIR")
        [ "$mode" = single ] && args+=(--runmode single)
        read -r SECS KB < <(measure suricata "${args[@]}")
        STX=$(grep -c '"event_type":"http"' "$SDIR/eve.json" || true)
        report "suricata ($mode)" "$SECS" "$KB" "$PKTS" "$STX"
      done
      ;;
  esac
done
