"""superpay's hooks for schemathesis (`cargo stack test`, SCHEMATHESIS_HOOKS=this file).

Who calls: schemathesis runs with a user's token. A request it means to be valid to an admin route
(the `superpay/admin` scope) carries the admin token instead (SUPERPAY_ADMIN_TOKEN), and one to a
signed route (the `x-superpay-*` headers) is signed as the party that calls it, over the exact
bytes sent (SUPERPAY_SIGNERS: the parties the runner registered for the run, each key id and
secret). A request it means to be invalid keeps what it was generated with, so that its refusal is
what is checked.

What is checked, besides schemathesis's own checks:

schemathesis's `positive_data_acceptance` wants every request the OpenAPI document calls valid to
be accepted. A payments API refuses valid-looking requests on purpose: a limit over the currency's
ceiling, a public key that is no curve point, money the wallet does not have. Those refusals carry
their own problem codes. What must never happen is a request the document calls valid refused as
malformed: that is the document (or the code) being wrong. This check fails exactly then, and the
run leaves `positive_data_acceptance` out.
"""

import base64
import hashlib
import hmac
import json
import os
import time
import uuid
from urllib.parse import urlsplit

import requests
import schemathesis

# Which party signs a route, by the start of its path (docs/api/merchants.md, links.md, instructions.md).
SIGNER_BY_PATH = [
    ("/merchant/", "merchant"),
    ("/offline/payments", "till"),
    ("/partner/", "partner"),
    # The platform's own copy of a listing is published by its merchant; the transfer side's by the
    # merchant's transfer signer.
    ("/platform/listings", "merchant"),
    ("/transfer/listings", "transfer"),
    ("/transfer/operations", "transfer"),
]
SIGNERS = json.loads(os.environ.get("SUPERPAY_SIGNERS", "{}"))
ADMIN_TOKEN = os.environ.get("SUPERPAY_ADMIN_TOKEN")
ADMIN_SCOPE = "superpay/admin"


def signing_key(secret):
    """HKDF-SHA256 of the party's master key: salt "superpay", the request-signing label, 32 bytes."""
    prk = hmac.new(b"superpay", base64.b64decode(secret), hashlib.sha256).digest()
    return hmac.new(prk, b"superpay/v1/request-signing" + b"\x01", hashlib.sha256).digest()


class Signed(requests.auth.AuthBase):
    """Signs the request as it goes out: method, path, timestamp, nonce, key id, the body's hash."""

    def __init__(self, key_id, secret):
        self.key_id, self.key = key_id, signing_key(secret)

    def __call__(self, request):
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        timestamp, nonce = str(int(time.time())), uuid.uuid4().hex
        canonical = "\n".join([request.method.upper(), urlsplit(request.url).path, timestamp, nonce, self.key_id,
                               hashlib.sha256(body).hexdigest()])
        request.headers["X-Superpay-Key-Id"] = self.key_id
        request.headers["X-Superpay-Timestamp"] = timestamp
        request.headers["X-Superpay-Nonce"] = nonce
        request.headers["X-Superpay-Signature"] = hmac.new(self.key, canonical.encode(), hashlib.sha256).hexdigest()
        return request


class Bearer(requests.auth.AuthBase):
    """Another token than the run's (applied last, so it replaces the run's header)."""

    def __init__(self, token):
        self.token = token

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def is_positive(case):
    return case.meta is not None and case.meta.generation.mode.is_positive


@schemathesis.hook
def before_call(ctx, case, kwargs):
    if not is_positive(case):
        return
    operation = case.operation.definition.raw
    names = {p.get("name", "").lower() for p in operation.get("parameters", [])}
    if "x-superpay-signature" in names:
        party = next((party for start, party in SIGNER_BY_PATH if case.operation.path.startswith(start)), None)
        if party is None or party not in SIGNERS:
            raise AssertionError(f"no signer for the signed route {case.operation.label}: add it to SIGNER_BY_PATH")
        kwargs["auth"] = Signed(SIGNERS[party]["key_id"], SIGNERS[party]["secret"])
    scopes = [scope for requirement in operation.get("security", []) for scope in requirement.get("jwt", [])]
    if ADMIN_SCOPE in scopes and ADMIN_TOKEN:
        kwargs["auth"] = Bearer(ADMIN_TOKEN)

# The codes that say "this request is not what the route reads": the document promised otherwise.
MALFORMED = {
    "malformed_json",
    "invalid_id",
    "invalid_cursor",
    "invalid_counterparty",
    "amount_not_decimal_string",
    "amount_not_positive",
    "amount_too_many_decimals",
    "amount_over_limit",
    "unknown_currency",
    "idempotency_key_missing",
    "idempotency_key_invalid",
}


@schemathesis.check
def valid_requests_are_never_malformed(ctx, response, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return None
    try:
        code = json.loads(response.content).get("code")
    except (ValueError, AttributeError):
        return None
    if code in MALFORMED:
        raise AssertionError(f"a request the document calls valid was refused as malformed: {code}")
    return None
