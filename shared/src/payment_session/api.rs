//! The payment sessions function's routes (template.yaml `PaymentSessionsFunction`):
//!
//! - `POST /payment-sessions`       with an Idempotency-Key, `{"pay": {"kind": "purchase" |
//!   "miniapp_charge" | "transfer_instruction", ...}, "client": {...}}`: decides how the client
//!   loads the payment UI; 201 the session. No money moves.
//! - `GET  /payment-sessions/{id}`  the caller's own session, its state the truth of its outcome
//! - `POST /payment-sessions/{id}/confirm`  `{"process": ..., "pin": "......"}`: pays, once
//!   whichever process confirms (a transfer instruction's: records the consent the transfer side
//!   pays on)
//! - `POST /payment-sessions/{id}/events`   `{"event": ..., "process": ...}`: the next step
//! - `PUT  /payment-pin`            `{"pin": "......", "old_pin": "......"}` sets or changes the
//!   caller's payment PIN
//! - `PUT|DELETE /payment-forces/{user}`  (admin) `{"process": ..., "minutes": ...}`: forces a
//!   process for a user's next sessions (testing), or ends it
//! - `DELETE /payment-pins/{user}`  (admin) resets a user's forgotten PIN

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::breaker::{self, Outcome};
use super::pin::Pin;
use super::pin::store::{PIN_SET, PinStore, Set, not_set};
use super::policy::{ClientFacts, Decision, GROUP, Policy, Process};
use super::store::{BreakerStore, Cancel, Force, PaymentSessionStore, SESSION_CANCELLABLE, SESSION_NEW, SESSION_OPEN};
use super::{
    Event, Pay, Payment, PaymentSession, PaymentSessionView, ProcessView, SessionClient, Stage, fallback_chain,
    home_element_id,
};
use crate::Problem;
use crate::attention::AttentionStore;
use crate::audit::{AuditEntry, commit_audited};
use crate::auth::Caller;
use crate::aws::{self, MissingEnv};
use crate::clock::now_epoch_seconds;
use crate::config::GroupName;
use crate::config::held::HeldGroup;
use crate::dynamo::{StoreError, Write, transact};
use crate::flows::FlowAnswer;
use crate::flows::control::FlowControl;
use crate::http::{json_body, json_response, path_parameter, route_key};
use crate::idempotency::store::{CLAIM_HELD, Claim, IdempotencyStore};
use crate::idempotency::{StoredResponse, in_flight, key_reused};
use crate::instruction::consent;
use crate::instruction::operation::{OPERATION_NEW, OperationStore, Refusal, judge_signed};
use crate::instruction::signed::{Instruction, PlatformKey};
use crate::ledger::store::TransferError;
use crate::merchant::inactive_merchant;
use crate::merchant::store::MERCHANT_ACTIVE;
use crate::miniapp::UserRequest;
use crate::miniapp::service::RequestService;
use crate::money::{Money, MoneyInput};
use crate::problem::catalogue;
use crate::purchase::checkout::Checkout;
use crate::purchase::{OrderState, PurchaseRequest, ValidPurchase};
use crate::security::{SecurityEvent, SecurityEvents};

/// How long an order made by a confirmation may wait for its merchant before another confirmation
/// sends it again (the one that made it may have died before sending it).
const FORWARD_AGAIN_AFTER_SECONDS: i64 = 5;

pub struct PaymentSessionsApi {
    control: FlowControl,
    sessions: PaymentSessionStore,
    /// A confirmed session's payment is a purchase, made as the purchases route makes one, or a
    /// mini-app charge, relayed as the mini-apps route relays one.
    checkout: Checkout,
    requests: RequestService,
    /// A transfer instruction's payment is the transfer side's operation, read here, never written;
    /// its signature is checked with the platform's public key.
    operations: OperationStore,
    platform: PlatformKey,
    order_ttl_seconds: i64,
    pins: PinStore,
    breaker: BreakerStore,
    audit_table: String,
    security: SecurityEvents,
    /// An open session is a time-bound element of its user's home.
    home: AttentionStore,
    policy: HeldGroup<Policy>,
    idempotency: IdempotencyStore,
    dynamodb: aws_sdk_dynamodb::Client,
}

/// `POST /payment-sessions/{id}/confirm`'s body.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct ConfirmRequest {
    /// The process the user confirms in: one the session offers.
    #[cfg_attr(feature = "openapi", schemars(with = "Process"))]
    process: String,
    /// The user's payment PIN, six digits.
    // Raw, so that no refusal can quote it (`Pin::parse`).
    #[cfg_attr(feature = "openapi", schemars(with = "String", regex(pattern = r"^[0-9]{6}$")))]
    pin: Value,
}

/// `POST /payment-sessions/{id}/events`'s body.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct EventRequest {
    event: Event,
    /// The process the event happened in: one the session offers.
    #[cfg_attr(feature = "openapi", schemars(with = "Process"))]
    process: String,
}

/// `PUT /payment-forces/{user}`'s body.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct ForceRequest {
    /// The process the user's next sessions load by.
    #[cfg_attr(feature = "openapi", schemars(with = "Process"))]
    process: String,
    /// How long it holds, 1 to 10080 (a week); an hour when left out.
    #[serde(default, deserialize_with = "crate::http::optional_whole")]
    #[cfg_attr(feature = "openapi", schemars(range(min = 1, max = MAX_FORCE_MINUTES)))]
    minutes: Option<u32>,
}

/// The longest an admin's force holds: a week.
const MAX_FORCE_MINUTES: u32 = 7 * 24 * 60;

