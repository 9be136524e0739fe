"""superpay's own check for schemathesis (`cargo stack test`, SCHEMATHESIS_HOOKS=this file).

schemathesis's `positive_data_acceptance` wants every request the OpenAPI document calls valid to
be accepted. A payments API refuses valid-looking requests on purpose: a limit over the currency's
ceiling, a public key that is no curve point, money the wallet does not have. Those refusals carry
their own problem codes. What must never happen is a request the document calls valid refused as
malformed: that is the document (or the code) being wrong. This check fails exactly then, and the
run leaves `positive_data_acceptance` out.
"""

import json

import schemathesis

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
