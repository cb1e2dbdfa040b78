#!/usr/bin/env bash
# The wrk suite: gopher-equalizer next to nginx, HAProxy and Caddy, on the
# same three backends, on this machine, in one run. Traffic goes to
# 127.0.0.1 only; every process started here is stopped by PID on exit,
# including on Ctrl-C.
#
#   bench/run.sh                      # full run: 3 rounds x {64,256} connections x 10 s
#   ROUNDS=1 DURATION=3 bench/run.sh  # a quick look
#   BASELINE=48d227b bench/run.sh     # also gopher-equalizer built from an
#                                     # earlier commit, interleaved in the same run
#   BASELINE="18ae6b3 919b32e" ...    # several earlier commits, one target each
#   PROTOTYPE=experiment/event-loop bench/run.sh
#                                     # also the event-loop prototype built from
#                                     # that branch (bench/eventloop there)
#   PERF=1 bench/run.sh               # also system calls and context switches
#                                     # per request (perf stat on the target)
#   ONLY='100k' bench/run.sh          # only the targets whose name matches
#   BACKEND=nethttp bench/run.sh      # net/http backends instead of fasthttp ones
#
# Output: a Markdown table on stdout and in bench/out/results.md, raw wrk
# output in bench/out/, a chart in bench/out/chart.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${ROUNDS:-3}
BACKEND=${BACKEND:-fasthttp} # or nethttp: Go's net/http backends, closer to what users run
DURATION=${DURATION:-10}
CONNS=${CONNS:-"64 256"}
WRK_THREADS=${WRK_THREADS:-2}
OUT=${OUT:-$ROOT/bench/out}
WORK=$(mktemp -d /tmp/equalizer-bench.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$OUT"
rm -f "$OUT"/*.txt "$OUT"/results.tsv "$OUT"/pg.tsv

PIDS=()
PGDATA=""
PGBIN=""
cleanup() {
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$PGDATA" ]; then runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" stop -m immediate >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need() {
  local missing=()
  for tool in wrk nginx haproxy caddy; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} from Debian packages" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}
need

echo "building" >&2
go build -o "$WORK/equalizer" ./cmd/equalizer
go build -tags nometrics -o "$WORK/equalizer-nometrics" ./cmd/equalizer
go build -o "$WORK/backend" ./bench/backend
go build -o "$WORK/report" ./bench/report
for rev in ${BASELINE:-}; do
  mkdir -p "$WORK/baseline-$rev-src"
  git archive "$rev" | tar -x -C "$WORK/baseline-$rev-src"
  (cd "$WORK/baseline-$rev-src" && go build -o "$WORK/equalizer-baseline-$rev" ./cmd/equalizer)
done
if [ -n "${PROTOTYPE:-}" ]; then
  mkdir -p "$WORK/prototype-src"
  ref=$PROTOTYPE # a clone has the branch as origin/<name>
  git rev-parse -q --verify "$ref^{commit}" >/dev/null || ref=origin/$PROTOTYPE
  git archive "$ref" | tar -x -C "$WORK/prototype-src"
  (cd "$WORK/prototype-src" && go build -o "$WORK/eventloop" ./bench/eventloop)
fi
PERF=${PERF:-0}
if [ "$PERF" = 1 ] && ! command -v perf >/dev/null; then
  echo "installing linux-perf for PERF=1" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null
fi

# start NAME CMD... runs a process in the background and records its PID.
start() {
  local name=$1; shift
  "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
}

url_of() { case $1 in *://*) echo "$1/" ;; *) echo "http://$1/" ;; esac; }
wait_http() { # wait until the target ($1: host:port or https://host:port) answers at all
  for _ in $(seq 1 200); do
    if curl -sk -o /dev/null -m 1 "$(url_of "$1")" -H 'X-Client: warmup'; then return 0; fi
    sleep 0.05
  done
  echo "$1 did not come up; the logs:" >&2
  tail -n 5 "$WORK"/*.log >&2
  exit 1
}

B1=127.0.0.1:9101 B2=127.0.0.1:9102 B3=127.0.0.1:9103
start backend "$WORK/backend" -impl "$BACKEND" $B1 $B2 $B3
wait_http $B1

BACKENDS="http://$B1,http://$B2,http://$B3"
eq() { # eq NAME PORT [VAR=VALUE...]: gopher-equalizer with logging at warn
  local name=$1 port=$2; shift 2
  start "$name" env -i PATH="$PATH" EQUALIZER_LISTEN=127.0.0.1:$port EQUALIZER_ADMIN_LISTEN=127.0.0.1:$((port + 1000)) \
    EQUALIZER_BACKENDS="$BACKENDS" EQUALIZER_LOG_LEVEL=warn \
    EQUALIZER_BUCKET_CAPACITY=1000000000 EQUALIZER_BUCKET_REFILL_AMOUNT=1000000000 "$@" "${EQ_BIN:-$WORK/equalizer}"
}

# A throwaway PostgreSQL for the persistence run, as the tests make one.
PGBIN=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PGDATA=$WORK/pg
PGPORT=9400
mkdir -p "$PGDATA" && chown postgres "$WORK" "$PGDATA"
runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust --no-sync >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -w -l "$WORK/pg.log" \
  -o "-p $PGPORT -k $WORK -c listen_addresses=127.0.0.1" start >/dev/null

eq equalizer 9201
eq equalizer-nolimit 9202 EQUALIZER_RATE_LIMIT=false
eq equalizer-pg 9203 EQUALIZER_DATABASE_URL="postgres://postgres@127.0.0.1:$PGPORT/postgres?sslmode=disable"
eq equalizer-header 9204 EQUALIZER_CLIENT_KEY=header:X-Client
eq equalizer-pg-header 9207 EQUALIZER_CLIENT_KEY=header:X-Client \
  EQUALIZER_DATABASE_URL="postgres://postgres@127.0.0.1:$PGPORT/postgres?sslmode=disable"
# The same, but a token takes 2 s to refill, longer than a spend waits to be
# synced: no bucket is full again at its sync, so every client's spending is
# written (the worst case for the store: a row per client per
# EQUALIZER_PERSIST_INTERVAL). A million tokens: nobody is refused. A
# database of its own: in the other one the same keys' rows carry the other
# target's rate, which this instance would adopt.
runuser -u postgres -- "$PGBIN/createdb" -h 127.0.0.1 -p $PGPORT -U postgres spending
eq equalizer-pg-spending 9206 EQUALIZER_CLIENT_KEY=header:X-Client EQUALIZER_BUCKET_CAPACITY=1000000 \
  EQUALIZER_BUCKET_REFILL_AMOUNT=1 EQUALIZER_BUCKET_REFILL_INTERVAL=2s \
  EQUALIZER_DATABASE_URL="postgres://postgres@127.0.0.1:$PGPORT/spending?sslmode=disable"
BASELINE_TARGETS=()
port=9220
for rev in ${BASELINE:-}; do
  EQ_BIN=$WORK/equalizer-baseline-$rev eq "equalizer-baseline-$rev" $port
  BASELINE_TARGETS+=("gopher-equalizer-baseline-$rev 127.0.0.1:$port")
  port=$((port + 1))
done
[ -n "${PROTOTYPE:-}" ] && start eventloop "$WORK/eventloop" -listen 127.0.0.1:9219 -backends "$B1,$B2,$B3"
EQ_BIN=$WORK/equalizer-nometrics eq equalizer-nometrics 9208
eq equalizer-access-log 9209 EQUALIZER_ACCESS_LOG=stdout # start() sends stdout to a file
start equalizer-429 env -i PATH="$PATH" EQUALIZER_LISTEN=127.0.0.1:9205 EQUALIZER_ADMIN_LISTEN=127.0.0.1:10205 \
  EQUALIZER_BACKENDS="$BACKENDS" EQUALIZER_LOG_LEVEL=warn \
  EQUALIZER_BUCKET_CAPACITY=1 EQUALIZER_BUCKET_REFILL_AMOUNT=1 EQUALIZER_BUCKET_REFILL_INTERVAL=24h "$WORK/equalizer"

# One self-signed certificate for the TLS targets (gopher-equalizer and
# nginx with 2 workers terminate TLS with it; wrk does not verify).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -keyout "$WORK/tls.key" -out "$WORK/tls.pem" 2>/dev/null
eq equalizer-tls 9210 EQUALIZER_TLS_CERT="$WORK/tls.pem" EQUALIZER_TLS_KEY="$WORK/tls.key"

# A route table of 10 (hosts and path prefixes, as sites write them); wrk's
# requests match only the last one, so every route is tried.
{
  echo "routes:"
  for i in 0 1 2 3 4 5 6 7 8; do
    echo "  - {name: r$i, match: {host: h$i.example.com, path_prefix: /svc$i/, methods: [GET, POST]}}"
  done
  echo "  - {name: rest, match: {path_prefix: /}}"
} >"$WORK/routes10.yaml"
eq equalizer-10-routes 9211 EQUALIZER_CONFIG_FILE="$WORK/routes10.yaml"

# Three limits on the route (the default, a per-minute one by address and
# a per-day one by a header wrk does not send: keyed by address), none
# refusing: what charging several limits costs against the one default.
cat >"$WORK/limits3.yaml" <<YAML
limits:
  per-min: {key: ip, capacity: 1000000000, rate: 1000000000/m}
  per-day: {key: "header:X-Api-Key", capacity: 1000000000, rate: 1000000000/d}
routes:
  - {name: all, match: {}, limits: [default, per-min, per-day]}
YAML
eq equalizer-3-limits 9212 EQUALIZER_CONFIG_FILE="$WORK/limits3.yaml"

for workers in 1 2; do
  tls_server=""
  [ "$workers" = 2 ] && tls_server="server {
    listen 127.0.0.1:9303 ssl;
    ssl_certificate $WORK/tls.pem;
    ssl_certificate_key $WORK/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }
  }"
  cat >"$WORK/nginx$workers.conf" <<CONF
worker_processes $workers;
pid $WORK/nginx$workers.pid;
error_log stderr crit;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx-body;
  proxy_temp_path $WORK/nginx-proxy;
  fastcgi_temp_path $WORK/nginx-fcgi;
  uwsgi_temp_path $WORK/nginx-uwsgi;
  scgi_temp_path $WORK/nginx-scgi;
  upstream backends { server $B1; server $B2; server $B3; keepalive 512; }
  server {
    listen 127.0.0.1:930$workers;
    location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
  $tls_server
}
CONF
  start "nginx-$workers" nginx -c "$WORK/nginx$workers.conf" -g 'daemon off;' -e stderr

  cat >"$WORK/haproxy$workers.cfg" <<CONF
global
  nbthread $workers
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:931$workers
  default_backend be
backend be
  balance roundrobin
  server b1 $B1
  server b2 $B2
  server b3 $B3
CONF
  start "haproxy-$workers" haproxy -db -f "$WORK/haproxy$workers.cfg"
done

cat >"$WORK/Caddyfile" <<CONF
{
  admin off
  auto_https off
}
http://127.0.0.1:9320 {
  reverse_proxy $B1 $B2 $B3 {
    lb_policy round_robin
  }
}
CONF
start caddy env HOME="$WORK" XDG_DATA_HOME="$WORK" XDG_CONFIG_HOME="$WORK" caddy run --config "$WORK/Caddyfile" --adapter caddyfile

cat >"$WORK/single.lua" <<'LUA'
wrk.headers["X-Client"] = "one-client"
LUA
cat >"$WORK/many.lua" <<'LUA'
-- Spread requests over 100,000 client keys.
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, { ["X-Client"] = "client-" .. ((n * 7919) % 100000) })
end
LUA

# name address [lua script]
TARGETS=(
  "direct-backend $B1"
  "gopher-equalizer 127.0.0.1:9201"
  "gopher-equalizer-10-routes 127.0.0.1:9211"
  "gopher-equalizer-3-limits 127.0.0.1:9212"
  "gopher-equalizer-limiter-off 127.0.0.1:9202"
  "gopher-equalizer-metrics-off 127.0.0.1:9208"
  "gopher-equalizer-access-log 127.0.0.1:9209"
  "gopher-equalizer-postgres 127.0.0.1:9203"
  "nginx-1-worker 127.0.0.1:9301"
  "nginx-2-workers 127.0.0.1:9302"
  "haproxy-nbthread-1 127.0.0.1:9311"
  "haproxy-nbthread-2 127.0.0.1:9312"
  "caddy 127.0.0.1:9320"
  "gopher-equalizer-429 127.0.0.1:9205"
  "gopher-equalizer-one-client-header 127.0.0.1:9204 single.lua"
  "gopher-equalizer-tls https://127.0.0.1:9210"
  "nginx-2-workers-tls https://127.0.0.1:9303"
  "gopher-equalizer-100k-clients 127.0.0.1:9204 many.lua"
  "gopher-equalizer-postgres-100k-clients 127.0.0.1:9207 many.lua"
  "gopher-equalizer-postgres-100k-spending 127.0.0.1:9206 many.lua"
)
[ -n "${PROTOTYPE:-}" ] && BASELINE_TARGETS+=("event-loop-prototype 127.0.0.1:9219")
TARGETS=("${TARGETS[@]:0:2}" "${BASELINE_TARGETS[@]}" "${TARGETS[@]:2}")
if [ -n "${ONLY:-}" ]; then # a regular expression on target names
  kept=()
  for t in "${TARGETS[@]}"; do [[ ${t%% *} =~ $ONLY ]] && kept+=("$t"); done
  TARGETS=("${kept[@]}")
fi
PG_TARGETS=0
for t in "${TARGETS[@]}"; do [[ $t == *postgres* ]] && PG_TARGETS=$((PG_TARGETS + 1)); done
for t in "${TARGETS[@]}"; do set -- $t; wait_http "$2"; done
curl -s -o /dev/null 127.0.0.1:9205/ # spend the only token of the 429 run

# CPU per request: the user+system CPU of every process listening on the
# target's port (nginx's workers, all of HAProxy's threads), and for the
# PostgreSQL targets every PostgreSQL process too, over the run, divided by
# the requests wrk completed. Steadier than requests/s on a shared machine,
# and what "cost" means.
pids_on() { ss -ltnpH "sport = :${1##*:}" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u; }
cpu_ticks() {
  local total=0 p f
  for p in "$@"; do
    read -r -a f <"/proc/$p/stat" 2>/dev/null || continue
    total=$((total + f[13] + f[14]))
  done
  echo "$total"
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))

pgq() { psql -h 127.0.0.1 -p $PGPORT -U postgres -d postgres -Atc "$1"; }
WAL0=$(pgq "SELECT pg_current_wal_lsn()")
# What one PostgreSQL target made the database write during its run: rows
# the instance sent and left unsent (its own counters, on its admin port)
# and WAL bytes (the only writer then). Spending of the run's last second
# lands in the next run; over rounds that evens out.
synced_rows() {
  curl -s "http://127.0.0.1:$(( ${1##*:} + 1000 ))/metrics" |
    awk '/^equalizer_store_rows_synced_total/ {s = $2} /^equalizer_store_rows_refilled_total/ {r = $2} END {printf "%d %d", s, r}'
}
pg_now() { echo "$(synced_rows "$1") $(pgq "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")"; }
pg_after() { # name conns addr "rows unsent wal" (before)
  local b a
  read -r -a b <<<"$4"
  read -r -a a <<<"$(pg_now "$3")"
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" $((a[0] - b[0])) $((a[1] - b[1])) $((a[2] - b[2])) >>"$OUT/pg.tsv"
}
echo "running: $ROUNDS rounds x connections {$CONNS} x ${DURATION}s, targets interleaved" >&2
for round in $(seq 1 "$ROUNDS"); do
  for c in $CONNS; do
    for t in "${TARGETS[@]}"; do
      set -- $t
      name=$1 addr=$2 script=${3:-}
      args=(-t"$WRK_THREADS" -c"$c" -d"${DURATION}s" --timeout 5s --latency)
      [ -n "$script" ] && args+=(-s "$WORK/$script")
      file="$OUT/$name-c$c-r$round.txt"
      pids=$(pids_on "$addr")
      cpu_pids=$pids
      if [[ $name == *postgres* ]]; then
        pg_before=$(pg_now "$addr")
        # The cost of persistence includes the database's CPU.
        cpu_pids="$pids $(pgrep -u postgres -x postgres | tr '\n' ' ')"
      fi
      t0=$(cpu_ticks $cpu_pids)
      perf_pid=""
      if [ "$PERF" = 1 ]; then
        perf stat -x, -e context-switches,raw_syscalls:sys_enter -p "$(echo $pids | tr ' ' ,)" -o "$file.perf" \
          -- sleep "$DURATION" 2>/dev/null &
        perf_pid=$!
      fi
      timeout $((DURATION + 30)) wrk "${args[@]}" "$(url_of "$addr")" >"$file" 2>&1 || true
      [ -n "$perf_pid" ] && wait "$perf_pid" 2>/dev/null
      t1=$(cpu_ticks $cpu_pids)
      [[ $name == *postgres* ]] && pg_after "$name" "$c" "$addr" "$pg_before"
      reqs=$(awk '/requests in/ {print $1}' "$file")
      cpu_us=$(awk -v d=$(((t1 - t0) * TICK_US)) -v n="${reqs:-0}" 'BEGIN { if (n > 0) printf "%.2f", d / n; else print "" }')
      per_req() { awk -F, -v ev="$1" -v n="${reqs:-0}" '$3 == ev && n > 0 { printf "%.2f", $1 / n }' "$file.perf" 2>/dev/null; }
      sys="" cs=""
      [ "$PERF" = 1 ] && sys=$(per_req raw_syscalls:sys_enter) cs=$(per_req context-switches)
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$c" "$round" "$file" "$cpu_us" "$sys" "$cs" >>"$OUT/results.tsv"
      printf '  round %s c=%s %-36s %s req/s\n' "$round" "$c" "$name" "$(awk '/Requests\/sec/ {print $2}' "$file")" >&2
    done
  done
done

# What PostgreSQL wrote for the PostgreSQL targets (both databases).
PG_SECONDS=$((ROUNDS * $(echo $CONNS | wc -w) * PG_TARGETS * DURATION))
[ "$PG_SECONDS" -gt 0 ] || PG_SECONDS=1
PG_STATS=$(for db in postgres spending; do
  psql -h 127.0.0.1 -p $PGPORT -U postgres -d $db -Atc \
    "SELECT n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'token_buckets'"
done | awk -F'|' '{ i += $1; u += $2; h += $3 } END { printf "%d|%d|%d", i, u, h }')
WAL_BYTES=$(pgq "SELECT pg_current_wal_lsn() - '$WAL0'::pg_lsn")
{
  echo "Run: $(date -u +%Y-%m-%dT%H:%MZ), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, $(go version | cut -d' ' -f3)"
  echo "Command: BACKEND=$BACKEND ${BASELINE:+BASELINE=\"$BASELINE\" }${PROTOTYPE:+PROTOTYPE=$PROTOTYPE }$([ "$PERF" = 1 ] && echo "PERF=1 ")ROUNDS=$ROUNDS DURATION=$DURATION CONNS=\"$CONNS\" WRK_THREADS=$WRK_THREADS bench/run.sh"
  echo
  "$WORK/report" -svg "$OUT/chart.svg" "$OUT/results.tsv"
  if [ "$PG_TARGETS" -gt 0 ]; then
    IFS='|' read -r ins upd hot <<<"$PG_STATS"
    echo
    echo "PostgreSQL during the ${PG_SECONDS} s of traffic on the PostgreSQL targets: $ins rows inserted," \
      "$upd updated ($hot of them HOT), $((WAL_BYTES / 1048576)) MiB of WAL;" \
      "$(( (ins + upd) / PG_SECONDS )) rows and $((WAL_BYTES / PG_SECONDS / 1024)) KiB of WAL per second."
    echo
    echo "Per PostgreSQL target, median over rounds: rows written per second, rows left unsent because"
    echo "the bucket had refilled to full (equalizer_store_rows_refilled_total), WAL per second."
    echo
    echo "| target | connections | rows written/s | rows unsent/s | WAL KiB/s |"
    echo "|---|---|---|---|---|"
    sort -k1,1 -k2,2n "$OUT/pg.tsv" | awk -F'\t' -v d="$DURATION" '
      function med(a, n,   i, j, t) { for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t } return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }
      function emit() { if (n) printf "| %s | %s | %.0f | %.0f | %.0f |\n", k1, k2, med(w, n) / d, med(u, n) / d, med(b, n) / d / 1024 }
      { if ($1 != k1 || $2 != k2) { emit(); k1 = $1; k2 = $2; n = 0 } n++; w[n] = $3; u[n] = $4; b[n] = $5 }
      END { emit() }'
  fi
} | tee "$OUT/results.md"