/// `PUT /payment-pin`'s body: the first PIN, or a new one with the one set.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct PinRequest {
    /// Six digits, neither one digit repeated nor a run up or down (`123456`).
    #[cfg_attr(feature = "openapi", schemars(with = "String", regex(pattern = r"^[0-9]{6}$")))]
    pin: Value,
    /// The PIN set, to change it; left out (or null) the first time.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schemars(with = "Option<String>", regex(pattern = r"^[0-9]{6}$")))]
    old_pin: Option<Value>,
}

/// `PUT /payment-pin`'s answer.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
struct PaymentPinSet {
    /// `set` (the first PIN, 201) or `changed` (200).
    payment_pin: &'static str,
}

/// `DELETE /payment-pins/{user}`'s answer.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
struct PaymentPinReset {
    user: String,
    /// `reset`.
    payment_pin: &'static str,
}

/// The answer of `PUT` and `DELETE /payment-forces/{user}`.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
struct PaymentForceView {
    user: String,
    /// The process forced for the user's sessions until when; null when none is.
    forced: Option<Force>,
}

/// `POST /payment-sessions/{id}/events`'s answer.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
struct SessionEventAnswer {
    /// The process to load next, null when there is none (or the session is not open).
    next: Option<NextProcess>,
    /// The error-flow table's answer to a failed launch or a timeout (docs/api/flows.md), else null.
    flow_control: Option<FlowAnswer>,
    session: PaymentSessionView,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
struct NextProcess {
    process: Process,
    needs: ProcessView,
}

/// The routes' documentation (`crate::openapi`).
#[cfg(feature = "openapi")]
pub const ROUTES: &[crate::openapi::RouteDoc] = {
    use crate::openapi::{Header, RouteDoc, schema};
    &[
        RouteDoc {
            key: "POST /payment-sessions",
            summary: "start paying a purchase, a mini-app charge or a transfer instruction: the server decides how the client loads the payment UI and how it falls back; no money moves",
            request: Some(schema::<CreateRequest>),
            path: &[],
            query: &[],
            answers: &[(201, Some(schema::<PaymentSessionView>))],
            codes: &[
                catalogue::INVALID_ID,
                catalogue::INVALID_PRODUCT_ID,
                catalogue::INVALID_QUANTITY,
                catalogue::INVALID_PARAMS,
                catalogue::AMOUNT_NOT_DECIMAL_STRING,
                catalogue::AMOUNT_NOT_POSITIVE,
                catalogue::AMOUNT_TOO_MANY_DECIMALS,
                catalogue::AMOUNT_OVER_LIMIT,
                catalogue::UNKNOWN_CURRENCY,
                catalogue::INVALID_CLIENT_FACTS,
                // A purchase's merchant.
                catalogue::UNKNOWN_MERCHANT,
                catalogue::MERCHANT_INACTIVE,
                catalogue::CURRENCY_NOT_ACCEPTED,
                // A mini-app charge's session, app, action and owner.
                catalogue::MINIAPP_SESSION_INVALID,
                catalogue::MINIAPP_SESSION_EXPIRED,
                catalogue::UNKNOWN_MINIAPP,
                catalogue::MINIAPP_SUSPENDED,
                catalogue::MINIAPP_REVOKED,
                catalogue::UNKNOWN_ACTION,
                catalogue::MINIAPP_MAY_NOT_CHARGE,
                // A transfer instruction's signature, terms and use.
                catalogue::INSTRUCTION_SIGNATURE_INVALID,
                catalogue::INSTRUCTION_MALFORMED,
                catalogue::INSTRUCTION_LIFETIME_INVALID,
                catalogue::INSTRUCTION_EXPIRED,
                catalogue::INSTRUCTION_NOT_FOR_CALLER,
                catalogue::INSTRUCTION_ALREADY_USED,
            ],
            headers: &[Header::IdempotencyKey],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "GET /payment-sessions/{id}",
            summary: "one of the caller's payment sessions, its state the outcome of its payment",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<PaymentSessionView>))],
            codes: &[catalogue::UNKNOWN_PAYMENT_SESSION],
            headers: &[],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "POST /payment-sessions/{id}/confirm",
            summary: "confirm a session with the payment PIN in one of its processes: its payment is made once, whichever process confirms (a transfer instruction's consent recorded); a confirmed session answers as it stands",
            request: Some(schema::<ConfirmRequest>),
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<PaymentSessionView>))],
            codes: &[
                catalogue::INVALID_PAYMENT_PROCESS,
                catalogue::INVALID_PAYMENT_PIN,
                catalogue::UNKNOWN_PAYMENT_SESSION,
                catalogue::PAYMENT_SESSION_CLOSED,
                catalogue::PAYMENT_SESSION_EXPIRED,
                catalogue::PAYMENT_PROCESS_NOT_OFFERED,
                catalogue::PAYMENT_PIN_NOT_SET,
                catalogue::PAYMENT_PIN_WRONG,
                catalogue::PAYMENT_PIN_LOCKED,
                // A purchase's order.
                catalogue::UNKNOWN_MERCHANT,
                catalogue::MERCHANT_INACTIVE,
                catalogue::INSUFFICIENT_FUNDS,
                catalogue::WALLET_CURRENCY_MISMATCH,
                catalogue::LEDGER_BUSY,
                // A mini-app charge, judged again before it is relayed.
                catalogue::MINIAPP_SESSION_INVALID,
                catalogue::MINIAPP_SESSION_EXPIRED,
                catalogue::UNKNOWN_MINIAPP,
                catalogue::MINIAPP_SUSPENDED,
                catalogue::MINIAPP_REVOKED,
                catalogue::UNKNOWN_ACTION,
                catalogue::MINIAPP_MAY_NOT_CHARGE,
                catalogue::CURRENCY_NOT_ACCEPTED,
            ],
            headers: &[],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "POST /payment-sessions/{id}/events",
            summary: "report how loading the payment UI went (launch failed, timed out, back from the app, cancelled): the process to load next, or the session as it now stands",
            request: Some(schema::<EventRequest>),
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<SessionEventAnswer>))],
            codes: &[
                catalogue::INVALID_PAYMENT_PROCESS,
                catalogue::UNKNOWN_PAYMENT_SESSION,
                catalogue::PAYMENT_PROCESS_NOT_OFFERED,
                catalogue::PAYMENT_SESSION_EXPIRED,
                catalogue::PAYMENT_SESSION_CLOSED,
            ],
            headers: &[],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "PUT /payment-pin",
            summary: "set the caller's payment PIN (201), or change it with the one set (200)",
            request: Some(schema::<PinRequest>),
            path: &[],
            query: &[],
            answers: &[(201, Some(schema::<PaymentPinSet>)), (200, Some(schema::<PaymentPinSet>))],
            codes: &[
                catalogue::INVALID_PAYMENT_PIN,
                catalogue::WEAK_PAYMENT_PIN,
                catalogue::PAYMENT_PIN_ALREADY_SET,
                catalogue::PAYMENT_PIN_NOT_SET,
                catalogue::PAYMENT_PIN_WRONG,
                catalogue::PAYMENT_PIN_LOCKED,
            ],
            headers: &[],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "PUT /payment-forces/{user}",
            summary: "an admin forces a loading process for a user's next sessions (testing), for an hour or as long as asked, up to a week",
            request: Some(schema::<ForceRequest>),
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<PaymentForceView>))],
            codes: &[catalogue::INVALID_PAYMENT_PROCESS, catalogue::INVALID_FORCE_DURATION],
            headers: &[],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "DELETE /payment-forces/{user}",
            summary: "an admin ends the process forced for a user",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<PaymentForceView>))],
            codes: &[catalogue::UNKNOWN_PAYMENT_FORCE],
            headers: &[],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "DELETE /payment-pins/{user}",
            summary: "an admin resets a user's forgotten payment PIN: the user then sets a new one as the first time",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<PaymentPinReset>))],
            codes: &[catalogue::PAYMENT_PIN_NOT_SET],
            headers: &[],
            form: None,
            pages: &[],
        },
    ]
};

