//! The protocol with a mini-app's server, signed both ways with the app's request-signing key
//! (see `crate::outbound`):
//!
//! - `POST <server_url>/requests` a `ServerRequest`; the server answers a signed `ServerAnswer`:
//!   what it will deliver and the amount it asks (none: free). It must not deliver yet, and it
//!   treats a repeated `request_id` as the same request: after a failure of ours (a 5xx) the
//!   client's retry with the same Idempotency-Key relays it again.
//! - `POST <server_url>/outcomes` the outcome (`RelayedRequest::notice`): `charged` or `completed`
//!   means deliver; `refused` means do not. Sent through the outbox, so at least once: the
//!   server treats a repeated `event_id` as done.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::request::OutcomeNotice;
use super::{MiniApp, ServerAnswer, ServerFault};
use crate::keys::PartyKeys;
use crate::money::Money;
use crate::outbound::{CallError, PartnerClient};

/// The signed calls this module makes (`crate::openapi`).
#[cfg(feature = "openapi")]
pub const WEBHOOKS: &[crate::openapi::WebhookDoc] = {
    use crate::openapi::{WebhookDoc, schema};
    &[
        WebhookDoc {
            name: "miniapp.request",
            summary: "to the mini-app's server, <server_url>/requests, signed with the app's key: a user's request made in the app's interface, before anything is charged; the server answers what it will deliver and the amount it asks, signed, and must not deliver yet (a repeated request_id is the same request)",
            body: schema::<ServerRequest>,
            answer: Some(schema::<ServerAnswer>),
        },
        WebhookDoc {
            name: "miniapp.outcome",
            summary: "to the mini-app's server, <server_url>/outcomes, signed with the app's key: how a relayed request ended (deliver, or do not); sent at least once, event_id naming it",
            body: schema::<OutcomeNotice>,
            answer: None,
        },
    ]
};

/// What the app's server receives about a user's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct ServerRequest {
    pub request_id: String,
    pub app_id: String,
    /// The user as this app knows them: a pseudonym of its own, never the platform's user id.
    pub user: String,
    pub action: String,
    /// The user's `params`: an object of at most 4096 bytes as JSON.
    #[cfg_attr(feature = "openapi", schemars(with = "serde_json::Map<String, Value>"))]
    pub params: Value,
    /// The exact amount the user approved, or none for a request that pays nothing.
    pub approved_amount: Option<Money>,
}

/// The longest `deliver` text a server may send (it is shown in the chat).
const MAX_DELIVER_CHARS: usize = 200;

#[derive(Default)]
pub struct MiniAppClient {
    partner: PartnerClient,
}

impl MiniAppClient {
    pub async fn relay(
        &self,
        app: &MiniApp,
        keys: &PartyKeys,
        request: &ServerRequest,
        now: i64,
    ) -> Result<ServerAnswer, (ServerFault, String)> {
        let url = format!("{}/requests", app.server_url);
        let body = serde_json::to_vec(request).unwrap_or_default();
        let answer = self.partner.exchange(&url, keys, body, now).await.map_err(|e| {
            let fault = match e {
                CallError::Timeout => ServerFault::Timeout,
                CallError::Unreachable(_) | CallError::Refused(_) | CallError::Status(_) => ServerFault::Unreachable,
                CallError::Unsigned(_) => ServerFault::InvalidAnswer,
                CallError::BadSignature => ServerFault::BadSignature,
            };
            (fault, e.to_string())
        })?;
        let invalid = |detail: String| (ServerFault::InvalidAnswer, detail);
        let answer: ServerAnswer =
            serde_json::from_slice(&answer).map_err(|e| invalid(format!("the answer is not a ServerAnswer: {e}")))?;
        if answer.request_id != request.request_id {
            return Err(invalid(format!("the answer is about request {:?}", answer.request_id)));
        }
        let chars = answer.deliver.chars().count();
        if chars == 0 || chars > MAX_DELIVER_CHARS || answer.deliver.chars().any(char::is_control) {
            return Err(invalid(format!("deliver must be 1 to {MAX_DELIVER_CHARS} printable characters")));
        }
        Ok(answer)
    }

    /// Delivers the outcome notice; `Err` says why it must be retried.
    pub async fn notify(
        &self,
        app: &MiniApp,
        keys: &PartyKeys,
        notice: &OutcomeNotice,
        now: i64,
    ) -> Result<(), String> {
        let url = format!("{}/outcomes", app.server_url);
        let body = serde_json::to_vec(notice).map_err(|e| format!("the outcome's body: {e}"))?;
        self.partner.deliver(&url, keys, body, now).await.map_err(|e| format!("the mini-app's server: {e}"))
    }
}
