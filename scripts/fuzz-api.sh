#!/usr/bin/env bash
# Fuzzes the public HTTP API against the OpenAPI document the gateway serves
# (`just fuzz-api`): schemathesis generates valid and invalid requests for
# every operation, and the run fails on any 5xx and on any response the
# document does not describe (status code, content type, headers, body).
#
# It runs against the dev stack (`just up`), restarted with rate limits raised
# so the fuzzer explores the handlers instead of the limiter (the 429 answers
# are documented on every operation all the same), and stops the services
# afterwards. Before fuzzing it signs in a customer, a seller and the
# bootstrap admin, and walks one order from checkout to delivery, so that
# path parameters can name things that exist (scripts/schemathesis.toml binds
# them to the ids written under .run/fuzz/) and the fuzzer reaches the
# services' rules rather than their 404s.
#
#   FUZZ_EXAMPLES   test cases per operation and phase (default 100)
#   FUZZ_SEED       replay one run's cases (schemathesis prints its seed)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VERSION=4.32.5
VENV=${XDG_CACHE_HOME:-$HOME/.cache}/emporium/schemathesis-$VERSION
GATEWAY_ADDR=${GATEWAY_ADDR:-127.0.0.1:8080}
BASE="http://$GATEWAY_ADDR"
IDS="$ROOT/.run/fuzz"

say() { printf '[fuzz-api] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

if [[ ! -x $VENV/bin/schemathesis ]]; then
  say "installing schemathesis $VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "schemathesis==$VERSION"
fi

say "restarting the stack with raised rate limits"
export GATEWAY_RATE_LIMIT_PER_IP=1000000 GATEWAY_RATE_LIMIT_PER_USER=1000000 GATEWAY_RATE_LIMIT_AUTH_PER_IP=1000000
(cd "$ROOT" && just up)
trap 'cd "$ROOT" && just down-services' EXIT

# --- the callers and their data ----------------------------------------------
# api METHOD PATH TOKEN [BODY]: prints the answer; fails on any status but 2xx.
api() {
  local args=(-fsS -X "$1" "$BASE$2" -H 'content-type: application/json' -H "idempotency-key: fuzz-$RANDOM$RANDOM")
  [[ -n $3 ]] && args+=(-H "authorization: Bearer $3")
  [[ -n ${4:-} ]] && args+=(-d "$4")
  curl "${args[@]}"
}

# field JSON PATH: the value at a dotted path (`shipment.id`, `items.0.id`), empty if absent.
field() {
  python3 -c '
import json, sys
value = json.loads(sys.argv[1])
for step in sys.argv[2].split("."):
    if value is None: break
    value = value[int(step)] if isinstance(value, list) else value.get(step)
print("" if value is None else value)' "$1" "$2"
}

# until_field SECONDS FIELD WANTED METHOD PATH TOKEN [BODY]: repeats the request until FIELD of
# its answer is WANTED (with WANTED empty: is there at all) and prints it.
until_field() {
  local deadline=$((SECONDS + $1)) want=$3 name=$2 value=
  shift 3
  while ((SECONDS < deadline)); do
    value=$(field "$(api "$@" 2>/dev/null || echo '{}')" "$name")
    [[ -n $value && ( -z $want || $value == "$want" ) ]] && { echo "$value"; return 0; }
    sleep 0.2
  done
  die "$1 $2: $name did not become ${want:-set} in time (last: ${value:-none})"
}

# sign_up ROLE: registers a fresh account with ROLE and prints its access token.
sign_up() {
  local email="fuzz-$1-$(date +%s%N)@emporium.test" password="fuzz-$RANDOM-$RANDOM-password"
  api POST /api/v1/auth/register '' "{\"email\":\"$email\",\"password\":\"$password\",\"name\":\"Fuzz $1\",\"role\":\"$1\"}" >/dev/null
  field "$(api POST /api/v1/auth/login '' "{\"email\":\"$email\",\"password\":\"$password\"}")" access_token
}

CUSTOMER_TOKEN=$(sign_up customer)
SELLER_TOKEN=$(sign_up seller)
ADMIN_TOKEN=$(field "$(api POST /api/v1/auth/login '' \
  "{\"email\":\"${IDENTITY_ADMIN_EMAIL:-admin@emporium.test}\",\"password\":\"${IDENTITY_ADMIN_PASSWORD:-emporium-admin}\"}")" access_token)
export CUSTOMER_TOKEN SELLER_TOKEN ADMIN_TOKEN

say "walking one order from checkout to delivery"
address='{"name":"Fuzz Customer","line1":"1 Test Street","city":"Testville","postal_code":"12345","country":"GB"}'
product=$(field "$(api POST /api/v1/products "$SELLER_TOKEN" \
  '{"name":"Fuzz lamp","description":"A lamp to fuzz with","price":{"amount":1999,"currency":"EUR"}}')" id)
# Inventory learns of a new product from the catalog's event a moment later (503 until then).
until_field 20 on_hand 1000 PUT "/api/v1/products/$product/stock" "$SELLER_TOKEN" '{"quantity":1000}' >/dev/null
api POST /api/v1/cart/items "$CUSTOMER_TOKEN" "{\"product_id\":\"$product\",\"quantity\":1}" >/dev/null
order=$(field "$(api POST /api/v1/cart/checkout "$CUSTOMER_TOKEN" \
  "{\"shipping_address\":$address,\"payment_method\":\"tok_visa\"}")" order_id)
shipment=$(until_field 30 shipment.id '' GET "/api/v1/orders/$order" "$CUSTOMER_TOKEN")
api POST "/api/v1/shipments/$shipment/ship" "$ADMIN_TOKEN" >/dev/null
api POST "/api/v1/shipments/$shipment/deliver" "$ADMIN_TOKEN" >/dev/null
until_field 30 status delivered GET "/api/v1/orders/$order" "$CUSTOMER_TOKEN" >/dev/null
notification=$(until_field 30 items.0.id '' GET /api/v1/notifications "$CUSTOMER_TOKEN")
# A line in the cart, for the cart's operations on it.
api POST /api/v1/cart/items "$CUSTOMER_TOKEN" "{\"product_id\":\"$product\",\"quantity\":1}" >/dev/null

mkdir -p "$IDS"
for kind in product order shipment notification; do printf '"%s"\n' "${!kind}" >"$IDS/$kind.dict"; done

say "fuzzing $BASE/openapi.json"
seed=()
[[ -n ${FUZZ_SEED:-} ]] && seed=(--seed "$FUZZ_SEED")
# From .run/fuzz, where schemathesis keeps what `st replay` reads. One worker:
# the stack has the machine's two cores, and Python 3.11's parser is not safe
# to use from two of schemathesis's threads at once.
cd "$IDS"
"$VENV/bin/schemathesis" --config-file "$ROOT/scripts/schemathesis.toml" run "$BASE/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --max-examples "${FUZZ_EXAMPLES:-100}" --workers 1 --request-timeout 15 "${seed[@]}"
