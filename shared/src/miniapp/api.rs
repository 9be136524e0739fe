//! The mini-apps function's HTTP routes (template.yaml `MiniAppsFunction`), for signed-in users:
//!
//! - `POST /miniapps/{id}/verify`    positive: the interface descriptor and a session (201);
//!   negative: a problem carrying the chat message that says why (also posted in the conversation)
//! - `POST /miniapps/{id}/requests`  relay a request made in the app's interface to the app's
//!   server; answer the chat message reporting the outcome and `"directive": "close_interface"`
//!
//! The registry itself (register, suspend, revoke, rotate keys) is admin work: `super::admin`.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use serde_json::json;

use super::service::RequestService;
use super::{CLOSE_INTERFACE, Interface, MiniApp, RelayedRequest, RequestJson, Session, check_available};
use crate::Problem;
use crate::auth::Caller;
use crate::aws::{self, MissingEnv};
use crate::clock::now_epoch_seconds;
use crate::conversation::{Counterparty, Message};
use crate::dynamo::transact;
use crate::http::{json_body, json_response, path_parameter, route_key};
use crate::idempotency::store::{Claim, IdempotencyStore, request_scope};
use crate::idempotency::{Scope, StoredResponse};
use crate::ids::MAX_ID_CHARS;
use crate::money::Money;
use crate::problem::catalogue;

/// `POST /miniapps/{id}/verify`'s answer: the app may be opened, with this session.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
struct MiniAppVerificationView<'a> {
    /// Always true: a refusal is a problem, with `verified: false` and the chat message.
    #[cfg_attr(feature = "openapi", schemars(extend("const" = true)))]
    verified: bool,
    app: VerifiedMiniApp<'a>,
    session: MiniAppSessionView<'a>,
}

/// The app as the client loads it.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
struct VerifiedMiniApp<'a> {
    id: &'a str,
    interface: &'a Interface,
}

/// The session a verification grants: the user's requests to the app name it until it expires.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
struct MiniAppSessionView<'a> {
    id: &'a str,
    /// Epoch seconds.
    expires_at: i64,
}

/// `POST /miniapps/{id}/requests`'s answer to a request that went through (any other outcome is
/// a problem carrying the same chat message and directive).
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
struct MiniAppRequestView<'a> {
    /// Derived from the Idempotency-Key and the app: a retry names the same request.
    request_id: &'a str,
    app_id: &'a str,
    /// `charged`, or `completed`: nothing was asked, nothing charged.
    #[cfg_attr(feature = "openapi", schemars(extend("enum" = ["charged", "completed"])))]
    outcome: &'static str,
    /// What the user paid; null when nothing was charged.
    charged: Option<Money>,
    /// What the app's server will deliver.
    deliver: Option<&'a str>,
    /// The chat message reporting it, posted in the user's conversation with the app.
    message: &'a Message,
    /// Always `close_interface`: the client closes the app's interface.
    #[cfg_attr(feature = "openapi", schemars(extend("const" = CLOSE_INTERFACE)))]
    directive: &'static str,
}

