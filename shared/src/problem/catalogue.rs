//! The catalogue of every public problem code: its HTTP status, a short title and when it happens.
//! A `Code` can only be declared here, so every problem+json answer names a catalogued code, and
//! `docs/api/errors.md` is generated from this list (its tests keep the two, the e2e tests and the
//! API pages in step).

/// One public problem code. Clients branch on `code`; `status` and `title` go into every answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Code {
    code: &'static str,
    status: u16,
    title: &'static str,
    when: &'static str,
}

impl Code {
    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn title(&self) -> &'static str {
        self.title
    }

    pub fn when(&self) -> &'static str {
        self.when
    }

    /// Whether sending the same request again may help: for a failure of ours or a partner's
    /// (5xx), and for the two conflicts that pass (`RETRYABLE_CONFLICTS`). Any other 4xx is a
    /// decision (a decline, a refusal, a bad request) the same request gets again, so the error-flow
    /// table may never answer it with a retry: "do not try again" stays so.
    pub fn may_retry(&self) -> bool {
        self.status >= 500 || RETRYABLE_CONFLICTS.iter().any(|c| c.code == self.code)
    }

    /// The status of the one case that answers otherwise, and when (see `Problem::alternate`).
    pub fn alternate(&self) -> Option<(u16, &'static str)> {
        ALTERNATES.iter().find(|(code, ..)| code.code == self.code).map(|&(_, status, when)| (status, when))
    }
}

macro_rules! catalogue {
    ($($name:ident = $code:literal, $status:literal, $title:literal, $when:literal;)+) => {
        $(
            pub const $name: &Code = &Code { code: $code, status: $status, title: $title, when: $when };
        )+
        /// Every code, in the order of the generated table.
        pub const ALL: &[&Code] = &[$($name),+];
    };
}

