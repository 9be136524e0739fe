//! Mini-apps (capability 2): third-party apps that run inside the chat. An admin registers an app
//! (its owner merchant, its server, its key, its interface descriptor). A user's client verifies an
//! app id: a positive answer is the descriptor and a short-lived session bound to the user and the
//! app; a negative one is a chat message saying why. A request made in the app's interface goes
//! through us to the app's server (signed both ways); we charge the user only the exact amount the
//! user approved and the server asked for, tell the server the outcome, and answer the client with
//! the chat message that reports it and a directive to close the app's interface.
//!
//! This module is the pure part: registration and descriptor validation, the verification and
//! session rules, judging the server's answer, and what the user and the server are told.

pub mod api;
pub mod notices;
pub mod relay;
pub mod store;

use lambda_http::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Problem;
use crate::conversation::{Counterparty, NewMessage};
use crate::crypto::{Key, TokenPurpose, keyed_token};
use crate::http::partner_url;
use crate::ledger::{AccountId, LedgerError, Transfer};
use crate::money::{Money, MoneyInput};

/// The permissions an interface may ask for. Only `wallet.charge` is enforced here (a request with
/// an approved amount needs it); the client shows the others when the user opens the app.
pub const PERMISSIONS: &[&str] = &["wallet.charge", "profile.basic", "location"];
pub const CHARGE_PERMISSION: &str = "wallet.charge";

/// What the answer to a relayed request tells the client to do with the app's interface.
pub const CLOSE_INTERFACE: &str = "close_interface";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MiniAppStatus {
    Active,
    Suspended,
    /// Final: a revoked app never becomes active again.
    Revoked,
}

impl MiniAppStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MiniAppStatus::Active => "active",
            MiniAppStatus::Suspended => "suspended",
            MiniAppStatus::Revoked => "revoked",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [MiniAppStatus::Active, MiniAppStatus::Suspended, MiniAppStatus::Revoked]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// An action the app's interface may offer (e.g. `buy`); relayed requests must name one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceAction {
    pub id: String,
    pub title: String,
}

/// What the client loads to show the app inside the chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    pub title: String,
    /// The page the client opens (hosted by the third party).
    pub entry_page: String,
    pub actions: Vec<InterfaceAction>,
    pub permissions: Vec<String>,
}

