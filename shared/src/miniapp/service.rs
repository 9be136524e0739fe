//! What the mini-apps route and payment sessions (`crate::payment_session`) both do with a request
//! made in an app's interface: check that the user may send it now, relay it to the app's server
//! under a given request id (once: a request recorded under that id answers as recorded), record
//! how it ended with its charge and the server's notice in one transaction, and post its outcome in
//! the user's conversation with the app.

use super::relay::{MiniAppClient, ServerRequest};
use super::store::{MiniAppDirectory, MiniAppStore, REQUEST_NEW, RequestStore, SessionStore, request_session_and_app};
use super::{MiniApp, Outcome, RelayedRequest, SessionError, UserRequest, app_user, check_available, judge};
use crate::Problem;
use crate::attention::AttentionStore;
use crate::aws::{self, MissingEnv};
use crate::conversation::store::ConversationStore;
use crate::conversation::{Counterparty, Message, NewMessage};
use crate::dynamo::{Write, transact};
use crate::keys::{KeyService, TokenSecret};
use crate::ledger::LedgerError;
use crate::ledger::store::{Applied, LedgerStore, TransferError};
use crate::merchant::store::MerchantStore;
use crate::merchant::{MerchantStatus, inactive_merchant};
use crate::outbox::Outbox;
use crate::problem::catalogue;
use crate::queues::NotificationMessage;

/// What `RequestService::check_relay` found: the request as an earlier attempt recorded it (with
/// its app, if it still exists), or the app it may be sent to.
pub enum Checked {
    Recorded(Box<RelayedRequest>, Option<MiniApp>),
    Allowed(MiniApp),
}

pub struct RequestService {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub apps: MiniAppDirectory,
    pub sessions: SessionStore,
    pub requests: RequestStore,
    merchants: MerchantStore,
    ledger: LedgerStore,
    conversations: ConversationStore,
    /// A payment the user approved that was not made shows on their home.
    home: AttentionStore,
    outbox: Outbox,
    queue_url: String,
    /// Keys the user pseudonyms each app's server sees (`super::app_user`).
    token_secret: TokenSecret,
    client: MiniAppClient,
}

impl RequestService {
    pub fn from_env(config: &aws_config::SdkConfig, dynamodb: &aws_sdk_dynamodb::Client) -> Result<Self, MissingEnv> {
        let keys = KeyService::new(aws_sdk_kms::Client::new(config), aws::env("PARTY_KEYS_KEY_ID")?);
        Ok(RequestService {
            token_secret: TokenSecret::new(dynamodb.clone(), aws::env("SERVER_SECRETS_TABLE")?, keys.clone()),
            apps: MiniAppDirectory::new(MiniAppStore::new(dynamodb.clone(), aws::env("MINIAPPS_TABLE")?), keys),
            sessions: SessionStore::new(dynamodb.clone(), aws::env("MINIAPP_SESSIONS_TABLE")?),
            requests: RequestStore::new(dynamodb.clone(), aws::env("MINIAPP_REQUESTS_TABLE")?),
            merchants: MerchantStore::new(dynamodb.clone(), aws::env("MERCHANTS_TABLE")?),
            ledger: LedgerStore::new(dynamodb.clone(), aws::env("LEDGER_TABLE")?),
            conversations: ConversationStore::new(dynamodb.clone(), aws::env("CONVERSATIONS_TABLE")?),
            home: AttentionStore::new(dynamodb.clone(), aws::env("HOME_TABLE")?),
            outbox: Outbox::new(dynamodb.clone(), aws_sdk_sqs::Client::new(config), aws::env("OUTBOX_TABLE")?),
            queue_url: aws::env("NOTIFICATIONS_QUEUE_URL")?,
            client: MiniAppClient::default(),
            dynamodb: dynamodb.clone(),
        })
    }

    /// Posts `message` in the user's conversation with `with` (once per message id).
    pub async fn post(
        &self,
        user: &str,
        with: &Counterparty,
        message: NewMessage,
        at: i64,
    ) -> Result<Message, Problem> {
        let sequence = self.conversations.post_once(user, with, &message, at).await?;
        Ok(message.posted(sequence, at))
    }

    /// The chat message reporting how `relayed` ended, posted once.
    pub async fn post_outcome(&self, relayed: &RelayedRequest, app: Option<&MiniApp>) -> Result<Message, Problem> {
        let title = app.map_or(relayed.app_id.as_str(), |a| a.interface.title.as_str());
        let message = relayed.message(title);
        self.post(&relayed.user, &Counterparty::mini_app(&relayed.app_id), message, relayed.created_at).await
    }

    /// Whether `user` may send `input` to app `app_id` now: its session is theirs, for this app and
    /// unexpired; the app is available and offers the action; a charge's owner is active and
    /// charges in the approved amount's currency. The app.
    pub async fn check(&self, user: &str, app_id: &str, input: &UserRequest, now: i64) -> Result<MiniApp, Problem> {
        let (session, app) = tokio::try_join!(self.sessions.get(&input.session_id), self.apps.store.get(app_id))?;
        self.check_with(user, app_id, input, session, app, now).await
    }

    async fn check_with(
        &self,
        user: &str,
        app_id: &str,
        input: &UserRequest,
        session: Option<super::Session>,
        app: Option<MiniApp>,
        now: i64,
    ) -> Result<MiniApp, Problem> {
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
        Ok(app)
    }

