#!/usr/bin/env bash
# The HTTP/2 suite: h2load (Debian's nghttp2-client; wrk speaks only
# HTTP/1.1) through gopher-equalizer, nginx and HAProxy, on the same three
# HTTP/1.1 backends, on this machine, in one run, rounds interleaved so
# that the machine's drift hits every target alike. Over TLS (ALPN h2) and
# over cleartext with prior knowledge (h2c); and gRPC (unary calls to one
# grpc-go server: our h2c:// backend, nginx grpc_pass, HAProxy proto h2).
# Traffic goes to 127.0.0.1 only; every process started here is stopped on
# exit.
#
#   bench/h2.sh                          # 3 rounds x 10 s per target
#   ROUNDS=5 DURATION=5 bench/h2.sh
#   CONNS=16 STREAMS=100 bench/h2.sh     # fewer connections, more streams each
#
# x-net-http2-alone-h2c is not a proxy: Go's HTTP/2 server answering by
# itself (bench/h2bare), the ceiling of anything built on it.
# For each target: requests/s (median of the rounds), and the proxy's CPU
# time per request (its processes' utime+stime over the run, /proc), both
# also as a ratio to gopher-equalizer's over the same transport. Output on
# stdout and in bench/out-h2/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
STREAMS=${STREAMS:-10}
OUT=${OUT:-$ROOT/bench/out-h2}
WORK=$(mktemp -d /tmp/equalizer-h2bench.XXXXXX)
mkdir -p "$OUT"
rm -f "$OUT"/*.txt

PIDS=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

missing=()
for tool in h2load nginx haproxy curl; do command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=("${missing[@]/h2load/nghttp2-client}")
  echo "installing ${pkgs[*]} from Debian packages" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

start() { # start NAME CMD...: a background process, its PID recorded
  local name=$1; shift
  "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  eval "PID_${name//-/_}=$!"
}

echo "building" >&2
go build -o "$WORK/equalizer" ./cmd/equalizer
go build -o "$WORK/backend" ./bench/backend
go build -o "$WORK/h2bare" ./bench/h2bare
go build -o "$WORK/grpc-demo" ./cmd/grpc-demo
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -keyout "$WORK/tls.key" -out "$WORK/tls.pem" 2>/dev/null
cat "$WORK/tls.pem" "$WORK/tls.key" >"$WORK/tls-haproxy.pem"

B1=127.0.0.1:9601 B2=127.0.0.1:9602 B3=127.0.0.1:9603
start backend "$WORK/backend" $B1 $B2 $B3
# gRPC: one grpc-go server (cmd/grpc-demo) behind every proxy's gRPC
# target; h2load posts an empty grpc.testing.SimpleRequest to UnaryCall.
G=127.0.0.1:9650
start grpcserver "$WORK/grpc-demo" serve $G
printf '\0\0\0\0\0' >"$WORK/grpc-request.bin"

# gopher-equalizer charges every request to its client's bucket (a million
# tokens: nobody is refused); the others only proxy.
start equalizer env -i PATH="$PATH" EQUALIZER_LISTEN=127.0.0.1:9501 EQUALIZER_ADMIN_LISTEN=127.0.0.1:9591 \
  EQUALIZER_BACKENDS="http://$B1,http://$B2,http://$B3" EQUALIZER_LOG_LEVEL=warn \
  EQUALIZER_TLS_CERT="$WORK/tls.pem" EQUALIZER_TLS_KEY="$WORK/tls.key" \
  EQUALIZER_BUCKET_CAPACITY=1000000000 EQUALIZER_BUCKET_REFILL_AMOUNT=1000000000 "$WORK/equalizer"
start equalizer_h2c env -i PATH="$PATH" EQUALIZER_LISTEN=127.0.0.1:9502 EQUALIZER_ADMIN_LISTEN=127.0.0.1:9592 \
  EQUALIZER_BACKENDS="http://$B1,http://$B2,http://$B3" EQUALIZER_LOG_LEVEL=warn \
  EQUALIZER_BUCKET_CAPACITY=1000000000 EQUALIZER_BUCKET_REFILL_AMOUNT=1000000000 "$WORK/equalizer"
start equalizer_grpc env -i PATH="$PATH" EQUALIZER_LISTEN=127.0.0.1:9503 EQUALIZER_ADMIN_LISTEN=127.0.0.1:9593 \
  EQUALIZER_BACKENDS="h2c://$G" EQUALIZER_HEALTH_PATH=grpc EQUALIZER_LOG_LEVEL=warn \
  EQUALIZER_BUCKET_CAPACITY=1000000000 EQUALIZER_BUCKET_REFILL_AMOUNT=1000000000 "$WORK/equalizer"

# nginx 1.22 (Debian 12): "listen ... http2"; 2 workers for 2 cores.
cat >"$WORK/nginx.conf" <<CONF
worker_processes 2;
pid $WORK/nginx.pid;
error_log stderr crit;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx-body;
  proxy_temp_path $WORK/nginx-proxy;
  fastcgi_temp_path $WORK/nginx-fcgi;
  uwsgi_temp_path $WORK/nginx-uwsgi;
  scgi_temp_path $WORK/nginx-scgi;
  http2_max_concurrent_streams 128;
  keepalive_requests 1000000;     # also HTTP/2's requests per connection (1.19.7+): h2load's connections live the whole run
  upstream backends { server $B1; server $B2; server $B3; keepalive 512; }
  server {
    listen 127.0.0.1:9511 ssl http2;
    listen 127.0.0.1:9512 http2;
    ssl_certificate $WORK/tls.pem;
    ssl_certificate_key $WORK/tls.key;
    location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
  upstream grpcservers { server $G; keepalive 64; }
  server {
    listen 127.0.0.1:9513 http2;
    location / { grpc_pass grpc://grpcservers; }
  }
}
CONF
start nginx nginx -c "$WORK/nginx.conf" -g 'daemon off;' -e stderr

cat >"$WORK/haproxy.cfg" <<CONF
global
  nbthread 2
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend tls
  bind 127.0.0.1:9521 ssl crt $WORK/tls-haproxy.pem alpn h2,http/1.1
  default_backend be
frontend h2c
  bind 127.0.0.1:9522 proto h2
  default_backend be
frontend grpc
  bind 127.0.0.1:9523 proto h2
  default_backend grpc
backend be
  balance roundrobin
  server b1 $B1
  server b2 $B2
  server b3 $B3
backend grpc
  server g1 $G proto h2
CONF
start haproxy haproxy -db -f "$WORK/haproxy.cfg"
# The ceiling of any proxy built on Go's HTTP/2 server: that server
# answering by itself, no backend.
start h2bare "$WORK/h2bare" 127.0.0.1:9531

TARGETS=(
  "gopher-equalizer-tls https://127.0.0.1:9501/ equalizer"
  "nginx-tls https://127.0.0.1:9511/ nginx"
  "haproxy-tls https://127.0.0.1:9521/ haproxy"
  "gopher-equalizer-h2c http://127.0.0.1:9502/ equalizer_h2c"
  "nginx-h2c http://127.0.0.1:9512/ nginx"
  "haproxy-h2c http://127.0.0.1:9522/ haproxy"
  "x-net-http2-alone-h2c http://127.0.0.1:9531/ h2bare"
  "gopher-equalizer-grpc http://127.0.0.1:9503/grpc.testing.TestService/UnaryCall equalizer_grpc"
  "nginx-grpc http://127.0.0.1:9513/grpc.testing.TestService/UnaryCall nginx"
  "haproxy-grpc http://127.0.0.1:9523/grpc.testing.TestService/UnaryCall haproxy"
)
# h2load counts HTTP statuses; a gRPC call's own status is in its
# trailers, so each gRPC target is checked once with a real client first.
for port in 9503 9513 9523; do
  for _ in $(seq 1 100); do
    if "$WORK/grpc-demo" call 127.0.0.1:$port 2>/dev/null | grep -q 'OK'; then continue 2; fi
    sleep 0.1
  done
  echo "127.0.0.1:$port does not pass gRPC calls" >&2
  exit 1
done
for t in "${TARGETS[@]}"; do
  read -r name url _ <<<"$t"
  [[ $name == *grpc* ]] && continue # checked below with a gRPC client
  for _ in $(seq 1 100); do
    if h2load -n 1 -c 1 "$url" 2>/dev/null | grep -q '1 succeeded'; then continue 2; fi
    sleep 0.1
  done
  echo "$url does not answer over HTTP/2" >&2
  exit 1
done

# cpu_ticks PID: utime+stime of the process and its children processes
# (nginx's workers), in clock ticks.
cpu_ticks() {
  local total=0 p
  for p in $1 $(pgrep -P "$1" || true); do
    read -r -a f <"/proc/$p/stat"
    total=$((total + f[13] + f[14]))
  done
  echo $total
}
HZ=$(getconf CLK_TCK)

echo "rounds=$ROUNDS duration=${DURATION}s connections=$CONNS streams/conn=$STREAMS" >&2
for round in $(seq 1 "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    read -r name url proc <<<"$t"
    pidvar="PID_$proc"; pid=${!pidvar}
    before=$(cpu_ticks "$pid")
    extra=()
    case $name in *grpc*) extra=(-d "$WORK/grpc-request.bin" -H 'content-type: application/grpc' -H 'te: trailers') ;; esac
    h2load -c "$CONNS" -m "$STREAMS" -t 1 -D "$DURATION" "${extra[@]}" "$url" >"$OUT/$name-r$round.txt" 2>&1 || true
    after=$(cpu_ticks "$pid")
    done_reqs=$(awk '/^requests:/ {print $8}' "$OUT/$name-r$round.txt")
    rps=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' "$OUT/$name-r$round.txt")
    failed=$(awk '/^requests:/ {print $10}' "$OUT/$name-r$round.txt")
    echo "$name $round $rps $((after - before)) $done_reqs $failed" >>"$OUT/raw.txt"
    echo "  $name round $round: $rps req/s, failed $failed" >&2
  done
done

# Table: medians over rounds; CPU µs per request from all rounds' ticks.
{
  echo "| target | requests/s (median) | vs gopher-equalizer | CPU µs/request | vs gopher-equalizer | failed |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: |"
  awk -v hz="$HZ" '
    { n[$1]++; r[$1, n[$1]] = $3; ticks[$1] += $4; reqs[$1] += $5; failed[$1] += $6; order[$1] = order[$1] ? order[$1] : ++k; names[k] = $1 }
    END {
      for (i = 1; i <= k; i++) {
        t = names[i]; m = n[t]
        for (a = 1; a <= m; a++) v[a] = r[t, a]
        for (a = 1; a <= m; a++) for (b = a + 1; b <= m; b++) if (v[b] < v[a]) { x = v[a]; v[a] = v[b]; v[b] = x }
        med[t] = (m % 2) ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
        cpu[t] = reqs[t] ? ticks[t] / hz * 1e6 / reqs[t] : 0
      }
      for (i = 1; i <= k; i++) {
        t = names[i]; base = (t ~ /tls/) ? "gopher-equalizer-tls" : (t ~ /grpc/) ? "gopher-equalizer-grpc" : "gopher-equalizer-h2c"
        printf "| %s | %.0f | %.2f | %.1f | %.2f | %d |\n", t, med[t], med[t] / med[base], cpu[t], (cpu[base] ? cpu[t] / cpu[base] : 0), failed[t]
      }
    }' "$OUT/raw.txt"
} | tee "$OUT/results.md"