fn is_identifier(text: &str) -> bool {
    (1..=40).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

fn is_label(text: &str, max: usize) -> bool {
    let chars = text.chars().count();
    text.trim() == text && (1..=max).contains(&chars) && !text.chars().any(char::is_control)
}

impl Interface {
    /// `allow_http`: whether a plain http entry page is accepted (the local stack only).
    pub fn validate(self, allow_http: bool) -> Result<Self, Problem> {
        let invalid = |detail: String| Problem::bad_request("invalid_interface", detail);
        if !is_label(&self.title, 60) {
            return Err(invalid("interface.title must be 1 to 60 characters, without surrounding spaces".into()));
        }
        let entry_page = partner_url(&self.entry_page, allow_http)
            .ok_or_else(|| invalid("interface.entry_page must be an absolute https URL".into()))?
            .to_owned();
        if self.actions.is_empty() || self.actions.len() > 20 {
            return Err(invalid("interface.actions must list 1 to 20 actions".into()));
        }
        for (i, action) in self.actions.iter().enumerate() {
            if !is_identifier(&action.id) {
                return Err(invalid(format!(
                    "interface.actions[{i}].id must be 1 to 40 lower-case letters, digits, '_', '.' or '-'"
                )));
            }
            if !is_label(&action.title, 60) {
                return Err(invalid(format!("interface.actions[{i}].title must be 1 to 60 characters")));
            }
            if self.actions[..i].iter().any(|a| a.id == action.id) {
                return Err(invalid(format!("interface.actions[{i}].id {:?} is listed twice", action.id)));
            }
        }
        for (i, permission) in self.permissions.iter().enumerate() {
            if !PERMISSIONS.contains(&permission.as_str()) {
                return Err(invalid(format!(
                    "interface.permissions[{i}] {permission:?} is not one of {}",
                    PERMISSIONS.join(", ")
                )));
            }
            if self.permissions[..i].contains(permission) {
                return Err(invalid(format!("interface.permissions[{i}] {permission:?} is listed twice")));
            }
        }
        Ok(Interface { entry_page, ..self })
    }

    pub fn action(&self, id: &str) -> Option<&InterfaceAction> {
        self.actions.iter().find(|a| a.id == id)
    }

    pub fn may_charge(&self) -> bool {
        self.permissions.iter().any(|p| p == CHARGE_PERMISSION)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiniApp {
    pub id: String,
    /// The merchant whose account the app's charges are paid into.
    pub owner_merchant_id: String,
    /// Where relayed requests go (`<server_url>/requests`) and outcomes (`<server_url>/outcomes`).
    pub server_url: String,
    pub status: MiniAppStatus,
    /// Names the current master key in signatures, so keys can rotate.
    pub key_id: String,
    /// The master key, envelope-encrypted by KMS.
    pub key_ciphertext: Vec<u8>,
    /// The key before the last rotation, while it is still honoured.
    pub previous_key: Option<crate::keys::PreviousKey>,
    pub interface: Interface,
    pub created_at: i64,
}

impl MiniApp {
    /// The owner string KMS binds the key to (its encryption context).
    pub fn key_owner(id: &str) -> String {
        format!("miniapp/{id}")
    }

    pub fn stored_key(&self) -> crate::keys::StoredKey<'_> {
        crate::keys::StoredKey {
            key_id: &self.key_id,
            ciphertext: &self.key_ciphertext,
            previous: self.previous_key.as_ref(),
        }
    }

    /// What an admin sees: everything but its key.
    pub fn view(&self) -> Value {
        json!({
            "id": self.id,
            "owner_merchant_id": self.owner_merchant_id,
            "server_url": self.server_url,
            "status": self.status.as_str(),
            "key_id": self.key_id,
            "interface": self.interface,
            "created_at": self.created_at,
        })
    }
}

/// A registration request, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub owner_merchant_id: String,
    pub server_url: String,
    pub interface: Interface,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationJson {
    owner_merchant_id: String,
    server_url: String,
    interface: Interface,
}

impl Registration {
    /// `allow_http`: whether plain http URLs are accepted (the local stack only).
    pub fn parse(json: RegistrationJson, allow_http: bool) -> Result<Self, Problem> {
        let server_url = partner_url(&json.server_url, allow_http).ok_or_else(|| {
            Problem::bad_request(
                "invalid_server_url",
                "server_url must be an absolute https URL, e.g. https://tea.example/superpay",
            )
        })?;
        Ok(Registration {
            owner_merchant_id: crate::ids::check("owner_merchant_id", &json.owner_merchant_id)?.to_owned(),
            server_url: server_url.trim_end_matches('/').to_owned(),
            interface: json.interface.validate(allow_http)?,
        })
    }
}

pub fn unknown_miniapp(id: &str) -> Problem {
    Problem::not_found("unknown_miniapp", format!("no mini-app {id:?}"))
}

/// Why an app cannot be opened or used: the problem, and the chat message a verification posts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub text: String,
    /// Whose conversation the message belongs in: the app's, or the platform's for an unknown id.
    pub counterparty: Counterparty,
}

impl Refusal {
    pub fn problem(&self) -> Problem {
        Problem::new(self.status, self.code, self.text.clone())
    }

    pub fn message(&self, id: String, app_id: &str) -> NewMessage {
        NewMessage {
            id,
            kind: "miniapp.unavailable".into(),
            text: self.text.clone(),
            data: json!({ "app_id": app_id, "reason": self.code }),
        }
    }
}

/// Whether `app` (looked up by `id`) may be opened and used now.
pub fn check_available(id: &str, app: Option<&MiniApp>) -> Result<(), Refusal> {
    let Some(app) = app else {
        return Err(Refusal {
            status: StatusCode::NOT_FOUND,
            code: "miniapp_unknown",
            text: format!("There is no mini-app {id:?}. Check the link or code you opened it from."),
            counterparty: Counterparty::platform(),
        });
    };
    let title = &app.interface.title;
    let (status, code, text) = match app.status {
        MiniAppStatus::Active => return Ok(()),
        MiniAppStatus::Suspended => (
            StatusCode::FORBIDDEN,
            "miniapp_suspended",
            format!("{title} is unavailable for now: the platform suspended it. Nothing was shared with it."),
        ),
        MiniAppStatus::Revoked => (
            StatusCode::GONE,
            "miniapp_revoked",
            format!("{title} was removed from the platform and can no longer be opened."),
        ),
    };
    Err(Refusal { status, code, text, counterparty: Counterparty::mini_app(&app.id) })
}

/// A verified user's pass to one app for a short while. Its id is not a bearer credential: it only
/// works with the JWT of the user it was issued to, for the app it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub user: String,
    pub app_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

impl Session {
    pub fn check(&self, user: &str, app_id: &str, now: i64) -> Result<(), Problem> {
        if self.user != user || self.app_id != app_id {
            return Err(invalid_session());
        }
        if now >= self.expires_at {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "miniapp_session_expired",
                "the mini-app session expired: verify the app again to get a new one",
            ));
        }
        Ok(())
    }
}