/// The refusal of a session for an instruction carried out without one.
fn carried_out(instruction_id: &str) -> Problem {
    Problem::new(
        catalogue::INSTRUCTION_ALREADY_USED,
        format!(
            "instruction {instruction_id} was carried out already, without a session \
             (GET /transfer/operations/{instruction_id}); no session is made for it"
        ),
    )
}

fn process(text: &str) -> Result<Process, Problem> {
    serde_json::from_value(json!(text)).map_err(|_| {
        Problem::new(
            catalogue::INVALID_PAYMENT_PROCESS,
            format!("process {text:?} is not foreground_app, simulated_sheet or simulated_only"),
        )
    })
}

/// `POST /payment-sessions`'s body.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    pay: PayRequest,
    client: ClientFacts,
}

/// What is to be paid.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum PayRequest {
    /// A merchant's product, as `POST /purchases` buys one.
    Purchase(PurchaseRequest),
    /// A charge in a mini-app's interface: the app, the mini-app session of the user's
    /// verification, the interface's action and its params, and the amount the user approves.
    MiniappCharge {
        #[cfg_attr(feature = "openapi", schemars(schema_with = "crate::openapi::id"))]
        app_id: String,
        #[cfg_attr(feature = "openapi", schemars(schema_with = "crate::openapi::id"))]
        session_id: String,
        /// One of the actions the app's interface offers.
        action: String,
        /// A JSON object of at most 4096 bytes (serialized); `{}` when left out or null.
        #[cfg_attr(feature = "openapi", schemars(with = "Option<serde_json::Map<String, Value>>"))]
        params: Option<Value>,
        amount: MoneyInput,
    },
    /// A transfer instruction as the platform answered it (`POST /platform/instructions`).
    TransferInstruction { instruction: Instruction, signature: String },
}

/// What is to be paid, validated.
enum Paying {
    Purchase(ValidPurchase),
    MiniappCharge { app_id: String, request: UserRequest, amount: Money },
    TransferInstruction { instruction: Box<Instruction>, signature: String },
}

impl PaymentSessionsApi {
    pub async fn from_env() -> Result<Self, MissingEnv> {
        let config = aws::sdk_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        // One writer of security events, for the PIN store and the session routes.
        let security = SecurityEvents::from_env(&dynamodb)?;
        Ok(PaymentSessionsApi {
            control: FlowControl::from_env()?,
            sessions: PaymentSessionStore::new(dynamodb.clone(), aws::env("PAYMENT_SESSIONS_TABLE")?),
            checkout: Checkout::from_env(&config, &dynamodb)?,
            requests: RequestService::from_env(&config, &dynamodb)?,
            operations: OperationStore::new(dynamodb.clone(), aws::env("OPERATIONS_TABLE")?),
            platform: PlatformKey::new(aws_sdk_kms::Client::new(&config), aws::env("INSTRUCTION_SIGNING_KEY_ID")?),
            order_ttl_seconds: aws::seconds("ORDER_TTL_SECONDS")?,
            pins: PinStore::new(
                dynamodb.clone(),
                aws::env("PAYMENT_PINS_TABLE")?,
                security.clone(),
                aws_sdk_kms::Client::new(&config),
                aws::env("PAYMENT_PIN_KEY_ID")?,
                aws::seconds("PAYMENT_PIN_LOCKOUT_SECONDS")?,
            ),
            breaker: BreakerStore::new(
                dynamodb.clone(),
                aws::env("PAYMENT_BREAKER_TABLE")?,
                breaker::Settings {
                    window_seconds: aws::seconds("PAYMENT_BREAKER_WINDOW_SECONDS")?.max(1),
                    min_samples: aws::env("PAYMENT_BREAKER_MIN_SAMPLES")?
                        .parse()
                        .map_err(|_| MissingEnv("PAYMENT_BREAKER_MIN_SAMPLES (a number)".into()))?,
                },
            ),
            audit_table: aws::env("AUDIT_TABLE")?,
            security,
            home: AttentionStore::new(dynamodb.clone(), aws::env("HOME_TABLE")?),
            // Read for each session, so a new version decides the next one; parsed once per version.
            // One that no longer verifies is ours to fix, not the user's: the house policy decides.
            policy: HeldGroup::new(
                aws::env("CONFIG_TABLE")?,
                GroupName::parse(GROUP).expect("payment-sessions is a group name (policy::tests)"),
                0,
                |json, version| Policy::parse(json, version).map_err(|e| e.to_string()),
                Policy::house,
            ),
            idempotency: IdempotencyStore::new(dynamodb.clone(), aws::env("IDEMPOTENCY_TABLE")?),
            dynamodb,
        })
    }

