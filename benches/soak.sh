#!/usr/bin/env bash
# Soak test of the daemon (issue 5): `apitap run --interface lo` with detection and a file alert
# sink, while a local HTTP/1.1 server and a keep-alive client exchange API-like requests over
# loopback. Samples the daemon's RSS and counters every minute and prints a summary: it shows
# whether memory stays flat and whether anything is dropped over a long run. Needs root (live
# capture). The traffic is local test traffic between two processes of this script; apitap
# itself only listens.
#
#   sudo benches/soak.sh [SECONDS] [REQUESTS_PER_SECOND]     (default 1800 s at 200 requests/s)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-1800}"
RATE="${2:-200}"
DIR="${SOAK_DIR:-/tmp/apitap-soak}"
rm -rf "$DIR"; mkdir -p "$DIR/www/api/v1/items" "$DIR/model"
cargo build --release --quiet
BIN="$PWD/target/release/apitap"
for i in $(seq 1 200); do printf '{"id":%d,"name":"item %d","price":%d}' "$i" "$i" "$((i * 3))" > "$DIR/www/api/v1/items/$i"; done
cat > "$DIR/apitap.toml" <<CFG
[capture]
filter = "tcp port 18088"
[metrics]
listen = "127.0.0.1:19187"
[alert]
spool_dir = "$DIR/spool"
[alert.file]
path = "$DIR/alerts.jsonl"
[detect]
model_dir = "$DIR/model"
learning_period_secs = 300
save_interval_secs = 600
CFG
export APITAP_PSEUDONYM_KEY=soak-test-key-not-a-secret
(cd "$DIR/www" && exec python3 -m http.server 18088 --bind 127.0.0.1 >/dev/null 2>&1) &
SERVER=$!
"$BIN" run --interface lo --config "$DIR/apitap.toml" >"$DIR/daemon.log" 2>&1 &
DAEMON=$!
trap 'kill $SERVER $CLIENT $DAEMON 2>/dev/null || true' EXIT
sleep 2
cat > "$DIR/client.py" <<'PY'
import http.client, random, sys, time, base64, json
rate, duration = float(sys.argv[1]), float(sys.argv[2])
users = []
for u in range(300):
    claims = base64.urlsafe_b64encode(json.dumps({"sub": f"user-{u}", "role": "customer", "exp": 4102444800}).encode()).rstrip(b"=").decode()
    users.append("eyJhbGciOiJIUzI1NiJ9." + claims + ".c2ln")
conns = [http.client.HTTPConnection("127.0.0.1", 18088, timeout=5) for _ in range(8)]
end, sent, t = time.time() + duration, 0, time.time()
while time.time() < end:
    c = random.choice(conns)
    path = random.choice(["/api/v1/items/%d" % random.randint(1, 200), "/api/v1/items/%d" % random.randint(1, 200), "/api/v1/missing"])
    try:
        c.request("GET", path, headers={"Host": "api.soak.example", "Authorization": "Bearer " + random.choice(users)})
        c.getresponse().read()
    except Exception:
        c.close()
    sent += 1
    t += 1.0 / rate
    time.sleep(max(0.0, t - time.time()))
print(sent)
PY
python3 "$DIR/client.py" "$RATE" "$DURATION" > "$DIR/sent" &
CLIENT=$!
metric() { curl -s http://127.0.0.1:19187/metrics | awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2 } END { printf "%d", s }'; }
printf '%6s %10s %12s %8s %8s %8s %8s\n' min rss_kb transactions alerts drops flows withheld
START=$(date +%s); MINRSS=0; MAXRSS=0
while kill -0 $CLIENT 2>/dev/null; do
  sleep 60
  RSS=$(awk '/VmRSS/ {print $2}' /proc/$DAEMON/status)
  [ "$MINRSS" = 0 ] && MINRSS=$RSS; [ "$RSS" -lt "$MINRSS" ] && MINRSS=$RSS; [ "$RSS" -gt "$MAXRSS" ] && MAXRSS=$RSS
  DROPS=$(( $(metric apitap_capture_kernel_drops_total) + $(metric apitap_daemon_channel_drops_total) ))
  printf '%6d %10d %12d %8d %8d %8d %8d\n' $(( ($(date +%s) - START) / 60 )) "$RSS" "$(metric apitap_http_transactions_total)" \
    "$(metric apitap_alert_submitted_total)" "$DROPS" "$(metric apitap_flow_active_flows)" "$(metric apitap_detect_withheld_total)"
done
wait $CLIENT || true
sleep 3
TX=$(metric apitap_http_transactions_total)
kill -TERM $DAEMON; wait $DAEMON || true
echo "sent $(cat "$DIR/sent") requests in ${DURATION} s; daemon saw $TX transactions; RSS ${MINRSS}..${MAXRSS} KB; alerts in $DIR/alerts.jsonl: $(wc -l < "$DIR/alerts.jsonl" 2>/dev/null || echo 0); model saved: $(ls "$DIR/model")"
tail -3 "$DIR/daemon.log"