    /// Relays `input` of `user` to app `app_id` as request `request_id` and records how it ended
    /// (with `with`, see `commit`): the request as recorded (an earlier attempt's, if any), with
    /// its app when it still exists.
    pub async fn relay(
        &self,
        request_id: &str,
        user: &str,
        app_id: &str,
        input: UserRequest,
        with: Vec<Write>,
        now: i64,
    ) -> Result<(RelayedRequest, Option<MiniApp>), Problem> {
        let checked = self.check_relay(request_id, user, app_id, &input, now).await?;
        self.relay_checked(checked, request_id, user, &input, with, now).await
    }

    /// What `relay` reads and checks before anything is written or sent: an earlier attempt's
    /// record of request `request_id` (which answers as recorded), else whether `user` may send
    /// `input` to app `app_id` now (`check`). Writes nothing, so a refusal here can be recorded
    /// without a claim (`IdempotencyStore::run_checked`).
    pub async fn check_relay(
        &self,
        request_id: &str,
        user: &str,
        app_id: &str,
        input: &UserRequest,
        now: i64,
    ) -> Result<Checked, Problem> {
        // Independent reads, made together: an earlier attempt's record, the session, the app.
        let (done, session, app) = request_session_and_app(
            &self.requests,
            &self.sessions,
            &self.apps.store,
            (request_id, &input.session_id, app_id),
        )
        .await?;
        // The request id derives from this app's id, so an earlier attempt was about this app.
        if let Some(done) = done {
            return Ok(Checked::Recorded(Box::new(done), app));
        }
        Ok(Checked::Allowed(self.check_with(user, app_id, input, session, app, now).await?))
    }

    /// `relay`, once `check_relay` has allowed it.
    pub async fn relay_checked(
        &self,
        checked: Checked,
        request_id: &str,
        user: &str,
        input: &UserRequest,
        with: Vec<Write>,
        now: i64,
    ) -> Result<(RelayedRequest, Option<MiniApp>), Problem> {
        let app = match checked {
            Checked::Recorded(done, app) => return Ok((*done, app)),
            Checked::Allowed(app) => app,
        };
        // Both unwrapped by KMS once per instance, so together.
        let (keys, token_secret) = tokio::try_join!(self.apps.keys(&app), self.token_secret.get())?;
        let server_request = ServerRequest {
            request_id: request_id.to_owned(),
            app_id: app.id.clone(),
            user: app_user(token_secret, &app.id, user),
            action: input.action.clone(),
            params: input.params.clone(),
            approved_amount: input.approved,
        };
        let reply = self.client.relay(&app, &keys, &server_request, now).await;
        if let Err((fault, detail)) = &reply {
            tracing::warn!(app = %app.id, request = %request_id, ?fault, %detail, "no usable answer from the mini-app's server");
        }
        let relayed = RelayedRequest {
            id: request_id.to_owned(),
            app_id: app.id.clone(),
            user: user.to_owned(),
            action: input.action.clone(),
            approved: input.approved,
            outcome: judge(input.approved, reply),
            created_at: now,
        };
        let relayed = self.commit(relayed, &app, with, now).await?;
        Ok((relayed, Some(app)))
    }

    /// Records how the request ended, with its charge (if any), the outbox notice for the app's
    /// server and `with` (a payment session's confirmation), in ONE transaction. Answers the
    /// request as recorded (an earlier attempt's, if any). If a write of `with` is refused (the
    /// session was cancelled meanwhile), the request is recorded `withdrawn` without it: nothing
    /// is charged, and the server, which was asked, is told.
    async fn commit(
        &self,
        mut relayed: RelayedRequest,
        app: &MiniApp,
        mut with: Vec<Write>,
        now: i64,
    ) -> Result<RelayedRequest, Problem> {
        let theirs: Vec<&'static str> = with.iter().map(|w| w.rule).collect();
        let event = NotificationMessage::MiniAppOutcome { id: relayed.outcome_id(), request_id: relayed.id.clone() };
        let notice = event.outbox(&self.queue_url, 0).map_err(Problem::internal)?;
        loop {
            if let Some(charge) = relayed.charge(&app.owner_merchant_id).map_err(Problem::internal)? {
                let mut items = vec![self.requests.create_item(&relayed)?, self.outbox.put_item(&notice, now)?];
                items.extend(with.iter().cloned());
                match self.ledger.apply(&charge, items, now).await {
                    Ok(Applied::Now) => {
                        self.outbox.send(&notice).await;
                        return Ok(relayed);
                    }
                    Ok(Applied::Already) | Err(TransferError::Rejected(REQUEST_NEW)) => {
                        return self.recorded(&relayed.id).await;
                    }
                    Err(TransferError::Rejected(rule)) if theirs.contains(&rule) => {
                        relayed.outcome = Outcome::Withdrawn;
                        with.clear();
                        continue;
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
            let mut items = vec![self.requests.create_item(&relayed)?, self.outbox.put_item(&notice, now)?];
            items.extend(with.iter().cloned());
            if let Some(failed) = relayed.failed_payment_element(&app.interface.title, now) {
                items.push(self.home.put_many_item(&relayed.user, &failed)?);
            }
            match transact(&self.dynamodb, items).await {
                Ok(()) => {
                    self.outbox.send(&notice).await;
                    return Ok(relayed);
                }
                Err(e) if e.broke(REQUEST_NEW) => return self.recorded(&relayed.id).await,
                Err(e) if !with.is_empty() && theirs.iter().any(|rule| e.broke(rule)) => {
                    relayed.outcome = Outcome::Withdrawn;
                    with.clear();
                }
                Err(e) => return Err(Problem::internal(e)),
            }
        }
    }

    async fn recorded(&self, id: &str) -> Result<RelayedRequest, Problem> {
        self.requests.get(id).await?.ok_or_else(|| Problem::internal(format!("request {id} is not recorded")))
    }
}
