#!/usr/bin/env bash
# Sets everything up and starts the demo: the local ZITADEL-like issuer, the
# demo API, and Envoy with the filter in front of it. Prints curl lines with
# freshly minted tokens, then runs until Ctrl-C.
#
#   scripts/demo.sh           start and wait
#   scripts/demo.sh --check   start, run the curl lines, check the answers, stop
#   scripts/demo.sh --tls     the issuer over HTTPS (certificates made now, in the state dir),
#                             as ZITADEL Cloud is; combines with --check
#
# Ports (loopback only): ENVOY_PORT=10000 ADMIN_PORT=9901 ISSUER_PORT=9000 API_PORT=8000
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

check=false
tls=false
for arg in "$@"; do
  case "$arg" in
    --check) check=true ;;
    --tls) tls=true ;;
    *) echo "usage: scripts/demo.sh [--check] [--tls]" >&2; exit 2 ;;
  esac
done

ENVOY_PORT=${ENVOY_PORT:-10000}
ADMIN_PORT=${ADMIN_PORT:-9901}
ISSUER_PORT=${ISSUER_PORT:-9000}
API_PORT=${API_PORT:-8000}
STATE=${DEMO_STATE_DIR:-$ROOT/.state/demo}
ISSUER_URL="http://127.0.0.1:$ISSUER_PORT"

scripts/setup.sh
mkdir -p "$STATE"

issuer_tls=() render_tls=()
if $tls; then
  # A CA and a certificate for localhost, made now; Envoy's issuer cluster trusts that CA only.
  .venv/bin/python scripts/make_certs.py "$STATE/certs" --name localhost > /dev/null
  ISSUER_URL="https://localhost:$ISSUER_PORT"
  issuer_tls=(--tls-cert "$STATE/certs/server.pem" --tls-key "$STATE/certs/server-key.pem")
  render_tls=(--issuer-tls-name localhost --issuer-ca "$STATE/certs/ca.pem")
  export NODE_EXTRA_CA_CERTS="$STATE/certs/ca.pem"  # get-token.mjs talks to the issuer too
fi

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_until() {  # wait_until SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      echo "demo: $what did not come up; see $STATE/*.log" >&2
      exit 1
    fi
    sleep 0.2
  done
}

node demo/issuer/issuer.mjs --port "$ISSUER_PORT" --issuer "$ISSUER_URL" --state-dir "$STATE/issuer" \
  "${issuer_tls[@]}" > "$STATE/issuer.log" 2>&1 &
pids+=($!)
.venv/bin/python demo/api.py --port "$API_PORT" > "$STATE/api.log" 2>&1 &
pids+=($!)
wait_until 20 "the issuer" grep -q "issuer ready" "$STATE/issuer.log"
wait_until 20 "the demo API" grep -q "demo api ready" "$STATE/api.log"

.venv/bin/python envoy/render.py --profile local --out "$STATE/envoy.yaml" "${render_tls[@]}" \
  --set ENVOY_PORT="$ENVOY_PORT" ADMIN_PORT="$ADMIN_PORT" ISSUER_PORT="$ISSUER_PORT" API_PORT="$API_PORT"
# The key file goes to Envoy through its environment, never into envoy.yaml.
ZITADEL_API_KEY_JSON=$(cat "$STATE/issuer/api-app-key.json") \
  .venv/bin/envoy -c "$STATE/envoy.yaml" --concurrency 2 --disable-hot-restart -l info \
  > "$STATE/envoy.log" 2>&1 &
pids+=($!)
wait_until 30 "Envoy" curl -sf "http://127.0.0.1:$ADMIN_PORT/ready"

token() { node demo/issuer/get-token.mjs --state-dir "$STATE/issuer" --user "$1"; }
READER=$(token reader-opaque)
READER_JWT=$(token reader-jwt)
NO_ROLE=$(token plain-opaque)
API="http://127.0.0.1:$ENVOY_PORT"

cat <<MSG

Envoy with the introspection filter listens on $API (admin: http://127.0.0.1:$ADMIN_PORT);
the issuer is $ISSUER_URL.
Logs: $STATE/*.log. Tokens below are fresh; they expire in an hour.

  # public: 200 'OK <time>' without a token
  curl -i $API/public
  curl -i $API/api/public

  # protected, no token: 401 "auth header missing"
  curl -i $API/api/private

  # valid opaque token: 200, the API echoes the identity headers it received
  curl -i -H "Authorization: Bearer $READER" $API/api/private

  # valid JWT access token with role read:messages: 200
  curl -i -H "Authorization: Bearer $READER_JWT" $API/api/private-scoped

  # valid token without the role: 403 insufficient_scope
  curl -i -H "Authorization: Bearer $NO_ROLE" $API/api/private-scoped

  # invalid token: 401 invalid_token
  curl -i -H "Authorization: Bearer not-a-token" $API/api/private

  # the filter's counters
  curl -s http://127.0.0.1:$ADMIN_PORT/stats | grep oauth_introspection

MSG

if $check; then
  status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
  expect() {  # expect CODE CURL-ARGS...
    local want=$1; shift
    local got; got=$(status "$@")
    if [ "$got" != "$want" ]; then echo "demo check: got $got, want $want for ${*: -1}" >&2; exit 1; fi
  }
  expect 200 "$API/public"
  expect 200 "$API/api/public"
  expect 401 "$API/api/private"
  expect 200 -H "Authorization: Bearer $READER" "$API/api/private"
  expect 200 -H "Authorization: Bearer $READER_JWT" "$API/api/private-scoped"
  expect 403 -H "Authorization: Bearer $NO_ROLE" "$API/api/private-scoped"
  expect 401 -H "Authorization: Bearer not-a-token" "$API/api/private"
  echo "demo check: all curl lines answered as printed"
  exit 0
fi

echo "Running; Ctrl-C stops Envoy, the issuer and the API."
wait