/// Unknown, or another user's or another app's: the same answer, so ids cannot be probed.
pub fn invalid_session() -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        "miniapp_session_invalid",
        "this session was not issued to you for this mini-app: verify the app to get one",
    )
}

/// A request made in the app's interface, as the client sends it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestJson {
    session_id: String,
    action: String,
    #[serde(default)]
    params: Option<Value>,
    /// The exact amount the user approved in the interface, or none for a request that pays nothing.
    #[serde(default)]
    approved_amount: Option<MoneyInput>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UserRequest {
    pub session_id: String,
    pub action: String,
    pub params: Value,
    pub approved: Option<Money>,
}

/// The most a request's `params` may take, serialized.
pub const MAX_PARAMS_BYTES: usize = 4096;

impl RequestJson {
    pub fn validate(self) -> Result<UserRequest, Problem> {
        crate::ids::check("session_id", &self.session_id)?;
        let params = self.params.unwrap_or_else(|| json!({}));
        if !params.is_object() {
            return Err(Problem::bad_request("invalid_params", "params must be a JSON object"));
        }
        if params.to_string().len() > MAX_PARAMS_BYTES {
            return Err(Problem::bad_request(
                "invalid_params",
                format!("params must be at most {MAX_PARAMS_BYTES} bytes of JSON"),
            ));
        }
        Ok(UserRequest {
            session_id: self.session_id,
            action: self.action,
            params,
            approved: self.approved_amount.map(MoneyInput::validate).transpose()?,
        })
    }
}

impl UserRequest {
    /// What the app allows: a listed action, and `wallet.charge` before any approved amount.
    pub fn check_against(&self, interface: &Interface) -> Result<(), Problem> {
        if interface.action(&self.action).is_none() {
            let offered: Vec<&str> = interface.actions.iter().map(|a| a.id.as_str()).collect();
            return Err(Problem::bad_request(
                "unknown_action",
                format!("{} offers no action {:?}; it offers {}", interface.title, self.action, offered.join(", ")),
            ));
        }
        if self.approved.is_some() && !interface.may_charge() {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "miniapp_may_not_charge",
                format!("{} does not have the {CHARGE_PERMISSION} permission", interface.title),
            ));
        }
        Ok(())
    }
}

/// Why the app's server gave no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerFault {
    Timeout,
    Unreachable,
    InvalidAnswer,
    BadSignature,
}

/// What the app's server said it will deliver, and for how much (none: it is free).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerAnswer {
    pub request_id: String,
    pub deliver: String,
    #[serde(default)]
    pub amount: Option<Money>,
}

/// How a relayed request ended. Only `Charged` moves money.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Charged {
        amount: Money,
        deliver: String,
    },
    /// Nothing approved and nothing asked: the server delivers for free.
    Completed {
        deliver: String,
    },
    AmountMismatch {
        approved: Option<Money>,
        asked: Option<Money>,
    },
    InsufficientFunds {
        amount: Money,
    },
    /// The wallet holds another currency than the amount asked (its ISO code).
    WalletCurrencyMismatch {
        held: String,
    },
    ServerFailed {
        fault: ServerFault,
        detail: String,
    },
}

/// The charge, if the server asked for exactly what the user approved.
pub fn judge(approved: Option<Money>, reply: Result<ServerAnswer, (ServerFault, String)>) -> Outcome {
    let answer = match reply {
        Ok(answer) => answer,
        // Bounded: it is kept in the request's record.
        Err((fault, detail)) => return Outcome::ServerFailed { fault, detail: detail.chars().take(300).collect() },
    };
    match (approved, answer.amount) {
        (Some(approved), Some(asked)) if approved == asked => {
            Outcome::Charged { amount: approved, deliver: answer.deliver }
        }
        (None, None) => Outcome::Completed { deliver: answer.deliver },
        (approved, asked) => Outcome::AmountMismatch { approved, asked },
    }
}

fn shown(amount: &Option<Money>) -> String {
    amount.map_or_else(|| "nothing".into(), |m| m.to_string())
}