    /// The error-flow table this function answers with (the chain comes from it too).
    pub fn control(&self) -> &FlowControl {
        &self.control
    }

    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Problem> {
        let caller = Caller::from_request(&request)?;
        match route_key(&request) {
            "POST /payment-sessions" => self.create(&request, &caller).await,
            "GET /payment-sessions/{id}" => {
                let session = self.own_session(&request, &caller).await?;
                Ok(json_response(StatusCode::OK, &self.view(&session, now_epoch_seconds()).await?))
            }
            "POST /payment-sessions/{id}/confirm" => self.confirm(&request, &caller).await,
            "PUT /payment-forces/{user}" | "DELETE /payment-forces/{user}" => self.force(&request, &caller).await,
            "DELETE /payment-pins/{user}" => self.reset_pin(&request, &caller).await,
            "POST /payment-sessions/{id}/events" => self.event(&request, &caller).await,
            "PUT /payment-pin" => {
                let PinRequest { pin, old_pin } = json_body(&request)?;
                let new = Pin::parse_new("pin", &pin)?;
                let old = old_pin.map(|old| Pin::parse("old_pin", &old)).transpose()?;
                // Nothing is stored or logged of either PIN; the set is a security event of the user's.
                let set = self.pins.set(&caller.subject, old.as_ref(), &new, now_epoch_seconds()).await?;
                let (status, done) = match set {
                    Set::First => (StatusCode::CREATED, "set"),
                    Set::Changed => (StatusCode::OK, "changed"),
                };
                Ok(json_response(status, &PaymentPinSet { payment_pin: done }))
            }
            other => Err(Problem::new(
                catalogue::UNKNOWN_ROUTE,
                format!("the payment sessions function has no route {other:?}"),
            )),
        }
    }

    async fn create(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let CreateRequest { pay, client } = json_body(request)?;
        let pay = match pay {
            PayRequest::Purchase(purchase) => Paying::Purchase(purchase.validate()?),
            PayRequest::MiniappCharge { app_id, session_id, action, params, amount } => {
                let app_id = crate::ids::check("app_id", &app_id)?.to_owned();
                let request = UserRequest::new(session_id, action, params, Some(amount))?;
                let amount = request.approved.ok_or_else(|| Problem::internal("a charge without its amount"))?;
                Paying::MiniappCharge { app_id, request, amount }
            }
            PayRequest::TransferInstruction { instruction, signature } => {
                Paying::TransferInstruction { instruction: Box::new(instruction), signature }
            }
        };
        self.idempotency
            .run_request(request, &caller.subject, &[], move |claim, now| async move {
                let user = &claim.scope.caller;
                // Judged inside the key's run: a replay answers what was decided then.
                let pay = async {
                    match pay {
                        Paying::Purchase(purchase) => {
                            let merchant = self.checkout.merchants.active(&purchase.merchant_id).await?;
                            purchase.check_currency(&merchant)?;
                            Ok::<_, Problem>(Pay::purchase(&purchase, &merchant.name))
                        }
                        Paying::MiniappCharge { app_id, request, amount } => {
                            let app = self.requests.check(user, &app_id, &request, now).await?;
                            Ok(Pay::miniapp_charge(&app_id, &app.interface.title, request, amount))
                        }
                        Paying::TransferInstruction { instruction, signature } => {
                            // What the transfer side judges before the listing; the listing is its own.
                            let key = (self.platform.kid(), self.platform.public_key().await?);
                            if let Err(refusal) = judge_signed(&instruction, &signature, key, user, now) {
                                return Err(self.refuse(&claim, &instruction, &refusal, now).await);
                            }
                            Ok(Pay::TransferInstruction { instruction: *instruction, signature })
                        }
                    }
                };
                // Made together: the payment (which may record a refusal) and three independent reads.
                let (pay, policy, table, force) =
                    tokio::join!(pay, self.policy.get(), self.control.table(), self.sessions.force(user));
                let pay = pay?;
                // The facts are judged even when an admin forced the process.
                let mut decision = policy.decide(&client, user)?;
                // The version counts only for an installed app (the policy checked it then).
                let app_version = client.payment_app.version.filter(|_| client.payment_app.installed);
                let on = SessionClient { platform: client.platform.clone(), app_version };
                let chain = match force?.filter(|force| force.until > now) {
                    Some(force) => {
                        // A force is for testing a process: the breaker does not move it.
                        decision = policy.forced(force.process, force.until);
                        fallback_chain(&table, force.process, user)
                    }
                    None => {
                        let chain = fallback_chain(&table, decision.process, user);
                        self.around_demoted(&mut decision, chain, &on, &policy, now).await
                    }
                };
                // An instruction's session is found from the instruction (the transfer side's check).
                let id = match &pay {
                    Pay::TransferInstruction { instruction, .. } => consent::session_id(&instruction.id),
                    _ => format!("ps_{}", claim.scope.derived_id("payment-session")),
                };
                let session = PaymentSession::new(id, user, pay, &decision, chain, on, now);
                let response = json_response(StatusCode::CREATED, &session.view(None, now));
                let mut writes = vec![
                    self.sessions.create_item(&session)?,
                    self.home.put_many_item(&session.user, &session.home_element())?,
                    self.idempotency.complete_item(&claim, &StoredResponse::from_response(&response), now)?,
                ];
                // An instruction carried out without a session gets none: its operation stands.
                if let Some(instruction) = session.instruction() {
                    writes.push(self.operations.absent_check(&instruction.id)?);
                }
                match transact(&self.dynamodb, writes).await {
                    Ok(()) => Ok(response),
                    Err(e) if e.broke(CLAIM_HELD) => Err(in_flight()),
                    // Made by this key before its record expired (or, for an instruction, by any
                    // key): that session if this is the same payment, else the key is another
                    // request's, or the instruction's id another instruction's.
                    Err(e) if e.broke(SESSION_NEW) => {
                        let made = self.sessions.get(&session.id).await?.filter(|s| s.user == session.user);
                        let made =
                            made.ok_or_else(|| Problem::internal("a payment session's id is taken by another"))?;
                        match (made.instruction(), session.instruction()) {
                            // A signature is never compared: the same instruction may carry another.
                            // Only a platform signing one id twice makes one: refused as a reused
                            // instruction is, and recorded.
                            (Some(made), Some(asked)) if made != asked => {
                                return Err(self.refuse(&claim, asked, &Refusal::Reused, now).await);
                            }
                            (Some(_), Some(_)) => {}
                            _ if made.pay != session.pay => return Err(key_reused()),
                            _ => {}
                        }
                        let response = json_response(StatusCode::CREATED, &self.view(&made, now).await?);
                        self.idempotency.complete(&claim, &StoredResponse::from_response(&response), now).await?;
                        Ok(response)
                    }
                    Err(e) if e.broke(OPERATION_NEW) => Err(carried_out(&session.payment_id())),
                    Err(e) => Err(Problem::internal(e)),
                }
            })
            .await
    }

