#!/usr/bin/env bash
# Large downloads through gopher-equalizer, nginx, HAProxy and Caddy, in one
# interleaved run on this machine: time of a whole download with curl and
# the proxy's peak RSS during it (VmHWM, reset before each download; summed
# over nginx's processes). Traffic goes to 127.0.0.1 only.
#
#   bench/large.sh                    # 100 MiB and 1 GiB, 3 rounds
#   ROUNDS=1 SIZES=104857600 bench/large.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SIZES=${SIZES:-"104857600 1073741824"}
WORK=$(mktemp -d /tmp/equalizer-large.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
for tool in nginx haproxy caddy curl; do
  command -v "$tool" >/dev/null || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx haproxy caddy curl >/dev/null; break; }
done
go build -o "$WORK/equalizer" ./cmd/equalizer
go build -o "$WORK/backend" ./bench/backend
start() { local name=$1; shift; "$@" >"$WORK/$name.log" 2>&1 & PIDS+=($!); echo $! >"$WORK/$name.pid"; }

B=127.0.0.1:9111
start backend "$WORK/backend" $B
for _ in $(seq 1 100); do curl -s -o /dev/null -m 1 "http://$B/" && break; sleep 0.1; done
start equalizer env -i PATH="$PATH" EQUALIZER_LISTEN=127.0.0.1:9211 EQUALIZER_ADMIN_LISTEN=127.0.0.1:10211 \
  EQUALIZER_BACKENDS=http://$B EQUALIZER_LOG_LEVEL=warn EQUALIZER_RATE_LIMIT=false "$WORK/equalizer"
cat >"$WORK/nginx.conf" <<CONF
worker_processes 2;
pid $WORK/nginx.pid;
error_log stderr crit;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/nb; proxy_temp_path $WORK/np; fastcgi_temp_path $WORK/nf;
  uwsgi_temp_path $WORK/nu; scgi_temp_path $WORK/ns;
  upstream b { server $B; keepalive 16; }
  server { listen 127.0.0.1:9311; location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
CONF
start nginx nginx -c "$WORK/nginx.conf" -g 'daemon off;' -e stderr
cat >"$WORK/haproxy.cfg" <<CONF
global
  nbthread 2
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe
  bind 127.0.0.1:9312
  default_backend be
backend be
  server b $B
CONF
start haproxy haproxy -db -f "$WORK/haproxy.cfg"
printf '{\n  admin off\n  auto_https off\n}\nhttp://127.0.0.1:9313 {\n  reverse_proxy %s\n}\n' "$B" >"$WORK/Caddyfile"
start caddy env HOME="$WORK" XDG_DATA_HOME="$WORK" XDG_CONFIG_HOME="$WORK" caddy run --config "$WORK/Caddyfile" --adapter caddyfile
for a in 127.0.0.1:9211 127.0.0.1:9311 127.0.0.1:9312 127.0.0.1:9313; do
  for _ in $(seq 1 100); do curl -s -o /dev/null -m 1 "http://$a/" && break; sleep 0.1; done
done

# pids NAME: the processes whose memory counts for a proxy.
pids() {
  local main; main=$(cat "$WORK/$1.pid")
  echo "$main $(pgrep -P "$main" || true)"
}
reset_hwm() { for p in $(pids "$1"); do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done; }
hwm_mib() { local kib=0; for p in $(pids "$1"); do kib=$((kib + $(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0))); done; echo $((kib / 1024)); }

TARGETS="equalizer:127.0.0.1:9211 nginx:127.0.0.1:9311 haproxy:127.0.0.1:9312 caddy:127.0.0.1:9313"
echo "| size | proxy | seconds (median of $ROUNDS) | peak RSS MiB (max) |"
echo "| --- | --- | ---: | ---: |"
for size in $SIZES; do
  declare -A times=() rss=()
  for round in $(seq 1 "$ROUNDS"); do
    for t in $TARGETS; do
      name=${t%%:*} addr=${t#*:}
      reset_hwm "$name"
      out=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' "http://$addr/bytes/$size" || true)
      code=${out%% *} secs=${out#* }
      [ "$code" = 200 ] || { echo "$name answered $code" >&2; tail -n 3 "$WORK/$name.log" >&2; }
      times[$name]="${times[$name]:-} $secs"
      m=$(hwm_mib "$name")
      [ "$m" -gt "${rss[$name]:-0}" ] && rss[$name]=$m
    done
  done
  for t in $TARGETS; do
    name=${t%%:*}
    med=$(echo "${times[$name]}" | tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    echo "| $((size / 1048576)) MiB | $name | $med | ${rss[$name]} |"
  done
  unset times rss
done
