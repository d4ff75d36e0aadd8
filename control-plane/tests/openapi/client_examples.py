"""The spec's examples, run with a client generated from /v1/openapi.json by
openapi-python-client (the package `client`, on PYTHONPATH).

Usage: client_examples.py BASE_URL USERNAME PASSWORD PRODUCT_IMEI

Each example checks the typed answer the generated code parsed; any
surprise raises. Called by control-plane/tests/openapi.rs.
"""

import json
import sys
import uuid
from datetime import datetime

from client import AuthenticatedClient, Client
from client.api.auth import post_auth_login
from client.api.products import (
    get_products_product_imei_data,
    post_products_product_imei_add_payment_command,
    put_products_product_imei_enable,
)
from client.api.state_type import list_state_types
from client.models import (
    ListStateTypesResponse200,
    PostAuthLoginBody,
    PostAuthLoginResponse200,
    PostProductsProductImeiAddPaymentCommandBodyType0,
    PostProductsProductImeiAddPaymentCommandBodyType0Category,
    PostProductsProductImeiAddPaymentCommandResponse201,
)

base, username, password, imei = sys.argv[1:5]
passed = 0


def expect(kind, response):
    """The parsed answer, which must be of the documented success type."""
    global passed
    if not isinstance(response.parsed, kind):
        raise SystemExit(
            f"expected {kind.__name__}, got HTTP {response.status_code}: {response.content!r}"
        )
    passed += 1
    return response.parsed


# 1. Log in (spec: "Authentication").
login = expect(
    PostAuthLoginResponse200,
    post_auth_login.sync_detailed(
        client=Client(base_url=base),
        body=PostAuthLoginBody(username=username, password=password),
    ),
)
token = login.message.login_successful.api_token
assert login.message.login_successful.permissions == "SYSTEM", login
api = AuthenticatedClient(base_url=base, token=f"token={token}", prefix="Token")

# 2. List state types with a `q` filter (spec: "Querying").
q = {"filters": [{"name": "name", "op": "like", "val": "%ED"}]}
listed = expect(
    ListStateTypesResponse200,
    list_state_types.sync_detailed(client=api, q=json.dumps(q)),
)
names = [row.name for row in listed.objects]
assert names and all(n.endswith("ED") for n in names), names
assert listed.num_results == len(names), listed
# Row timestamps are documented as the server writes them, the spec's
# zone-less UTC form (a pattern, not RFC 3339's `date-time`), so the
# generated model holds the text; Python's own parser reads it.
stamps = [row.modified_at or row.created_at for row in listed.objects]
assert any(stamps) and all(s is None or isinstance(s, str) for s in stamps), stamps
parsed = [datetime.fromisoformat(s) for s in stamps if s]
assert all(t.tzinfo is None for t in parsed), parsed

# 3. Enable a unit (spec: "Product Actions").
enabled = put_products_product_imei_enable.sync_detailed(imei, client=api)
assert enabled.status_code == 200, enabled
assert enabled.parsed.status == "success", enabled.parsed
passed += 1

# 4. Add a payment command (spec: "DCM").
payment = expect(
    PostProductsProductImeiAddPaymentCommandResponse201,
    post_products_product_imei_add_payment_command.sync_detailed(
        imei,
        client=api,
        body=PostProductsProductImeiAddPaymentCommandBodyType0(
            value=3600,
            category=PostProductsProductImeiAddPaymentCommandBodyType0Category.PAYMENT,
            transaction_id=str(uuid.uuid4()),
        ),
    ),
)
assert payment.status == "success", payment

# 5. Read the unit's data (spec: "Product data").
data = get_products_product_imei_data.sync_detailed(
    imei, client=api, start="2023-12-31T00:00:00Z", end="2024-01-02T00:00:00Z"
)
assert data.status_code == 200, data.content
series = data.parsed.data
assert series.measurement == "telemetry", series
assert series["battery_voltage"][0][0] == 12.5, series.additional_properties
passed += 1

print(f"{passed} examples passed")