    /// `refusal`'s answer to a session asked for an instruction, after recording it as the
    /// transfer side records its own when it is a security event: in the caller's security events
    /// (and the named payer's, when someone else presented their instruction). If that record
    /// cannot be written the answer is a failure of ours, so the client retries and it is not lost.
    async fn refuse(&self, claim: &Claim, instruction: &Instruction, refusal: &Refusal, now: i64) -> Problem {
        let problem = refusal.problem(instruction);
        if !refusal.is_security_event() {
            return problem;
        }
        let caller = claim.scope.caller.as_str();
        let mut detail = refusal.detail();
        detail["code"] = problem.code.into();
        // Only an id is quoted: an unsigned body names whatever its sender likes.
        if crate::ids::is_valid(&instruction.id) {
            detail["instruction_id"] = instruction.id.as_str().into();
        }
        let mut events = vec![(caller, format!("payment-session-refused/{}", claim.scope.derived_id("refusal")))];
        if *refusal == Refusal::NotPayer && crate::ids::is_valid(&instruction.payer) {
            events.push((instruction.payer.as_str(), format!("payment-session-presented/{caller}/{}", instruction.id)));
        }
        let records = events.into_iter().map(|(user, id)| {
            let event = SecurityEvent {
                user: user.to_owned(),
                id,
                kind: "payment_session.refused",
                at: now,
                detail: detail.clone(),
            };
            self.security.items(&event)
        });
        let written = async {
            let records: Vec<_> = records.collect::<Result<Vec<_>, StoreError>>()?.into_iter().flatten().collect();
            transact(&self.dynamodb, records).await.map_err(|e| StoreError::new(e.to_string()))
        };
        match written.await {
            Ok(()) => problem,
            Err(error) => {
                tracing::error!(%error, code = problem.code, "a refused payment session could not be recorded");
                Problem::internal(error)
            }
        }
    }

    /// The chain after `decision`'s process with the processes the circuit breaker demoted left out
    /// (the decision moved to the first kept, its reason saying why). Counters that cannot be read
    /// demote nothing: the breaker must never stop a payment.
    async fn around_demoted(
        &self,
        decision: &mut Decision,
        chain: Vec<Process>,
        on: &SessionClient,
        policy: &Policy,
        now: i64,
    ) -> Vec<Process> {
        let key = |process| breaker::key(process, &on.platform, on.app_version.as_deref());
        let measured: Vec<String> = std::iter::once(decision.process)
            .chain(chain.iter().copied())
            .filter(|p| breaker::MEASURED.contains(p))
            .map(key)
            .collect();
        let counts = match self.breaker.counts(&measured, now).await {
            Ok(counts) => counts,
            Err(e) => {
                tracing::warn!(error = %e, "the circuit breaker's counters could not be read; nothing is demoted");
                return chain;
            }
        };
        let counts_of = |process| counts.get(&key(process)).copied().unwrap_or_default();
        let settings = &self.breaker.settings;
        let (kept, why) =
            breaker::choose(decision.process, &chain, counts_of, settings, &on.platform, on.app_version.as_deref());
        if let Some(why) = why {
            decision.reason = format!("{}; {why}", decision.reason);
            decision.process = kept[0];
            // The chosen rule's deadline was for the demoted process: the policy's own applies.
            decision.launch_deadline_ms = policy.launch_deadline_ms();
        }
        kept[1..].to_vec()
    }

