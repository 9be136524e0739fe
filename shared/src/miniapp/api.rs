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
use serde_json::json;

use super::relay::{MiniAppClient, ServerRequest};
use super::store::{MiniAppDirectory, MiniAppStore, REQUEST_NEW, RequestStore, SessionStore};
use super::{
    CLOSE_INTERFACE, MiniApp, Outcome, RelayedRequest, RequestJson, Session, SessionError, UserRequest, app_user,
    check_available, judge,
};
use crate::Problem;
use crate::auth::Caller;
use crate::aws::{self, MissingEnv};
use crate::conversation::store::ConversationStore;
use crate::conversation::{Counterparty, Message, NewMessage};
use crate::dynamo::transact;
use crate::http::{json_body, json_response, path_parameter, route_key};
use crate::idempotency::StoredResponse;
use crate::idempotency::store::{Claim, IdempotencyStore};
use crate::ids::MAX_ID_CHARS;
use crate::keys::{KeyService, TokenSecret};
use crate::ledger::LedgerError;
use crate::ledger::store::{Applied, LedgerStore, TransferError};
use crate::merchant::store::MerchantStore;
use crate::merchant::{MerchantStatus, inactive_merchant};
use crate::outbox::Outbox;
use crate::problem::catalogue;
use crate::queues::NotificationMessage;

pub struct MiniAppsApi {
    dynamodb: aws_sdk_dynamodb::Client,
    apps: MiniAppDirectory,
    sessions: SessionStore,
    requests: RequestStore,
    merchants: MerchantStore,
    ledger: LedgerStore,
    conversations: ConversationStore,
    outbox: Outbox,
    queue_url: String,
    idempotency: IdempotencyStore,
    /// Keys the user pseudonyms each app's server sees (`super::app_user`).
    token_secret: TokenSecret,
    /// How long a verification's session lasts (template `MiniAppSessionTtlSeconds`).
    session_ttl_seconds: i64,
    client: MiniAppClient,
}

impl MiniAppsApi {
    pub async fn from_env() -> Result<Self, MissingEnv> {
        let config = aws::sdk_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        let keys = KeyService::new(aws_sdk_kms::Client::new(&config), aws::env("PARTY_KEYS_KEY_ID")?);
        Ok(MiniAppsApi {
            token_secret: TokenSecret::new(dynamodb.clone(), aws::env("SERVER_SECRETS_TABLE")?, keys.clone()),
            apps: MiniAppDirectory::new(MiniAppStore::new(dynamodb.clone(), aws::env("MINIAPPS_TABLE")?), keys),
            sessions: SessionStore::new(dynamodb.clone(), aws::env("MINIAPP_SESSIONS_TABLE")?),
            requests: RequestStore::new(dynamodb.clone(), aws::env("MINIAPP_REQUESTS_TABLE")?),
            merchants: MerchantStore::new(dynamodb.clone(), aws::env("MERCHANTS_TABLE")?),
            ledger: LedgerStore::new(dynamodb.clone(), aws::env("LEDGER_TABLE")?),
            conversations: ConversationStore::new(dynamodb.clone(), aws::env("CONVERSATIONS_TABLE")?),
            outbox: Outbox::new(dynamodb.clone(), aws_sdk_sqs::Client::new(&config), aws::env("OUTBOX_TABLE")?),
            queue_url: aws::env("NOTIFICATIONS_QUEUE_URL")?,
            idempotency: IdempotencyStore::new(dynamodb.clone(), aws::env("IDEMPOTENCY_TABLE")?),
            session_ttl_seconds: aws::env("MINIAPP_SESSION_TTL_SECONDS")?
                .parse()
                .map_err(|_| MissingEnv("MINIAPP_SESSION_TTL_SECONDS (a number of seconds)".into()))?,
            client: MiniAppClient::default(),
            dynamodb,
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
                self.idempotency
                    .run_request(&request, &caller.subject, &[], |claim, now| {
                        self.relay(claim, &caller.subject, app_id, input, now)
                    })
                    .await
            }
            other => {
                Err(Problem::new(catalogue::UNKNOWN_ROUTE, format!("the mini-apps function has no route {other:?}")))
            }
        }
    }