/// The routes' documentation (`crate::openapi`).
#[cfg(feature = "openapi")]
pub const ROUTES: &[crate::openapi::RouteDoc] = {
    use crate::openapi::{Header, Param, RouteDoc, schema};
    // The id rule less ':': the id also names the conversation `miniapp:<id>`.
    fn miniapp_id(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,128}$"})
    }
    const ID: &[Param] = &[Param { name: "id", description: "the mini-app's id", schema: miniapp_id }];
    &[
        RouteDoc {
            key: "POST /miniapps/{id}/verify",
            summary: "verify a mini-app before opening it: its interface and a session to use it with (a refusal is also posted in the chat)",
            request: None,
            path: ID,
            query: &[],
            answers: &[(201, Some(schema::<MiniAppVerificationView>))],
            codes: &[
                catalogue::INVALID_MINIAPP_ID,
                catalogue::UNKNOWN_MINIAPP,
                catalogue::MINIAPP_SUSPENDED,
                catalogue::MINIAPP_REVOKED,
            ],
            headers: &[Header::IdempotencyKey],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "POST /miniapps/{id}/requests",
            summary: "relay a request made in a mini-app's interface to its server, charging exactly the amount the user approved and it asked; the outcome is also posted in the chat",
            request: Some(schema::<RequestJson>),
            path: ID,
            query: &[],
            answers: &[(201, Some(schema::<MiniAppRequestView>))],
            codes: &[
                catalogue::INVALID_MINIAPP_ID,
                catalogue::INVALID_PARAMS,
                catalogue::AMOUNT_NOT_DECIMAL_STRING,
                catalogue::AMOUNT_NOT_POSITIVE,
                catalogue::AMOUNT_TOO_MANY_DECIMALS,
                catalogue::AMOUNT_OVER_LIMIT,
                catalogue::UNKNOWN_CURRENCY,
                catalogue::MINIAPP_SESSION_INVALID,
                catalogue::MINIAPP_SESSION_EXPIRED,
                catalogue::UNKNOWN_MINIAPP,
                catalogue::MINIAPP_SUSPENDED,
                catalogue::MINIAPP_REVOKED,
                catalogue::UNKNOWN_ACTION,
                catalogue::MINIAPP_MAY_NOT_CHARGE,
                catalogue::MERCHANT_INACTIVE,
                catalogue::CURRENCY_NOT_ACCEPTED,
                catalogue::AMOUNT_MISMATCH,
                catalogue::INSUFFICIENT_FUNDS,
                catalogue::WALLET_CURRENCY_MISMATCH,
                catalogue::LEDGER_BUSY,
                catalogue::MINIAPP_SERVER_UNREACHABLE,
                catalogue::MINIAPP_SERVER_INVALID_ANSWER,
                catalogue::MINIAPP_SERVER_BAD_SIGNATURE,
                catalogue::MINIAPP_SERVER_TIMEOUT,
            ],
            headers: &[Header::IdempotencyKey],
            form: None,
            pages: &[],
        },
    ]
};

/// The id of the request the key of `scope` makes to app `app_id`: derived from both, so a retry,
/// even after its record expired, is this request.
fn request_id(scope: &Scope, app_id: &str) -> String {
    format!("r_{}", &scope.derived_id(&format!("miniapp-request/{app_id}"))[..20])
}

pub struct MiniAppsApi {
    requests: RequestService,
    idempotency: IdempotencyStore,
    /// How long a verification's session lasts (template `MiniAppSessionTtlSeconds`).
    session_ttl_seconds: i64,
}

impl MiniAppsApi {
    pub async fn from_env() -> Result<Self, MissingEnv> {
        let config = aws::sdk_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        Ok(MiniAppsApi {
            requests: RequestService::from_env(&config, &dynamodb)?,
            idempotency: IdempotencyStore::new(dynamodb, aws::env("IDEMPOTENCY_TABLE")?),
            session_ttl_seconds: aws::seconds("MINIAPP_SESSION_TTL_SECONDS")?,
        })
    }

    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Problem> {
        let caller = Caller::from_request(&request)?;
        let app_id = path_parameter(&request, "id")?;
        // The id also names a conversation, so it must be one a conversation can carry.
        if Counterparty::parse(&format!("miniapp:{app_id}")).is_none() {
            return Err(Problem::new(
                catalogue::INVALID_MINIAPP_ID,
                format!("a mini-app id is 1 to {MAX_ID_CHARS} letters, digits, '_', '-' or '.'"),
            ));
        }
        match route_key(&request) {
            "POST /miniapps/{id}/verify" => self.verify(&request, &caller, app_id).await,
            "POST /miniapps/{id}/requests" => {
                let input = json_body::<RequestJson>(&request)?.validate()?;
                let user = caller.subject.as_str();
                let (scope, print) = request_scope(&request, user, &[])?;
                let request_id = request_id(&scope, app_id);
                let now = now_epoch_seconds();
                // A refusal from the checks (no session, an app suspended, ...) is recorded without
                // a claim, one write where a claim and its completion would be two, unless an
                // earlier attempt under the key has recorded the request meanwhile.
                let guards = vec![self.requests.requests.absent_item(&request_id)?];
                let (request_id, input) = (&request_id, &input);
                let check = |_: &Scope| self.requests.check_relay(request_id, user, app_id, input, now);
                let work = |claim: Claim, checked| async move {
                    let (relayed, app) =
                        self.requests.relay_checked(checked, request_id, user, input, Vec::new(), now).await?;
                    self.answer(&claim, relayed, app.as_ref(), now).await
                };
                self.idempotency.run_checked(scope, print, now, guards, check, work).await
            }
            other => {
                Err(Problem::new(catalogue::UNKNOWN_ROUTE, format!("the mini-apps function has no route {other:?}")))
            }
        }
    }