impl Outcome {
    /// The HTTP status and problem code of the answer (`None`: a success).
    pub fn refusal(&self) -> Option<(StatusCode, &'static str)> {
        match self {
            Outcome::Charged { .. } | Outcome::Completed { .. } => None,
            Outcome::AmountMismatch { .. } => Some((StatusCode::CONFLICT, "amount_mismatch")),
            Outcome::InsufficientFunds { .. } => Some((StatusCode::PAYMENT_REQUIRED, "insufficient_funds")),
            Outcome::WalletCurrencyMismatch { .. } => Some((StatusCode::CONFLICT, "wallet_currency_mismatch")),
            Outcome::ServerFailed { fault: ServerFault::Timeout, .. } => {
                Some((StatusCode::GATEWAY_TIMEOUT, "miniapp_server_timeout"))
            }
            Outcome::ServerFailed { fault: ServerFault::Unreachable, .. } => {
                Some((StatusCode::BAD_GATEWAY, "miniapp_server_unreachable"))
            }
            Outcome::ServerFailed { fault: ServerFault::InvalidAnswer, .. } => {
                Some((StatusCode::BAD_GATEWAY, "miniapp_server_invalid_answer"))
            }
            Outcome::ServerFailed { fault: ServerFault::BadSignature, .. } => {
                Some((StatusCode::BAD_GATEWAY, "miniapp_server_bad_signature"))
            }
        }
    }

    pub fn charged(&self) -> Option<Money> {
        match self {
            Outcome::Charged { amount, .. } => Some(*amount),
            _ => None,
        }
    }

    /// What the user reads in the conversation with the app.
    pub fn text(&self, title: &str) -> String {
        match self {
            Outcome::Charged { amount, deliver } => format!("Paid {amount} to {title}: {deliver}."),
            Outcome::Completed { deliver } => format!("{title}: {deliver}."),
            Outcome::AmountMismatch { approved, asked } => {
                format!("{title} asked for {} but you approved {}; nothing was charged.", shown(asked), shown(approved))
            }
            Outcome::InsufficientFunds { amount } => {
                format!("Your wallet does not have {amount} available for {title}; nothing was charged.")
            }
            Outcome::WalletCurrencyMismatch { held } => {
                format!("Your wallet holds {held}, not the currency {title} charges in; nothing was charged.")
            }
            Outcome::ServerFailed { fault, .. } => {
                let why = match fault {
                    ServerFault::Timeout => "did not answer in time",
                    ServerFault::Unreachable => "could not be reached",
                    ServerFault::InvalidAnswer => "answered something we could not read",
                    ServerFault::BadSignature => "sent an answer we could not verify",
                };
                format!("{title} {why}; nothing was charged. You can try again from the app.")
            }
        }
    }
}

/// A relayed request and how it ended (`MiniAppRequestsTable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayedRequest {
    pub id: String,
    pub app_id: String,
    pub user: String,
    pub action: String,
    pub approved: Option<Money>,
    pub outcome: Outcome,
    pub created_at: i64,
}

impl RelayedRequest {
    /// The id of the outcome's chat message and of its outbox notice alike.
    pub fn outcome_id(&self) -> String {
        format!("{}/outcome", self.id)
    }

    /// The money a charged request moves, wallet -> the owner's merchant account. Its id derives
    /// from the request's, so the same request never pays twice.
    pub fn charge(&self, owner_merchant_id: &str) -> Result<Option<Transfer>, LedgerError> {
        let Some(amount) = self.outcome.charged() else { return Ok(None) };
        Transfer::between(
            format!("{}/charge", self.id),
            amount,
            AccountId::wallet(&self.user),
            AccountId::merchant(owner_merchant_id),
            "miniapp.charge",
            format!("miniapp-request/{}", self.id),
        )
        .map(Some)
    }

    pub fn message(&self, title: &str) -> NewMessage {
        let kind = match &self.outcome {
            Outcome::Charged { .. } => "miniapp.charged",
            Outcome::Completed { .. } => "miniapp.completed",
            _ => "miniapp.refused",
        };
        NewMessage {
            id: self.outcome_id(),
            kind: kind.into(),
            text: self.outcome.text(title),
            // What the client renders; a server fault's detail stays in the logs and the record.
            data: json!({
                "app_id": self.app_id,
                "request_id": self.id,
                "action": self.action,
                "outcome": self.summary(),
                "reason": self.outcome.refusal().map(|(_, code)| code),
                "charged": self.outcome.charged(),
                "deliver": self.deliver(),
            }),
        }
    }