    async fn verify(&self, request: &Request, caller: &Caller, app_id: &str) -> Result<Response<Body>, Problem> {
        self.idempotency
            .run_request(request, &caller.subject, &[], |claim, now| async move {
                let app = self.apps.store.get(app_id).await?;
                if let Err(refusal) = check_available(app_id, app.as_ref()) {
                    let message = refusal.message(claim.scope.derived_id("verification"), app_id);
                    let message = self.post(&caller.subject, &refusal.counterparty, message, now).await?;
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
                let response = json_response(
                    StatusCode::CREATED,
                    &json!({
                        "verified": true,
                        "app": { "id": app.id, "interface": app.interface },
                        "session": { "id": session.id, "expires_at": session.expires_at },
                    }),
                );
                let items = vec![
                    self.sessions.put_item(&session)?,
                    self.idempotency.complete_item(&claim, &StoredResponse::from_response(&response), now)?,
                ];
                transact(&self.dynamodb, items).await.map_err(Problem::internal)?;
                Ok(response)
            })
            .await
    }

    /// Posts `message` in the user's conversation with `with` (once per message id).
    async fn post(&self, user: &str, with: &Counterparty, message: NewMessage, at: i64) -> Result<Message, Problem> {
        let sequence = self.conversations.post_once(user, with, &message, at).await?;
        Ok(message.posted(sequence, at))
    }

    async fn relay(
        &self,
        claim: Claim,
        user: &str,
        app_id: &str,
        input: UserRequest,
        now: i64,
    ) -> Result<Response<Body>, Problem> {
        // Derived from the key and the app: a retry, even after its record expired, is this request.
        let request_id = format!("r_{}", &claim.scope.derived_id(&format!("miniapp-request/{app_id}"))[..20]);
        // Independent reads, made together: an earlier attempt's record, the session, the app.
        let (done, session, app) = tokio::try_join!(
            self.requests.get(&request_id),
            self.sessions.get(&input.session_id),
            self.apps.store.get(app_id),
        )?;
        // The request id derives from this app's id, so an earlier attempt was about this app.
        if let Some(done) = done {
            return self.answer(&claim, done, app.as_ref(), now).await;
        }
        session.ok_or(SessionError::Invalid)?.check(user, app_id, now)?;
        check_available(app_id, app.as_ref()).map_err(|refusal| refusal.problem())?;
        let app = app.ok_or_else(|| Problem::internal("an available app vanished"))?;
        input.check_against(&app.interface)?;
        if let Some(approved) = input.approved {
            let owner = self.merchants.get(&app.owner_merchant_id).await?.ok_or_else(|| {
                Problem::internal(format!("mini-app {} has no owner merchant {}", app.id, app.owner_merchant_id))
            })?;
            if owner.status != MerchantStatus::Active {
                return Err(inactive_merchant(&owner.id));
            }
            if approved.currency() != owner.currency {
                return Err(Problem::new(
                    catalogue::CURRENCY_NOT_ACCEPTED,
                    format!("{} charges in {}, not {}", app.interface.title, owner.currency, approved.currency()),
                ));
            }
        }
        // Both unwrapped by KMS once per instance, so together.
        let (keys, token_secret) = tokio::try_join!(self.apps.keys(&app), self.token_secret.get())?;
        let server_request = ServerRequest {
            request_id: request_id.clone(),
            app_id: app.id.clone(),
            user: app_user(token_secret, &app.id, user),
            action: input.action.clone(),
            params: input.params,
            approved_amount: input.approved,
        };
        let reply = self.client.relay(&app, &keys, &server_request, now).await;
        if let Err((fault, detail)) = &reply {
            tracing::warn!(app = %app.id, request = %request_id, ?fault, %detail, "no usable answer from the mini-app's server");
        }
        let relayed = RelayedRequest {
            id: request_id,
            app_id: app.id.clone(),
            user: user.to_owned(),
            action: input.action,
            approved: input.approved,
            outcome: judge(input.approved, reply),
            created_at: now,
        };
        let relayed = self.commit(relayed, &app, now).await?;
        self.answer(&claim, relayed, Some(&app), now).await
    }

    /// Records how the request ended, with its charge (if any) and the outbox notice for the app's
    /// server, in ONE transaction. Answers the request as recorded (an earlier attempt's, if any).
    async fn commit(&self, mut relayed: RelayedRequest, app: &MiniApp, now: i64) -> Result<RelayedRequest, Problem> {
        let event = NotificationMessage::MiniAppOutcome { id: relayed.outcome_id(), request_id: relayed.id.clone() };
        let notice = event.outbox(&self.queue_url, 0).map_err(Problem::internal)?;
        if let Some(charge) = relayed.charge(&app.owner_merchant_id).map_err(Problem::internal)? {
            let with = vec![self.requests.create_item(&relayed)?, self.outbox.put_item(&notice, now)?];
            match self.ledger.apply(&charge, with, now).await {
                Ok(Applied::Now) => {
                    self.outbox.send(&notice).await;
                    return Ok(relayed);
                }
                Ok(Applied::Already) | Err(TransferError::Rejected(REQUEST_NEW)) => {
                    return self.recorded(&relayed.id).await;
                }
                // Refused by the ledger: recorded like any refusal, and the server is told.
                Err(TransferError::Ledger(LedgerError::InsufficientFunds { .. })) => {
                    let amount =
                        relayed.outcome.charged().ok_or_else(|| Problem::internal("a charge without amount"))?;
                    relayed.outcome = Outcome::InsufficientFunds { amount };
                }
                Err(TransferError::Ledger(LedgerError::CurrencyMismatch { held, .. })) => {
                    relayed.outcome = Outcome::WalletCurrencyMismatch { held: held.code().to_owned() };
                }
                Err(e) => return Err(Problem::from(e)),
            }
        }
        let items = vec![self.requests.create_item(&relayed)?, self.outbox.put_item(&notice, now)?];
        match transact(&self.dynamodb, items).await {
            Ok(()) => {
                self.outbox.send(&notice).await;
                Ok(relayed)
            }
            Err(e) if e.broke(REQUEST_NEW) => self.recorded(&relayed.id).await,
            Err(e) => Err(Problem::internal(e)),
        }
    }

    async fn recorded(&self, id: &str) -> Result<RelayedRequest, Problem> {
        self.requests.get(id).await?.ok_or_else(|| Problem::internal(format!("request {id} is not recorded")))
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
        let title = app.map_or(relayed.app_id.as_str(), |a| a.interface.title.as_str());
        let message = relayed.message(title);
        let message =
            self.post(&relayed.user, &Counterparty::mini_app(&relayed.app_id), message, relayed.created_at).await?;
        let response = match relayed.outcome.refusal() {
            None => json_response(
                StatusCode::CREATED,
                &json!({
                    "request_id": relayed.id,
                    "app_id": relayed.app_id,
                    "outcome": relayed.summary(),
                    "charged": relayed.outcome.charged(),
                    "deliver": relayed.deliver(),
                    "message": message,
                    "directive": CLOSE_INTERFACE,
                }),
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