    /// Counts a launch's outcome for the circuit breaker; a failure to count is logged, never the
    /// user's problem.
    async fn measure(&self, session: &PaymentSession, process: Process, outcome: Outcome) {
        if !breaker::MEASURED.contains(&process) {
            return;
        }
        // One outcome per user, process and window: one user cannot demote a process for everyone.
        let key = session.breaker_key(process);
        if let Err(e) = self.breaker.record(&key, &session.user, outcome, now_epoch_seconds()).await {
            tracing::warn!(error = %e, session = %session.id, "a launch's outcome could not be counted");
        }
    }

    /// `PUT /payment-forces/{user}` and `DELETE`: an admin forces a process for one user's next
    /// sessions (testing), or ends it; audited with the change.
    async fn force(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let admin = caller.clone().require_admin()?;
        let user = crate::ids::check("user", path_parameter(request, "user")?)?;
        let resource = format!("payment-force/{user}");
        if request.method() == lambda_http::http::Method::DELETE {
            let entry = AuditEntry::now(resource, "payment_force.end", &admin.subject, json!({}));
            if commit_audited(&self.dynamodb, &self.audit_table, entry, self.sessions.unforce_item(user)?).await? {
                return Err(Problem::new(
                    catalogue::UNKNOWN_PAYMENT_FORCE,
                    format!("no process is forced for {user:?}"),
                ));
            }
            return Ok(json_response(StatusCode::OK, &PaymentForceView { user: user.to_owned(), forced: None }));
        }
        let ForceRequest { process: forced, minutes } = json_body(request)?;
        let forced = process(&forced)?;
        let minutes = minutes.unwrap_or(60);
        if !(1..=MAX_FORCE_MINUTES).contains(&minutes) {
            return Err(Problem::new(
                catalogue::INVALID_FORCE_DURATION,
                format!("minutes must be 1 to {MAX_FORCE_MINUTES} (a week)"),
            ));
        }
        let force = Force { process: forced, until: now_epoch_seconds() + i64::from(minutes) * 60 };
        let entry = AuditEntry::now(resource, "payment_force.set", &admin.subject, json!(force));
        commit_audited(&self.dynamodb, &self.audit_table, entry, self.sessions.force_item(user, &force)?).await?;
        Ok(json_response(StatusCode::OK, &PaymentForceView { user: user.to_owned(), forced: Some(force) }))
    }

    /// `DELETE /payment-pins/{user}`: an admin resets a user's forgotten PIN (after checking who
    /// asks, outside superpay), audited and recorded as the user's security event in the same
    /// transaction; the user then sets a new one with `PUT /payment-pin`, no old PIN needed.
    async fn reset_pin(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let admin = caller.clone().require_admin()?;
        let user = crate::ids::check("user", path_parameter(request, "user")?)?;
        let now = now_epoch_seconds();
        let entry = AuditEntry::now(format!("payment-pin/{user}"), "payment_pin.reset", &admin.subject, json!({}));
        let mut writes = self.pins.reset_items(user, now)?;
        writes.push(entry.put_item(&self.audit_table, &uuid::Uuid::new_v4().to_string())?);
        match transact(&self.dynamodb, writes).await {
            Ok(()) => {
                Ok(json_response(StatusCode::OK, &PaymentPinReset { user: user.to_owned(), payment_pin: "reset" }))
            }
            Err(e) if e.broke(PIN_SET) => Err(not_set()),
            Err(e) => Err(Problem::internal(e)),
        }
    }

    /// The caller's session named by the path; another user's is as unknown as a missing one.
    async fn own_session(&self, request: &Request, caller: &Caller) -> Result<PaymentSession, Problem> {
        let id = path_parameter(request, "id")?;
        // Only sessions' ids: the table also keeps admins' forces (`force#<user>`).
        let ours = id.starts_with("ps_") && crate::ids::is_valid(id);
        let session = match ours {
            true => self.sessions.get(id).await?.filter(|s| s.user == caller.subject),
            false => None,
        };
        session.ok_or_else(|| {
            Problem::new(catalogue::UNKNOWN_PAYMENT_SESSION, format!("you have no payment session {id:?}"))
        })
    }

    /// A confirmed session's payment, as its capability recorded it (none yet: on its way).
    async fn payment(&self, session: &PaymentSession) -> Result<Option<Payment>, Problem> {
        let Stage::Confirmed { payment_id, .. } = &session.stage else { return Ok(None) };
        Ok(match session.pay {
            Pay::Purchase { .. } => self.checkout.service.orders.get(payment_id).await?.map(Payment::Order),
            Pay::MiniappCharge { .. } => self.requests.requests.get(payment_id).await?.map(Payment::Request),
            Pay::TransferInstruction { .. } => self.operations.get(payment_id).await?.map(Payment::Operation),
        })
    }

    /// The session with its payment as it stands.
    async fn view(&self, session: &PaymentSession, now: i64) -> Result<PaymentSessionView, Problem> {
        Ok(session.view(self.payment(session).await?.as_ref(), now))
    }