catalogue! {
    // 400: the request is malformed or names something invalid; nothing was read or changed.
    MALFORMED_JSON = "malformed_json", 400, "Malformed JSON body",
        "The body is empty, not JSON, lacks a required field or has a field its route does not name.";
    MALFORMED_HEADER = "malformed_header", 400, "Malformed header",
        "A header the route reads is not visible ASCII.";
    MISSING_PATH_PARAMETER = "missing_path_parameter", 400, "Missing path parameter",
        "The route's path parameter did not reach the function.";
    INVALID_ID = "invalid_id", 400, "Invalid id",
        "An id from outside (path parameter, id field, key id) breaks the id rule; `field` names it.";
    IDEMPOTENCY_KEY_MISSING = "idempotency_key_missing", 400, "Idempotency-Key missing",
        "A route that creates something or moves money got no Idempotency-Key header.";
    IDEMPOTENCY_KEY_INVALID = "idempotency_key_invalid", 400, "Invalid Idempotency-Key",
        "The Idempotency-Key is not 1 to 255 visible ASCII characters.";
    AMOUNT_NOT_DECIMAL_STRING = "amount_not_decimal_string", 400, "Amount not a decimal string",
        "An amount is not a string in the one decimal spelling (a JSON number, a sign, an exponent, a leading zero).";
    AMOUNT_NOT_POSITIVE = "amount_not_positive", 400, "Amount not positive",
        "An amount is zero.";
    AMOUNT_TOO_MANY_DECIMALS = "amount_too_many_decimals", 400, "Too many decimals",
        "An amount has more decimals than its currency's minor unit.";
    AMOUNT_OVER_LIMIT = "amount_over_limit", 400, "Amount over the currency's limit",
        "An amount is over its currency's per-operation limit.";
    UNKNOWN_CURRENCY = "unknown_currency", 400, "Unknown currency",
        "A currency is not one of the accepted ISO 4217 codes.";
    CURRENCY_NOT_ACCEPTED = "currency_not_accepted", 400, "Currency not accepted",
        "The merchant (or a mini-app's owner, or a partner platform) sells in another currency than the amount's.";
    CURRENCY_MISMATCH = "currency_mismatch", 400, "Refund in another currency",
        "A refund's (or a post's) amount is not in the currency the order or operation was paid in.";
    INVALID_CURSOR = "invalid_cursor", 400, "Invalid cursor",
        "A page's `before` is not a sequence number.";
    INVALID_COUNTERPARTY = "invalid_counterparty", 400, "Invalid counterparty",
        "A conversation's counterparty is not merchant:<id>, miniapp:<id> or platform.";
    INVALID_GROUP_NAME = "invalid_group_name", 400, "Invalid group name",
        "A config group's name breaks the group name rule.";
    INVALID_VERSION = "invalid_version", 400, "Invalid version",
        "A config version (query or ETag) is not a positive integer.";
    CONFLICTING_VERSIONS = "conflicting_versions", 400, "Conflicting versions",
        "A config read names two different versions (query and If-None-Match).";
    VERSION_FROM_FUTURE = "version_from_future", 400, "Version from the future",
        "A config read names a version later than the latest; `latest_version` says which is.";
    PARAMETERS_NOT_OBJECT = "parameters_not_object", 400, "Parameters not an object",
        "A config group's parameters are not a JSON object.";
    PARAMETERS_CONTAIN_NULL = "parameters_contain_null", 400, "Parameters contain null",
        "A config group's parameters hold a null, which a merge patch cannot store.";
    INVALID_PRECONDITION = "invalid_precondition", 400, "Invalid precondition",
        "A publish's If-Match or If-None-Match is not a quoted version or `*` as the route takes it.";
    INVALID_INTERFACE = "invalid_interface", 400, "Invalid interface",
        "A mini-app's interface descriptor breaks a rule (title, entry page, actions, permissions).";
    INVALID_SERVER_URL = "invalid_server_url", 400, "Invalid server URL",
        "A mini-app's server_url is not an absolute https URL without credentials, query or fragment.";
    INVALID_MINIAPP_ID = "invalid_miniapp_id", 400, "Invalid mini-app id",
        "A mini-app id holds a `:`, which the id rule allows but a mini-app id cannot.";
    INVALID_PARAMS = "invalid_params", 400, "Invalid params",
        "A mini-app request's params are not a JSON object or are too large.";
    UNKNOWN_ACTION = "unknown_action", 400, "Unknown action",
        "A mini-app request names an action its interface does not offer.";
    INVALID_PRODUCT_ID = "invalid_product_id", 400, "Invalid product id",
        "A purchase's product_id is not 1 to 100 printable characters.";
    INVALID_QUANTITY = "invalid_quantity", 400, "Invalid quantity",
        "A purchase's or an instruction's quantity is not from 1 to 1000.";
    ORDER_ID_MISMATCH = "order_id_mismatch", 400, "Order id mismatch",
        "A merchant's body names another order than its path.";
    INVALID_REASON = "invalid_reason", 400, "Invalid reason",
        "A refund's reason is over 200 characters.";
    INVALID_LISTING_TITLE = "invalid_listing_title", 400, "Invalid listing title",
        "A listing's title is not 1 to 120 characters, or holds a control or format character (invisible, or overriding the text's direction), a separator, private-use character, selector or blank filler.";
    LISTING_CURRENCY_MISMATCH = "listing_currency_mismatch", 400, "Listing in another currency",
        "A listing's price is not in the currency its merchant's account holds.";
    INVALID_LISTING_VERSION = "invalid_listing_version", 400, "Invalid listing version",
        "A publication's listing_version is not 1 to 2^53 - 1.";
    INVALID_THRESHOLD = "invalid_threshold", 400, "Invalid threshold",
        "A device co-signature threshold is not a decimal string from 0 to the currency's per-payment limit, in its minor units.";
    INVALID_CARD_NUMBER = "invalid_card_number", 400, "Invalid card number",
        "A card number is not 12 to 19 digits, not a length its network issues, or fails its check digit; the number is never repeated.";
    CARD_BRAND_NOT_ACCEPTED = "card_brand_not_accepted", 400, "Card network not accepted",
        "A card number's leading digits name no network we accept (Visa, Mastercard, Amex, Discover, JCB, UnionPay, Diners).";
    INVALID_IBAN = "invalid_iban", 400, "Invalid IBAN",
        "A bank account's IBAN is not 15 to 34 letters and digits with a country code and valid check digits.";
    INVALID_EXPIRY = "invalid_expiry", 400, "Invalid expiry",
        "A card's expiry_month is not 1 to 12, or its expiry_year not four digits at most 20 years ahead.";
    LINK_CODE_INVALID = "link_code_invalid", 400, "Invalid link code",
        "The link code is not one (not `<payload>.<signature>`, not its fields), or is not signed by the partner key it names.";
    INVALID_GRANT = "invalid_grant", 400, "Invalid grant",
        "A link's grant allows neither `read` nor `charge`, names caps in another currency than the partner's or beyond the limits, or names 0 or more than 10 instruments, or one twice.";
    INVALID_HOLDER = "invalid_holder", 400, "Invalid holder",
        "An instrument's holder is not 1 to 100 characters that show as themselves.";
    SECURITY_CODE_NOT_ACCEPTED = "security_code_not_accepted", 400, "Security code not accepted",
        "A card was sent with its security code (cvv, cvc, csc, ...): it is never accepted or stored; send the card without it.";
    INVALID_PARTNER_NAME = "invalid_partner_name", 400, "Invalid partner name",
        "A partner platform's name is not 1 to 100 characters that show as themselves.";
    INVALID_CALLBACK_URL = "invalid_callback_url", 400, "Invalid callback URL",
        "A partner platform's callback_url is not an absolute https URL without credentials, query or fragment.";
    INVALID_MERCHANT_NAME = "invalid_merchant_name", 400, "Invalid merchant name",
        "A merchant's name is not 1 to 100 characters, or holds a character that does not show as itself (as for a listing's title).";
    INVALID_PRODUCT_SERVER_URL = "invalid_product_server_url", 400, "Invalid product server URL",
        "A merchant's product_server_url is not an absolute https URL without credentials, query or fragment.";
    INVALID_STATUS = "invalid_status", 400, "Invalid status",
        "A status change names a status the party cannot take.";
    INVALID_GRACE_SECONDS = "invalid_grace_seconds", 400, "Invalid grace",
        "A key rotation's grace_seconds is not from 1 to 7 days.";
    INVALID_PUBLIC_KEY = "invalid_public_key", 400, "Invalid public key",
        "A device's public_key is not a base64 uncompressed P-256 point.";
    OFFLINE_LIMIT_TOO_HIGH = "offline_limit_too_high", 400, "Offline limit too high",
        "A device's offline limit is over the ceiling for its currency.";
    INVALID_FLOW_STEP = "invalid_flow_step", 400, "Invalid flow step",
        "A flow position (`at`, `start`) is not `<flow>/<step>` of a flow the error-flow table names.";
    INVALID_ERROR_CODE = "invalid_error_code", 400, "Invalid error code",
        "An error code sent to the flows routes is not 1 to 64 of a-z, 0-9 and `_`.";
    INVALID_CLIENT_FACTS = "invalid_client_facts", 400, "Invalid client facts",
        "A payment session's client facts name a platform, network or preference it does not know, or an installed payment app without its major.minor.patch version.";
    INVALID_PAYMENT_PIN = "invalid_payment_pin", 400, "Invalid payment PIN",
        "A payment PIN (`pin`, `old_pin`) is not exactly six digits.";
    INVALID_PAYMENT_PROCESS = "invalid_payment_process", 400, "Invalid payment process",
        "A payment session's `process` is not `foreground_app`, `simulated_sheet` or `simulated_only`.";
    INVALID_FORCE_DURATION = "invalid_force_duration", 400, "Invalid force duration",
        "An admin's force of a loading process asks for `minutes` outside 1 to 10,080 (a week).";
    DRY_RUN_TOO_LONG = "dry_run_too_long", 400, "Dry run too long",
        "A dry run of the error-flow table names more than 100 errors.";
    // 401: the caller is not who it must be.
    UNAUTHENTICATED = "unauthenticated", 401, "Unauthenticated",
        "A user's route ran without an authenticated user (no JWT authorizer on the route).";
    SIGNATURE_MISSING = "signature_missing", 401, "Signature missing",
        "A signed route's signature headers are missing or malformed.";
    SIGNATURE_INVALID = "signature_invalid", 401, "Signature invalid",
        "The key id is unknown or the signature does not match the request.";
    SIGNATURE_STALE = "signature_stale", 401, "Signature stale",
        "The signature's timestamp is more than 300 s from our clock.";
    SIGNATURE_REPLAYED = "signature_replayed", 401, "Signature replayed",
        "The signature's nonce was already used with this key id.";
    // 402
    INSUFFICIENT_FUNDS = "insufficient_funds", 402, "Insufficient funds",
        "The wallet does not hold the amount; nothing moved.";
    BANK_DECLINED = "bank_declined", 402, "Declined by the bank",
        "Not a problem answer: a cash movement or partner charge the bank declined says so in its `decline_code`; the same instrument must not be tried again for it.";
    // 403: the caller is known but may not do this.
    FORBIDDEN = "forbidden", 403, "Admin scope required",
        "An admin route ran for a caller without the superpay/admin scope.";
    MINIAPP_SESSION_INVALID = "miniapp_session_invalid", 403, "Mini-app session invalid",
        "A mini-app session is unknown, or another user's or another app's.";
    MINIAPP_SESSION_EXPIRED = "miniapp_session_expired", 403, "Mini-app session expired",
        "A mini-app session has expired; the app must be verified again.";
    MINIAPP_MAY_NOT_CHARGE = "miniapp_may_not_charge", 403, "Mini-app may not charge",
        "A mini-app request approves an amount but the app lacks the wallet.charge permission.";
    MINIAPP_SUSPENDED = "miniapp_suspended", 403, "Mini-app suspended",
        "The platform suspended the mini-app: it cannot be opened or used.";
    LINK_CODE_NOT_YOURS = "link_code_not_yours", 403, "Link code not yours",
        "The link code was issued for another user than the signed-in one.";
    CHARGE_NOT_GRANTED = "charge_not_granted", 403, "Charge not granted",
        "The user's link allows the partner to read its instruments, not to charge them.";
    DEVICE_REVOKED = "device_revoked", 403, "Device revoked",
        "The payer revoked the device whose offline code is presented.";
    TERMINAL_INACTIVE = "terminal_inactive", 403, "Terminal suspended",
        "An admin suspended the till terminal presenting an offline payment.";
    PAYEE_NOT_OWN_ACCOUNT = "payee_not_own_account", 403, "Payee not the publisher's account",
        "A listing names a payee account other than its publishing merchant's own.";
    LISTING_ID_NOT_OWN = "listing_id_not_own", 403, "Listing id not the merchant's",
        "A listing's id does not start with its publishing merchant's id and a dot (`m_9f2c....sea-view`).";
    INSTRUCTION_SIGNATURE_INVALID = "instruction_signature_invalid", 403, "Instruction signature invalid",
        "A transfer instruction is not signed by the platform's key as it stands (another key, a changed field, a display text that is not the one hashed); recorded as a security event.";
    INSTRUCTION_NOT_FOR_CALLER = "instruction_not_for_caller", 403, "Instruction for another payer",
        "A transfer instruction names another payer than the signed-in user; recorded as a security event.";
    INSTRUCTION_TERMS_MISMATCH = "instruction_terms_mismatch", 403, "Instruction terms differ",
        "A transfer instruction's amount, currency, payee or quantity is not the transfer side's own listing at that version; `fields` names them; recorded as a security event.";
    DEVICE_SIGNATURE_REQUIRED = "device_signature_required", 403, "Device signature required",
        "The transfer is above the payer's device co-signature threshold (`threshold`) and its confirmation carries no device signature; nothing moved.";
    DEVICE_SIGNATURE_INVALID = "device_signature_invalid", 403, "Device signature invalid",
        "The confirmation's device signature is not by one of the payer's enrolled, unrevoked devices over the instruction; recorded as a security event.";
    DEVICE_TOO_NEW = "device_too_new", 403, "Device too new",
        "The co-signing device was enrolled too recently to confirm transfers (a stolen token could enroll one); `usable_at` says from when it may.";
    PAYMENT_PIN_WRONG = "payment_pin_wrong", 403, "Payment PIN wrong",
        "The payment PIN is not the one set; `tries_left` says how many wrong tries remain before it locks.";
    // 404
    UNKNOWN_ROUTE = "unknown_route", 404, "Unknown route",
        "The function was invoked for a route it does not serve.";
    UNKNOWN_GROUP = "unknown_group", 404, "Unknown config group",
        "No config group has this name.";
    VERSION_NOT_IN_HISTORY = "version_not_in_history", 404, "Version not in history",
        "A config version is older than the last 50 kept.";
    UNKNOWN_MERCHANT = "unknown_merchant", 404, "Unknown merchant",
        "No merchant has this id.";
    UNKNOWN_TERMINAL = "unknown_terminal", 404, "Unknown terminal",
        "No till terminal of this merchant has this id.";
    UNKNOWN_MINIAPP = "unknown_miniapp", 404, "Unknown mini-app",
        "No mini-app has this id.";
    UNKNOWN_ORDER = "unknown_order", 404, "Unknown order",
        "No order has this id (or it is another merchant's).";
    UNKNOWN_DEVICE = "unknown_device", 404, "Unknown device",
        "No device of the caller has this id.";
    UNKNOWN_PAYMENT = "unknown_payment", 404, "Unknown payment",
        "No offline payment of this terminal has this id.";
    UNKNOWN_LISTING = "unknown_listing", 404, "Unknown listing",
        "No listing has this id on this side.";
    UNKNOWN_OPERATION = "unknown_operation", 404, "Unknown operation",
        "No operation has this id for the signed-in user.";
    UNKNOWN_INSTRUMENT = "unknown_instrument", 404, "Unknown instrument",
        "No instrument has this id for the signed-in user (or it was removed).";
    UNKNOWN_PARTNER = "unknown_partner", 404, "Unknown partner",
        "No partner platform has this id.";
    UNKNOWN_CASH_MOVEMENT = "unknown_cash_movement", 404, "Unknown cash movement",
        "No cash-in or cash-out of the signed-in user has this id.";
    UNKNOWN_LINK = "unknown_link", 404, "Unknown link",
        "No link of the signed-in user has this id, or (to a partner) no user of the partner's is linked now.";
    UNKNOWN_TOKEN = "unknown_token", 404, "Unknown token",
        "No instrument linked to the calling partner has this token (another partner's token names nothing).";
    UNKNOWN_PAYMENT_SESSION = "unknown_payment_session", 404, "Unknown payment session",
        "No payment session of the caller's has this id.";
    UNKNOWN_HOME_ELEMENT = "unknown_home_element", 404, "Unknown home element",
        "The caller's home shows no element with this id (it may have been resolved or expired).";
    UNKNOWN_PAYMENT_FORCE = "unknown_payment_force", 404, "No forced process",
        "An admin ends the force of a loading process for a user who has none.";
    UNKNOWN_CHARGE = "unknown_charge", 404, "Unknown charge",
        "No charge of the calling partner has this id.";
    // 409: the request conflicts with the resource's current state.
    IDEMPOTENCY_REQUEST_IN_PROGRESS = "idempotency_request_in_progress", 409, "Request in progress",
        "A request with this Idempotency-Key is still running.";
    BEYOND_LAST_MESSAGE = "beyond_last_message", 409, "Beyond the last message",
        "A conversation is marked read up to a message it does not have yet (a well-formed request the conversation's state refuses).";
    // Answers 403 in one case (`ALTERNATES`).
    MERCHANT_INACTIVE = "merchant_inactive", 409, "Merchant suspended",
        "The merchant is suspended: no purchase, capture, offline payment or mini-app registration or charge.";
    MERCHANT_EXISTS = "merchant_exists", 409, "Merchant exists",
        "The merchant was already registered with this Idempotency-Key.";
    TERMINAL_EXISTS = "terminal_exists", 409, "Terminal exists",
        "The terminal was already registered with this Idempotency-Key.";
    LISTING_CONFLICT = "listing_conflict", 409, "Listing conflict",
        "Other publications changed the listing while this one was judged, three times over; send it again.";
    LISTING_VERSION_MISMATCH = "listing_version_mismatch", 409, "Listing version mismatch",
        "A publication's listing_version is not the next one (nor the current one with the same terms, nor at least 1 for a side's first copy); `current_version` says which is current.";
    INSTRUCTION_LISTING_VERSION = "instruction_listing_version", 409, "Instruction for another listing version",
        "The transfer side's listing is at another version than the instruction's (its terms changed since); `current_version` says which; ask the platform for a new instruction.";
    INSTRUCTION_ALREADY_USED = "instruction_already_used", 409, "Instruction already used",
        "The transfer instruction, or another carrying its nonce, was already carried out by another request; nothing moved.";
    LISTING_NOT_FROZEN = "listing_not_frozen", 409, "Listing not frozen",
        "An unfreeze names a listing that is not frozen, or was published again since it was read.";
    OPERATION_NOT_HELD = "operation_not_held", 409, "Operation not held",
        "A post or void names an operation whose hold is already settled (posted, voided or released) or that never held.";
    POST_EXCEEDS_HOLD = "post_exceeds_hold", 409, "Post exceeds hold",
        "A post is more than the operation holds; `held` says how much it does.";
    HOLD_EXPIRED = "hold_expired", 409, "Hold expired",
        "A post came after the operation's hold expired: the hold goes back to the payer.";
    OPERATION_NOT_PAID = "operation_not_paid", 409, "Operation not paid",
        "A refund names an operation that paid the provider nothing (held, voided or released).";
    INSTRUMENT_EXISTS = "instrument_exists", 409, "Instrument exists",
        "The user already keeps an instrument with this number; `instrument_id` names it.";
    TOO_MANY_INSTRUMENTS = "too_many_instruments", 409, "Too many instruments",
        "The user keeps 20 instruments already: remove one first.";
    LINK_CODE_USED = "link_code_used", 409, "Link code used",
        "The link code was used already: the partner issues a new one.";
    PARTNER_IDENTITY_LINKED = "partner_identity_linked", 409, "Partner account linked",
        "The account on the partner that the code names is linked already (one partner account links to one user): it is unlinked first.";
    PARTNER_INACTIVE = "partner_inactive", 409, "Partner suspended",
        "The partner platform is suspended: it cannot be linked or charge.";
    INSTRUMENT_IN_USE = "instrument_in_use", 409, "Instrument in use",
        "A removal names an instrument whose cash movement the bank still owes an outcome: remove it once that movement is completed or declined.";
    PARTNER_EXISTS = "partner_exists", 409, "Partner exists",
        "The partner platform was already registered with this Idempotency-Key.";
    MINIAPP_EXISTS = "miniapp_exists", 409, "Mini-app exists",
        "The mini-app was already registered with this Idempotency-Key.";
    ROTATION_IN_PROGRESS = "rotation_in_progress", 409, "Rotation in progress",
        "A key is rotated while its previous key's grace runs, or it changed meanwhile.";
    NO_ROTATION_IN_GRACE = "no_rotation_in_grace", 409, "No rotation in grace",
        "A grace is ended where no previous key is honoured.";
    MERCHANT_DECLINED = "merchant_declined", 409, "Declined by the merchant",
        "Not a problem answer: an order its merchant declined says so in its `decline_code`; the same order must not be tried again.";
    ORDER_ALREADY_DECIDED = "order_already_decided", 409, "Order already decided",
        "The merchant's other decision on the order is recorded and is being carried out.";
    ORDER_ALREADY_SETTLED = "order_already_settled", 409, "Order already settled",
        "The order is already paid, declined or expired.";
    ORDER_EXPIRED = "order_expired", 409, "Order expired",
        "A confirm comes after the order's expires_at.";
    ORDER_NOT_EXPIRED = "order_not_expired", 409, "Order not expired",
        "An order's expiry check ran before the order expired.";
    ORDER_NOT_PAID = "order_not_paid", 409, "Order not paid",
        "A refund names an order that is not paid.";
    REFUND_EXCEEDS_CHARGE = "refund_exceeds_charge", 409, "Refund exceeds charge",
        "A partner's refund (or void) would pay back more than its charge less what its refunds took back already, or nothing is left to pay back.";
    CHARGE_NOT_COMPLETED = "charge_not_completed", 409, "Charge not completed",
        "A partner refunds or voids a charge that is pending or was declined: only a completed charge is paid back.";
    REFUND_EXCEEDS_PAID = "refund_exceeds_paid", 409, "Refund exceeds paid",
        "A refund is more than is still refundable on the order or operation; `refundable` says how much is.";
    MERCHANT_INSUFFICIENT_FUNDS = "merchant_insufficient_funds", 409, "Merchant account short",
        "The merchant's account does not hold the refund.";
    WALLET_CURRENCY_MISMATCH = "wallet_currency_mismatch", 409, "Wallet in another currency",
        "The wallet holds another currency than the payment's.";
    AMOUNT_MISMATCH = "amount_mismatch", 409, "Amount mismatch",
        "A mini-app's server asked for another amount than the user approved; nothing moved.";
    TOO_MANY_DEVICES = "too_many_devices", 409, "Too many devices",
        "The payer already has the most devices for offline payments.";
    RESERVE_CURRENCY_MISMATCH = "reserve_currency_mismatch", 409, "Reserve in another currency",
        "The payer's offline reserve holds another currency than the device's limit.";
    OFFLINE_CURRENCY_MISMATCH = "offline_currency_mismatch", 409, "Offline payments in another currency",
        "The payer's offline payments are fixed to another currency than the device's limit.";
    DEVICE_EXISTS = "device_exists", 409, "Device exists",
        "The device was already enrolled with this Idempotency-Key.";
    OFFLINE_LIMIT_EXCEEDED = "offline_limit_exceeded", 409, "Offline limit reached",
        "The device's unsettled payments leave too little of its limit; `available` says what is left.";
    OFFLINE_CODE_REPLAYED = "offline_code_replayed", 409, "Offline code replayed",
        "The offline code was already used.";
    ROLLBACK_NOT_EARLIER = "rollback_not_earlier", 409, "Rollback not earlier",
        "A rollback names a version that is not earlier than the current one.";
    PAYMENT_PIN_NOT_SET = "payment_pin_not_set", 409, "Payment PIN not set",
        "A payment is confirmed (or a PIN changed) before the user set a payment PIN.";
    PAYMENT_PIN_ALREADY_SET = "payment_pin_already_set", 409, "Payment PIN already set",
        "A payment PIN is set without `old_pin` while one is set.";
    PAYMENT_SESSION_EXPIRED = "payment_session_expired", 409, "Payment session expired",
        "The payment session is past its `expires_at` unconfirmed: start a new one; nothing moved.";
    PAYMENT_SESSION_CLOSED = "payment_session_closed", 409, "Payment session closed",
        "The payment session was cancelled (nothing moved; also the transfer side's answer to its instruction), or a cancel came after its payment was made (the payment stands).";
    PAYMENT_SESSION_NOT_CONFIRMED = "payment_session_not_confirmed", 409, "Payment session not confirmed",
        "A transfer instruction paid through a payment session is presented to the transfer side before the session records the user's confirmation of it.";
    HOME_ELEMENT_NOT_DISMISSABLE = "home_element_not_dismissable", 409, "Home element not dismissable",
        "The element is critical (money the user may lose) or the balance card: it goes when what it is about is resolved.";
    PAYMENT_PROCESS_NOT_OFFERED = "payment_process_not_offered", 409, "Payment process not offered",
        "A payment session is confirmed (or an event reported) from a loading process that is neither its own nor in its fallback chain.";
    // 410
    LINK_CODE_EXPIRED = "link_code_expired", 410, "Link code expired",
        "The link code is past its expiry, was issued for longer than 300 s, or says it was issued in the future.";
    LINK_ENDED = "link_ended", 410, "Link ended",
        "The link was ended by the user or the partner: nothing may be read or charged under it.";
    INSTRUMENT_REMOVED = "instrument_removed", 410, "Instrument removed",
        "The user removed the linked instrument the token names.";
    // Answers 409 in one case (`ALTERNATES`).
    MINIAPP_REVOKED = "miniapp_revoked", 410, "Mini-app revoked",
        "The mini-app was revoked: it can no longer be opened or used.";
    // 412, 413, 422, 423, 424, 428
    VERSION_CONFLICT = "version_conflict", 412, "Version conflict",
        "A publish's If-Match names a version that is no longer current; `current_version` says which is.";
    GROUP_EXISTS = "group_exists", 412, "Group exists",
        "A publish with If-None-Match: * names a group that exists; `current_version` says its version.";
    BODY_TOO_LARGE = "body_too_large", 413, "Body too large",
        "The request body is over 256 KiB; `limit_bytes` says the limit.";
    PARAMETERS_TOO_LARGE = "parameters_too_large", 413, "Parameters too large",
        "A config group's parameters are over the size a group may have.";
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused", 422, "Idempotency-Key reused",
        "The Idempotency-Key was used for a different request.";
    OVER_OFFLINE_LIMIT = "over_offline_limit", 422, "Over the offline limit",
        "An offline payment is more than the device's whole limit, or in another currency.";
    OFFLINE_CODE_MALFORMED = "offline_code_malformed", 422, "Offline code malformed",
        "The presented code is not a superpay offline code.";
    OFFLINE_CODE_INVALID = "offline_code_invalid", 422, "Offline code invalid",
        "The offline code's device is unknown or its signature does not match.";
    OFFLINE_CODE_EXPIRED = "offline_code_expired", 422, "Offline code expired",
        "The offline code is older than the offline window.";
    OFFLINE_CODE_FROM_FUTURE = "offline_code_from_future", 422, "Offline code from the future",
        "The offline code's time is ahead of our clock.";
    INSTRUCTION_MALFORMED = "instruction_malformed", 422, "Instruction malformed",
        "A signed transfer instruction's id, listing_id or nonce breaks the id rule; recorded as a security event.";
    INSTRUCTION_LIFETIME_INVALID = "instruction_lifetime_invalid", 422, "Instruction lifetime invalid",
        "A transfer instruction is issued ahead of our clock or lives longer than 300 s; recorded as a security event.";
    INSTRUCTION_EXPIRED = "instruction_expired", 422, "Instruction expired",
        "The transfer instruction's expiry has passed; ask the platform for a new one.";
    CONFIRMATION_MISMATCH = "confirmation_mismatch", 422, "Confirmation of another text",
        "The user's confirmation names another display_hash than the instruction's; recorded as a security event.";
    CARD_EXPIRED = "card_expired", 422, "Card expired",
        "The card's expiry month has passed (when it is added, or used for a cash-in).";
    INSTRUMENT_CANNOT_RECEIVE = "instrument_cannot_receive", 422, "Instrument cannot receive",
        "A cash-out names a card: money is paid out to a bank account only.";
    LINK_CAP_EXCEEDED = "link_cap_exceeded", 422, "Link cap exceeded",
        "A partner's charge is over the link's per-charge cap, or over what its charges may add up to (or number) per rolling 24 hours; `limit` names the cap, `used` what the last 24 hours took of it.";
    REPLACEMENT_KIND_MISMATCH = "replacement_kind_mismatch", 422, "Replacement of another kind",
        "An instrument is replaced by one of another kind: a card is replaced by a card, a bank account by a bank account.";
    CASH_LIMIT_EXCEEDED = "cash_limit_exceeded", 422, "Cash limit exceeded",
        "A cash-in or cash-out is over what one movement may move, or over what (or how many) the user's movements in that direction and currency may add up to per rolling 24 hours; `limit` names the limit, `used` what the last 24 hours took of it.";
    LISTING_FROZEN = "listing_frozen", 423, "Listing frozen",
        "The transfer side froze the listing: the platform's copy disagreed with its own at one version; an admin unfreezes it.";
    PAYMENT_PIN_LOCKED = "payment_pin_locked", 423, "Payment PIN locked",
        "The payment PIN took five wrong tries in a row: it is locked until `locked_until` (epoch seconds; the template's `PaymentPinLockoutSeconds` after the fifth).";
    FLOW_TABLE_INVALID = "flow_table_invalid", 422, "Error-flow table invalid",
        "An error-flow table is refused at publish (or dry run): its shape, a rule that can never match, a name it does not define, or a retry of a code that may not be retried; `detail` says which.";
    FLOW_TABLE_CYCLE = "flow_table_cycle", 422, "Error-flow table loops",
        "An error-flow table's switches lead from a step back to itself, so a lasting error would switch flows forever; `cycle` names the path.";
    HOME_ANNOUNCEMENTS_INVALID = "home_announcements_invalid", 422, "Home announcements invalid",
        "A home-announcements group is refused at publish: its shape, an announcement whose id, title, body or url breaks its rule, or a rule that names one not published or can never match; `detail` says which.";
    PAYMENT_POLICY_INVALID = "payment_policy_invalid", 422, "Payment policy invalid",
        "A payment-sessions policy is refused at publish: its shape, a rule that can never match, a fact value that never occurs, or a launch deadline out of bounds; `detail` says which.";
    WEAK_PAYMENT_PIN = "weak_payment_pin", 422, "Payment PIN too easy",
        "A new payment PIN is one digit repeated or a run of digits up or down (`123456`): the first guesses of anyone.";
    FLOW_TARGET_UNKNOWN = "flow_target_unknown", 422, "Error-flow target unknown",
        "An error-flow table switches to (or maps a route to) a flow or step it does not define.";
    PAYMENT_APP_LAUNCH_FAILED = "payment_app_launch_failed", 424, "Payment app did not launch",
        "Not a problem answer: what a client reports when the payment app would not start (or did not come up by the session's launch deadline); the error-flow table answers it with the next loading process.";
    PRECONDITION_REQUIRED = "precondition_required", 428, "Precondition required",
        "A publish has neither If-Match nor If-None-Match.";
    // 5xx: ours, not the caller's; nothing changed and a retry with the same key is safe.
    INTERNAL = "internal", 500, "Internal error",
        "A failure of ours (a store, KMS, a bug); the cause is logged, never sent.";
    MINIAPP_SERVER_UNREACHABLE = "miniapp_server_unreachable", 502, "Mini-app server unreachable",
        "The mini-app's server could not be reached; nothing moved.";
    MINIAPP_SERVER_INVALID_ANSWER = "miniapp_server_invalid_answer", 502, "Mini-app server answer invalid",
        "The mini-app's server answered with something that is not a valid answer; nothing moved.";
    MINIAPP_SERVER_BAD_SIGNATURE = "miniapp_server_bad_signature", 502, "Mini-app server answer unsigned",
        "The mini-app's server's answer is not signed with its key; nothing moved.";
    LEDGER_BUSY = "ledger_busy", 503, "Ledger busy",
        "The accounts were too busy to update; nothing moved.";
    DEVICE_BUSY = "device_busy", 503, "Device busy",
        "The device's other payments changed while this one was recorded; nothing was recorded.";
    MINIAPP_SERVER_TIMEOUT = "miniapp_server_timeout", 504, "Mini-app server timeout",
        "The mini-app's server did not answer in time; nothing moved.";
}