    /// `charged`, `completed` or `refused`.
    pub fn summary(&self) -> &'static str {
        match self.outcome.refusal() {
            None if self.outcome.charged().is_some() => "charged",
            None => "completed",
            Some(_) => "refused",
        }
    }

    /// What the server will deliver, when the request went through.
    pub fn deliver(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Charged { deliver, .. } | Outcome::Completed { deliver } => Some(deliver),
            _ => None,
        }
    }

    /// What the app's server is told before it delivers: `charged`, `completed` or `refused`.
    pub fn notice(&self) -> Value {
        json!({
            "event_id": self.outcome_id(),
            "request_id": self.id,
            "outcome": self.summary(),
            "reason": self.outcome.refusal().map(|(_, code)| code),
            "amount": self.outcome.charged(),
        })
    }
}

/// The user as one app's server knows them: stable for that app, different for every other app,
/// and not the platform's user id. Keyed by the server's token secret (`crate::keys::TokenSecret`),
/// so neither an app nor anyone else can recompute it from a guessed user id, nor link one user's
/// pseudonyms across apps. (Until issue 9 it was an unkeyed hash; every pseudonym changed once then.)
pub fn app_user(secret: &Key, app_id: &str, user: &str) -> String {
    format!("u_{}", keyed_token(secret, TokenPurpose::MiniAppPseudonym, &[app_id, user]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn interface() -> Interface {
        Interface {
            title: "Tea Corner".into(),
            entry_page: " https://tea.example/app/index.html ".into(),
            actions: vec![InterfaceAction { id: "buy".into(), title: "Buy".into() }],
            permissions: vec!["wallet.charge".into()],
        }
    }

    fn app(status: MiniAppStatus) -> MiniApp {
        MiniApp {
            id: "a_1".into(),
            owner_merchant_id: "m_1".into(),
            server_url: "https://tea.example".into(),
            status,
            key_id: "a_1.k1".into(),
            key_ciphertext: vec![],
            previous_key: None,
            interface: interface().validate(false).unwrap(),
            created_at: 0,
        }
    }

    fn usd(amount: &str) -> Money {
        Money::parse(amount, "USD").unwrap()
    }

    #[test]
    fn interfaces_are_validated() {
        assert_eq!(interface().validate(false).unwrap().entry_page, "https://tea.example/app/index.html");
        type Change = fn(&mut Interface);
        let cases: [(Change, &str); 8] = [
            (|i| i.title = String::new(), "title"),
            (|i| i.entry_page = "tea.example".into(), "entry_page"),
            (|i| i.entry_page = "http://tea.example/app".into(), "entry_page"),
            (|i| i.actions.clear(), "actions"),
            (|i| i.actions[0].id = "Buy Now".into(), "actions[0].id"),
            (|i| i.actions.push(i.actions[0].clone()), "listed twice"),
            (|i| i.permissions.push("contacts".into()), "not one of"),
            (|i| i.actions[0].title = " Buy".into(), "actions[0].title"),
        ];
        for (change, says) in cases {
            let mut bad = interface();
            change(&mut bad);
            let problem = bad.validate(false).unwrap_err();
            assert_eq!(problem.code, "invalid_interface");
            assert!(problem.detail.contains(says), "{} should mention {says}", problem.detail);
        }
    }

    #[test]
    fn only_active_apps_verify_and_each_refusal_says_why() {
        assert_eq!(check_available("a_1", Some(&app(MiniAppStatus::Active))), Ok(()));
        let unknown = check_available("a_x", None).unwrap_err();
        assert_eq!((unknown.status, unknown.code), (StatusCode::NOT_FOUND, "miniapp_unknown"));
        assert_eq!(unknown.counterparty, Counterparty::platform());
        let suspended = check_available("a_1", Some(&app(MiniAppStatus::Suspended))).unwrap_err();
        assert_eq!((suspended.status, suspended.code), (StatusCode::FORBIDDEN, "miniapp_suspended"));
        let revoked = check_available("a_1", Some(&app(MiniAppStatus::Revoked))).unwrap_err();
        assert_eq!((revoked.status, revoked.code), (StatusCode::GONE, "miniapp_revoked"));
        assert_eq!(revoked.counterparty, Counterparty::mini_app("a_1"));
        assert!(revoked.message("m".into(), "a_1").text.starts_with("Tea Corner was removed"));
    }

    #[test]
    fn a_session_serves_only_its_user_and_app_until_it_expires() {
        let session =
            Session { id: "s_1".into(), user: "alice".into(), app_id: "a_1".into(), created_at: 0, expires_at: 100 };
        assert_eq!(session.check("alice", "a_1", 99), Ok(()));
        assert_eq!(session.check("bob", "a_1", 99).unwrap_err().code, "miniapp_session_invalid");
        assert_eq!(session.check("alice", "a_2", 99).unwrap_err().code, "miniapp_session_invalid");
        assert_eq!(session.check("alice", "a_1", 100).unwrap_err().code, "miniapp_session_expired");
    }

    #[test]
    fn requests_name_an_offered_action_and_charge_only_with_permission() {
        let request = |action: &str, approved: Option<Money>| UserRequest {
            session_id: "s_1".into(),
            action: action.into(),
            params: json!({}),
            approved,
        };
        let mut interface = interface().validate(false).unwrap();
        assert_eq!(request("buy", Some(usd("1.00"))).check_against(&interface), Ok(()));
        assert_eq!(request("sell", None).check_against(&interface).unwrap_err().code, "unknown_action");
        interface.permissions.clear();
        assert_eq!(request("buy", None).check_against(&interface), Ok(()));
        assert_eq!(
            request("buy", Some(usd("1.00"))).check_against(&interface).unwrap_err().code,
            "miniapp_may_not_charge"
        );
        let json = |params: Value| RequestJson {
            session_id: "s_1".into(),
            action: "buy".into(),
            params: Some(params),
            approved_amount: None,
        };
        assert_eq!(json(json!([1])).validate().unwrap_err().code, "invalid_params");
        assert_eq!(json(json!({ "x": "y".repeat(MAX_PARAMS_BYTES) })).validate().unwrap_err().code, "invalid_params");
    }

    #[test]
    fn the_server_is_told_the_outcome_and_the_user_reads_it() {
        let mut relayed = RelayedRequest {
            id: "r_1".into(),
            app_id: "a_1".into(),
            user: "alice".into(),
            action: "buy".into(),
            approved: Some(usd("4.5")),
            outcome: Outcome::Charged { amount: usd("4.5"), deliver: "1 x jasmine tea".into() },
            created_at: 0,
        };
        assert_eq!(relayed.message("Tea Corner").text, "Paid 4.50 USD to Tea Corner: 1 x jasmine tea.");
        assert_eq!(relayed.notice()["outcome"], "charged");
        let charge = relayed.charge("m_1").unwrap().unwrap();
        assert_eq!((charge.id.as_str(), charge.legs[1].account.as_str()), ("r_1/charge", "merchant:m_1"));
        relayed.outcome = Outcome::AmountMismatch { approved: Some(usd("4.5")), asked: Some(usd("5")) };
        assert_eq!(
            relayed.message("Tea Corner").text,
            "Tea Corner asked for 5.00 USD but you approved 4.50 USD; nothing was charged."
        );
        assert_eq!(
            (relayed.notice()["outcome"].as_str(), relayed.notice()["reason"].as_str()),
            (Some("refused"), Some("amount_mismatch"))
        );
        assert!(relayed.charge("m_1").unwrap().is_none());
    }

    #[test]
    fn app_users_are_stable_per_app_and_differ_across_apps_users_and_secrets() {
        let secret = Key::random();
        let alice = app_user(&secret, "a_1", "alice");
        assert_eq!(alice, app_user(&secret, "a_1", "alice"));
        assert_ne!(alice, app_user(&secret, "a_2", "alice"));
        assert_ne!(alice, app_user(&secret, "a_1", "bob"));
        assert_ne!(alice, app_user(&Key::random(), "a_1", "alice"), "only the secret's holder computes it");
        assert!(alice.starts_with("u_") && !alice.contains("alice"));
    }

    proptest! {
        /// Money moves only for exactly the approved amount, and never for more or less.
        #[test]
        fn only_the_exact_approved_amount_is_charged(
            approved in proptest::option::of(1u32..100_000),
            asked in proptest::option::of(1u32..100_000),
        ) {
            let money = |cents: u32| Money::new(rust_decimal::Decimal::new(i64::from(cents), 2), usd("1").currency()).unwrap();
            let answer = ServerAnswer { request_id: "r_1".into(), deliver: "x".into(), amount: asked.map(money) };
            let outcome = judge(approved.map(money), Ok(answer));
            match outcome.charged() {
                Some(charged) => prop_assert!(approved == asked && Some(charged) == approved.map(money)),
                None => prop_assert!(approved != asked || approved.is_none()),
            }
            prop_assert_eq!(outcome.refusal().is_none(), approved == asked);
        }
    }
}