    /// Confirms the session with the user's PIN from `process`, paying once whichever process
    /// confirms, under the payment id derived from the session's. A confirmed session answers as it
    /// stands.
    async fn confirm(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let ConfirmRequest { process: by, pin } = json_body(request)?;
        let by = process(&by)?;
        let pin = Pin::parse("pin", &pin)?;
        let session = self.own_session(request, caller).await?;
        if let Stage::Confirmed { .. } = session.stage {
            return self.as_it_stands(&session, now_epoch_seconds()).await;
        }
        session.check_open(now_epoch_seconds())?;
        session.check_offers(by)?;
        self.pins.check(&caller.subject, &pin, now_epoch_seconds()).await?;
        match session.pay {
            Pay::Purchase { .. } => self.buy(session, by).await,
            Pay::MiniappCharge { .. } => self.charge(session, by).await,
            Pay::TransferInstruction { .. } => self.consent(session, by).await,
        }
    }

    /// A transfer instruction's confirmation: the user's consent, recorded on the session while
    /// it is open. The transfer side carries the instruction out when the client presents it (the
    /// answer's `present`), and only then: no money moves here.
    async fn consent(&self, session: PaymentSession, by: Process) -> Result<Response<Body>, Problem> {
        let now = now_epoch_seconds();
        let writes = vec![self.sessions.confirm_item(&session, by, now)?, self.off_home(&session.user, &session.id)?];
        match transact(&self.dynamodb, writes).await {
            Ok(()) => {
                self.measure(&session, by, Outcome::Success).await;
                let payment_id = session.payment_id();
                let session = PaymentSession { stage: Stage::Confirmed { payment_id, by, at: now }, ..session };
                Ok(json_response(StatusCode::OK, &self.view(&session, now).await?))
            }
            // Confirmed, cancelled or expired meanwhile: the session says which.
            Err(e) if e.broke(SESSION_OPEN) => self.as_it_is_now(&session.id, now).await,
            Err(e) => Err(Problem::internal(e)),
        }
    }

    /// A purchase's confirmation: the order (and its hold) and the session's confirmation commit
    /// in one transaction, while the merchant is active; the confirmation that made the order
    /// sends it to the merchant.
    async fn buy(&self, session: PaymentSession, by: Process) -> Result<Response<Body>, Problem> {
        // The time of the commit, after the PIN's work: the session's expiry is judged by it.
        let now = now_epoch_seconds();
        let wanted = session.order(self.order_ttl_seconds, now).ok_or_else(|| Problem::internal("not a purchase"))?;
        // Judged again at confirmation, and held by the transaction: a suspended merchant is not paid.
        let merchant = self.checkout.merchants.active(&wanted.merchant_id).await?;
        let with = vec![
            self.sessions.confirm_item(&session, by, now)?,
            self.checkout.merchants.active_check(&merchant.id)?,
            self.off_home(&session.user, &session.id)?,
        ];
        match self.checkout.service.create(&wanted, with, now).await {
            Ok((order, true)) => {
                self.measure(&session, by, Outcome::Success).await;
                let (order, _) = self.checkout.forward(&merchant, order, now, None).await;
                let session =
                    PaymentSession { stage: Stage::Confirmed { payment_id: order.id.clone(), by, at: now }, ..session };
                return Ok(json_response(StatusCode::OK, &session.view(Some(&Payment::Order(order)), now)));
            }
            // Another confirmation made it.
            Ok((_, false)) => {}
            Err(TransferError::Rejected(MERCHANT_ACTIVE)) => return Err(inactive_merchant(&merchant.id)),
            // Cancelled or expired meanwhile: nothing moved (the session says which).
            Err(TransferError::Rejected(SESSION_OPEN)) => {}
            Err(e) => return Err(e.into()),
        }
        self.as_it_is_now(&session.id, now).await
    }

    /// A mini-app charge's confirmation: the request is relayed to the app's server under the
    /// session's payment id, then recorded with its charge and the session's confirmation in one
    /// transaction, as the mini-apps route records one; a session cancelled or expired meanwhile
    /// records it withdrawn (nothing charged, the server told). Its outcome is posted in the
    /// user's conversation with the app.
    async fn charge(&self, session: PaymentSession, by: Process) -> Result<Response<Body>, Problem> {
        let (app_id, input) = session.miniapp_request().ok_or_else(|| Problem::internal("not a mini-app charge"))?;
        let now = now_epoch_seconds();
        let confirm = vec![self.sessions.confirm_item(&session, by, now)?, self.off_home(&session.user, &session.id)?];
        let (relayed, app) =
            self.requests.relay(&session.payment_id(), &session.user, app_id, input, confirm, now).await?;
        self.requests.post_outcome(&relayed, app.as_ref()).await?;
        let session = self.sessions.get(&session.id).await?.ok_or_else(|| Problem::internal("a session vanished"))?;
        match session.stage {
            Stage::Confirmed { by: confirmed_by, at, .. } if confirmed_by == by && at == now => {
                self.measure(&session, by, Outcome::Success).await;
                Ok(json_response(StatusCode::OK, &session.view(Some(&Payment::Request(relayed)), now)))
            }
            Stage::Confirmed { .. } => self.as_it_stands(&session, now).await,
            _ => Err(session.check_open(now).err().unwrap_or_else(|| Problem::internal("an open session refused"))),
        }
    }

    /// The write that takes `user`'s session `id` off their home (confirmed or cancelled), with
    /// the write that ends it being open.
    fn off_home(&self, user: &str, id: &str) -> Result<Write, StoreError> {
        self.home.delete_many_item(user, &home_element_id(id))
    }

    /// The answer to a confirmation another one beat (or a cancel): the session as it now is.
    async fn as_it_is_now(&self, id: &str, now: i64) -> Result<Response<Body>, Problem> {
        let session = self.sessions.get(id).await?.ok_or_else(|| Problem::internal("a session vanished"))?;
        match session.stage {
            Stage::Confirmed { .. } => self.as_it_stands(&session, now).await,
            _ => Err(session.check_open(now).err().unwrap_or_else(|| Problem::internal("an open session refused"))),
        }
    }