/// The 4xx that pass: the first request with the key is still running (sent again with the same
/// key, it answers that request's outcome), or other publications kept changing a listing.
const RETRYABLE_CONFLICTS: &[&Code] = &[IDEMPOTENCY_REQUEST_IN_PROGRESS, LISTING_CONFLICT];

/// The codes that answer with another status in one case: that status, and when (`Code::alternate`).
const ALTERNATES: &[(&Code, u16, &str)] = &[
    (MERCHANT_INACTIVE, 403, "On a suspended merchant's refund: it moves no money out of its account."),
    (MINIAPP_REVOKED, 409, "When an admin changes a revoked mini-app's status: revocation is final."),
];

/// Looks a code up by its string (for the tests and tools that read codes from text).
pub fn find(code: &str) -> Option<&'static Code> {
    ALL.iter().copied().find(|c| c.code == code)
}

/// The table of `docs/api/errors.md`.
pub fn document() -> String {
    let mut doc = String::from(
        "# Error codes\n\n\
         <!-- Generated from shared/src/problem/catalogue.rs: do not edit. After changing the catalogue, \
         regenerate with `UPDATE_ERRORS_DOC=1 cargo test -p superpay-shared errors_doc`. -->\n\n\
         Every problem+json answer (see [conventions](conventions.md)) carries one of these codes, with this \
         status and title, and `flow_control`: what the client does next, from the \
         [error-flow table](flows.md). Clients branch on `code`; `detail` says what happened in words. Only a \
         5xx (or `idempotency_request_in_progress`, `listing_conflict`) may be retried as it is: any other 4xx is a \
         decision the same request gets again.\n\n\
         | code | status | title | when |\n|---|---|---|---|\n",
    );
    for c in ALL {
        let mut status = c.status.to_string();
        let mut when = c.when.to_owned();
        if let Some((alternate, alternate_when)) = c.alternate() {
            status = format!("{status}, {alternate}");
            when = format!("{when} {alternate}: {alternate_when}");
        }
        doc.push_str(&format!("| `{}` | {status} | {} | {when} |\n", c.code, c.title));
    }
    doc
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};
    use std::path::{Path, PathBuf};

    use super::*;

    fn repository() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("shared/ is in the repository").to_path_buf()
    }

    #[test]
    fn codes_are_unique_and_name_one_condition_each() {
        let mut codes = HashMap::new();
        let mut words = HashMap::new();
        let mut titles = HashMap::new();
        for c in ALL {
            assert!(codes.insert(c.code, c).is_none(), "{} is declared twice", c.code);
            let mut sorted: Vec<&str> = c.code.split('_').collect();
            sorted.sort_unstable();
            if let Some(other) = words.insert(sorted, c.code) {
                panic!("{other} and {} are the same words in another order", c.code);
            }
            if let Some(other) = titles.insert(c.title, c.code) {
                panic!("{other} and {} have the same title", c.code);
            }
            assert!(c.code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{} is not snake_case", c.code);
            for status in std::iter::once(c.status).chain(c.alternate().map(|(s, _)| s)) {
                assert!((400..600).contains(&status), "{} has status {status}, not 4xx or 5xx", c.code);
            }
            assert!(c.when.ends_with('.'), "{}'s `when` is one sentence", c.code);
        }
    }

    /// The codes the e2e tests assert: the first string after a `["code"]` in its statement (not
    /// an index such as `["current_version"]`), and the string after a `StatusCode::X,` (the case
    /// tables).
    fn codes_asserted_in(text: &str) -> BTreeSet<String> {
        let literal = |mut rest: &str| -> Option<String> {
            loop {
                let start = rest.find('"')?;
                let end = start + 1 + rest[start + 1..].find('"')?;
                if !rest[..start].ends_with('[') {
                    return Some(rest[start + 1..end].to_owned());
                }
                rest = &rest[end + 1..];
            }
        };
        let mut found = BTreeSet::new();
        for (at, _) in text.match_indices("[\"code\"]") {
            let rest = &text[at + 8..];
            let statement = &rest[..rest.find(';').unwrap_or(rest.len())];
            found.extend(literal(statement));
        }
        // The constants' names of the 4xx and 5xx statuses (`PAYLOAD_TOO_LARGE`, ...).
        let refusals: Vec<String> = (400..600)
            .filter_map(|s| lambda_http::http::StatusCode::from_u16(s).ok()?.canonical_reason())
            .map(|reason| reason.to_ascii_uppercase().replace([' ', '-'], "_"))
            .collect();
        for (at, _) in text.match_indices("StatusCode::") {
            let rest = &text[at + 12..];
            let name = &rest[..rest.find(|c: char| !(c.is_ascii_uppercase() || c == '_')).unwrap_or(rest.len())];
            let after = &rest[name.len()..];
            if !refusals.iter().any(|r| r == name) {
                continue;
            }
            if let Some(after) = after.strip_prefix(',') {
                let after = after.trim_start();
                let after = after.strip_prefix("Some(").unwrap_or(after);
                if after.starts_with('"') {
                    found.extend(literal(after));
                }
            }
        }
        found.retain(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        found
    }

    /// The codes an API page names: each backticked word after a 4xx or 5xx status, and the
    /// backticked words listed after it (`, ` / ` or ` / ` and `, skipping parentheses).
    /// `amount_*` stands for every code with that prefix.
    fn codes_documented_in(text: &str) -> BTreeSet<String> {
        let is_code = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'*');
        let mut found = BTreeSet::new();
        for (at, _) in text.match_indices(" `") {
            let status = at.checked_sub(3).and_then(|start| text.get(start..at)).unwrap_or_default();
            let before = text[..at - status.len()].chars().next_back();
            if !(status.starts_with(['4', '5'])
                && status.bytes().all(|b| b.is_ascii_digit())
                && !before.is_some_and(char::is_alphanumeric))
            {
                continue;
            }
            let mut rest = &text[at + 1..];
            while let Some((word, after)) = rest.strip_prefix('`').and_then(|r| r.split_once('`')) {
                if !is_code(word) {
                    break;
                }
                found.insert(word.to_owned());
                rest = after;
                if rest.starts_with(" (") {
                    let mut depth = 0;
                    let end = rest.char_indices().find_map(|(at, c)| {
                        depth += match c {
                            '(' => 1,
                            ')' => -1,
                            _ => 0,
                        };
                        (depth == 0 && c == ')').then_some(at + 1)
                    });
                    rest = &rest[end.unwrap_or(rest.len())..];
                }
                let Some(next) = [", or ", ", ", " or ", " and "].iter().find_map(|s| rest.strip_prefix(s)) else {
                    break;
                };
                rest = next;
            }
        }
        found
    }

    fn missing(found: &BTreeSet<String>) -> Vec<&String> {
        found
            .iter()
            .filter(|word| match word.strip_suffix('*') {
                Some(prefix) => !ALL.iter().any(|c| c.code.starts_with(prefix)),
                None => find(word).is_none(),
            })
            .collect()
    }

    /// The files under `dir` (and its folders) named `*.extension`, with their text.
    fn files(dir: &str, extension: &str) -> Vec<(PathBuf, String)> {
        let (mut files, mut dirs) = (Vec::new(), vec![repository().join(dir)]);
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
                let path = entry.expect("a directory entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == extension) {
                    let text = std::fs::read_to_string(&path).expect("a readable file");
                    files.push((path, text));
                }
            }
        }
        files.sort();
        files
    }

    #[test]
    fn every_code_the_e2e_tests_assert_is_catalogued() {
        let mut all = BTreeSet::new();
        for (path, text) in files("tests/e2e", "rs") {
            let found = codes_asserted_in(&text);
            assert!(
                missing(&found).is_empty(),
                "{} asserts codes the catalogue lacks: {:?}",
                path.display(),
                missing(&found)
            );
            all.extend(found);
        }
        // The scan must keep finding the suite's codes, or it checks nothing.
        assert!(all.len() >= 60, "only {} codes found in tests/e2e: {all:?}", all.len());
    }

    #[test]
    fn every_code_the_api_pages_name_is_catalogued() {
        let mut all = BTreeSet::new();
        for (path, text) in files("docs/api", "md") {
            if path.ends_with("errors.md") {
                continue;
            }
            let found = codes_documented_in(&text);
            assert!(
                missing(&found).is_empty(),
                "{} names codes the catalogue lacks: {:?}",
                path.display(),
                missing(&found)
            );
            all.extend(found);
        }
        assert!(all.len() >= 60, "only {} codes found in docs/api: {all:?}", all.len());
    }

    #[test]
    fn the_scans_read_the_usual_shapes() {
        let asserted = codes_asserted_in(
            r#"assert_eq!(x.1["code"], "merchant_inactive");
               assert_eq!((status, b["code"].as_str(), b["n"]), (StatusCode::NOT_FOUND, Some("unknown_order"), 2));
               let cases = [("a b", StatusCode::BAD_REQUEST, "invalid_id")];
               assert_eq!((status, b["outcome"].as_str()), (StatusCode::CREATED, Some("charged")));"#,
        );
        assert_eq!(asserted, BTreeSet::from(["merchant_inactive", "unknown_order", "invalid_id"].map(String::from)));
        let documented = codes_documented_in(
            "| 400 `amount_*`, `invalid_id` (with `field`), or `x_y`; 409 `order_expired` (a `paid` one) and `z` with `w` |\n\
             401 `{\"message\":\"Unauthorized\"}`",
        );
        assert_eq!(
            documented,
            BTreeSet::from(["amount_*", "invalid_id", "x_y", "order_expired", "z"].map(String::from))
        );
    }

    #[test]
    fn errors_doc_is_generated_from_the_catalogue() {
        let path = repository().join("docs/api/errors.md");
        let generated = document();
        if std::env::var_os("UPDATE_ERRORS_DOC").is_some() {
            std::fs::write(&path, &generated).expect("docs/api/errors.md is writable");
        }
        let stored = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            stored == generated,
            "docs/api/errors.md is not the catalogue's table: run UPDATE_ERRORS_DOC=1 cargo test -p superpay-shared errors_doc"
        );
    }
}