    async fn verify(&self, request: &Request, caller: &Caller, app_id: &str) -> Result<Response<Body>, Problem> {
        self.idempotency
            .run_request(request, &caller.subject, &[], |claim, now| async move {
                let app = self.requests.apps.store.get(app_id).await?;
                if let Err(refusal) = check_available(app_id, app.as_ref()) {
                    let message = refusal.message(claim.scope.derived_id("verification"), app_id);
                    let message = self.requests.post(&caller.subject, &refusal.counterparty, message, now).await?;
                    // Recorded and replayed by the key's run, like every refusal.
                    return Err(refusal
                        .problem()
                        .with("verified", false)
                        .with("app_id", app_id)
                        .with("message", json!(message)));
                }
                let app = app.ok_or_else(|| Problem::internal("a verified app vanished"))?;
                let session = Session {
                    id: format!("s_{}", &claim.scope.derived_id("session")[..24]),
                    user: caller.subject.clone(),
                    app_id: app.id.clone(),
                    created_at: now,
                    expires_at: now + self.session_ttl_seconds,
                };
                let verification = MiniAppVerificationView {
                    verified: true,
                    app: VerifiedMiniApp { id: &app.id, interface: &app.interface },
                    session: MiniAppSessionView { id: &session.id, expires_at: session.expires_at },
                };
                let response = json_response(StatusCode::CREATED, &verification);
                let items = vec![
                    self.requests.sessions.put_item(&session)?,
                    self.idempotency.complete_item(&claim, &StoredResponse::from_response(&response), now)?,
                ];
                transact(&self.requests.dynamodb, items).await.map_err(Problem::internal)?;
                Ok(response)
            })
            .await
    }

    /// The chat message reporting the outcome (posted now if it was not yet) and the answer that
    /// carries it, which the key's record keeps for replays.
    async fn answer(
        &self,
        claim: &Claim,
        relayed: RelayedRequest,
        app: Option<&MiniApp>,
        now: i64,
    ) -> Result<Response<Body>, Problem> {
        let message = self.requests.post_outcome(&relayed, app).await?;
        let response = match relayed.outcome.refusal() {
            None => json_response(
                StatusCode::CREATED,
                &MiniAppRequestView {
                    request_id: &relayed.id,
                    app_id: &relayed.app_id,
                    outcome: relayed.summary(),
                    charged: relayed.outcome.charged(),
                    deliver: relayed.deliver(),
                    message: &message,
                    directive: CLOSE_INTERFACE,
                },
            ),
            Some(code) => Problem::new(code, message.text.clone())
                .with("request_id", relayed.id.clone())
                .with("app_id", relayed.app_id.clone())
                .with("message", json!(message))
                .with("directive", CLOSE_INTERFACE)
                .to_response(),
        };
        self.idempotency.complete(claim, &StoredResponse::from_response(&response), now).await?;
        Ok(response)
    }
}