    /// A confirmed session's answer to a confirmation that did not make its payment: as it stands.
    /// An order still waiting for its merchant well after it was made (the confirmation that made
    /// it died before sending it) is sent again, to an active merchant: the merchant sees one order
    /// id, and its decision is applied once.
    async fn as_it_stands(&self, session: &PaymentSession, now: i64) -> Result<Response<Body>, Problem> {
        let payment = match self.payment(session).await? {
            Some(Payment::Order(waiting))
                if waiting.state == OrderState::AwaitingMerchant
                    && now - waiting.created_at >= FORWARD_AGAIN_AFTER_SECONDS =>
            {
                match self.checkout.merchants.active(&waiting.merchant_id).await {
                    Ok(merchant) => Some(Payment::Order(self.checkout.forward(&merchant, waiting, now, None).await.0)),
                    Err(_) => Some(Payment::Order(waiting)),
                }
            }
            // Its outcome's message is posted once; a confirmation that died before posting it is
            // carried on here.
            Some(Payment::Request(relayed)) => {
                let app = self.requests.apps.store.get(&relayed.app_id).await?;
                self.requests.post_outcome(&relayed, app.as_ref()).await?;
                Some(Payment::Request(relayed))
            }
            payment => payment,
        };
        Ok(json_response(StatusCode::OK, &session.view(payment.as_ref(), now)))
    }

    /// Cancels a transfer instruction's session `id`: while it is open, or confirmed while its
    /// instruction `instruction_id` is not carried out (the consent withdrawn: the transfer side's
    /// check of it then fails). Once carried out, the payment stands.
    async fn withdraw(&self, id: &str, user: &str, instruction_id: &str, now: i64) -> Result<Cancel, Problem> {
        let writes = vec![
            self.sessions.withdraw_item(id, now)?,
            self.operations.absent_check(instruction_id)?,
            self.off_home(user, id)?,
        ];
        match transact(&self.dynamodb, writes).await {
            Ok(()) => Ok(Cancel::Cancelled),
            Err(e) if e.broke(SESSION_CANCELLABLE) || e.broke(OPERATION_NEW) => {
                let session = self.sessions.get(id).await?.ok_or_else(|| Problem::internal("a session vanished"))?;
                Ok(Cancel::NotOpen(Box::new(session)))
            }
            Err(e) => Err(Problem::internal(e)),
        }
    }

    /// A client's report on loading the payment UI: the next process (the error-flow table's
    /// `payment` flow decides it), or the session as it now stands.
    async fn event(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let EventRequest { event, process: at } = json_body(request)?;
        let at = process(&at)?;
        let mut session = self.own_session(request, caller).await?;
        session.check_offers(at)?;
        let now = now_epoch_seconds();
        // Nothing more may load for an open session past its expiry.
        if matches!(event, Event::LaunchFailed | Event::Timeout) && session.stage == Stage::Open {
            session.check_open(now)?;
        }
        if event == Event::Cancelled {
            let cancelled = match session.instruction() {
                Some(instruction) => self.withdraw(&session.id, &session.user, &instruction.id, now).await?,
                None => self.sessions.cancel(&session.id, now, self.off_home(&session.user, &session.id)?).await?,
            };
            match cancelled {
                Cancel::Cancelled => session.stage = Stage::Cancelled { at: now },
                Cancel::NotOpen(current) => {
                    session = *current;
                    if let Stage::Confirmed { .. } = session.stage {
                        session.check_open(now)?;
                    }
                }
            }
        }
        match event {
            Event::LaunchFailed | Event::Timeout => self.measure(&session, at, Outcome::Failure).await,
            Event::AppReturned => self.measure(&session, at, Outcome::Success).await,
            Event::Cancelled => {}
        }
        let table = self.control.table().await;
        let (next, flow_control) = match session.stage {
            Stage::Open => session.next_after(event, at, &table),
            // Confirmed or cancelled: nothing more to load; the session's state is the outcome.
            _ => (None, None),
        };
        let next = next.map(|process| NextProcess { process, needs: session.process_view(process) });
        let session = self.view(&session, now).await?;
        Ok(json_response(StatusCode::OK, &SessionEventAnswer { next, flow_control, session }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forces_minutes_are_a_whole_number_and_an_hour_when_left_out_or_null() {
        let minutes = |body: Value| serde_json::from_value::<ForceRequest>(body).map(|force| force.minutes).ok();
        let with = |minutes: Value| json!({"process": "simulated_only", "minutes": minutes});
        assert_eq!(minutes(json!({"process": "simulated_only"})), Some(None));
        assert_eq!(minutes(with(Value::Null)), Some(None));
        assert_eq!(minutes(with(json!(90))), Some(Some(90)));
        assert_eq!(minutes(with(json!(90.0))), Some(Some(90)), "JSON does not tell 90 from 90.0");
        for refused in [json!(1.5), json!(-1), json!("5"), json!(u64::from(u32::MAX) + 1)] {
            assert_eq!(minutes(with(refused.clone())), None, "{refused}");
        }
    }

    #[test]
    fn a_purchase_to_pay_is_a_purchase_request_under_its_kind() {
        let purchase = json!({"kind": "purchase", "merchant_id": "m_1", "product_id": "tea", "quantity": 2.0,
                              "amount": {"amount": "9.00", "currency": "USD"}});
        let pay = |body: &Value| serde_json::from_value::<PayRequest>(body.clone());
        assert!(matches!(pay(&purchase), Ok(PayRequest::Purchase(asked)) if asked.quantity == 2));
        let mut unknown = purchase;
        unknown["payee"] = json!("Tea");
        assert!(pay(&unknown).is_err(), "a field a purchase does not name");
    }
}
