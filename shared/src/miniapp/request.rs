//! A request made in the app's interface and relayed to the app's server: what the client sends
//! and what the app's interface allows, the server's answer and the judge that charges only the
//! exact amount the user approved and the server asked for, how the request ended, the charge it
//! moves, and what the user and the server are told.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::registry::{CHARGE_PERMISSION, Interface};
use crate::Problem;
use crate::attention::{Element, Held, HeldMoney};
use crate::conversation::{Counterparty, NewMessage};
use crate::ledger::{AccountId, Books, LedgerError, Transfer};
use crate::money::{Money, MoneyInput};
use crate::problem::{Code, catalogue};
use crate::reconcile::Violation;

/// What the answer to a relayed request tells the client to do with the app's interface.
pub const CLOSE_INTERFACE: &str = "close_interface";

/// A request made in the app's interface, as the client sends it.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema), schemars(rename = "MiniAppRequest"))]
#[serde(deny_unknown_fields)]
pub struct RequestJson {
    /// The session the app's verification granted.
    #[cfg_attr(feature = "openapi", schemars(schema_with = "crate::openapi::id"))]
    session_id: String,
    /// One of the actions the app's interface offers.
    action: String,
    /// What the app's server gets with the action: an object of at most 4096 bytes as JSON
    /// (absent or null: `{}`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schemars(with = "Option<serde_json::Map<String, Value>>"))]
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
        UserRequest::new(self.session_id, self.action, self.params, self.approved_amount)
    }
}

impl UserRequest {
    /// A request as a client sends it, validated (a payment session's mini-app charge too).
    pub fn new(
        session_id: String,
        action: String,
        params: Option<Value>,
        approved: Option<MoneyInput>,
    ) -> Result<UserRequest, Problem> {
        crate::ids::check("session_id", &session_id)?;
        let params = params.unwrap_or_else(|| json!({}));
        if !params.is_object() {
            return Err(RequestError::ParamsNotObject.into());
        }
        if params.to_string().len() > MAX_PARAMS_BYTES {
            return Err(RequestError::ParamsTooLarge.into());
        }
        Ok(UserRequest { session_id, action, params, approved: approved.map(MoneyInput::validate).transpose()? })
    }

    /// What the app allows: a listed action, and `wallet.charge` before any approved amount.
    pub fn check_against(&self, interface: &Interface) -> Result<(), RequestError> {
        if interface.action(&self.action).is_none() {
            let offered: Vec<&str> = interface.actions.iter().map(|a| a.id.as_str()).collect();
            return Err(RequestError::UnknownAction {
                app: interface.title.clone(),
                action: self.action.clone(),
                offered: offered.join(", "),
            });
        }
        if self.approved.is_some() && !interface.may_charge() {
            return Err(RequestError::MayNotCharge { app: interface.title.clone() });
        }
        Ok(())
    }
}

/// Why a user's request cannot be relayed to the app (before anything is relayed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("params must be a JSON object")]
    ParamsNotObject,
    #[error("params must be at most {MAX_PARAMS_BYTES} bytes of JSON")]
    ParamsTooLarge,
    #[error("{app} offers no action {action:?}; it offers {offered}")]
    UnknownAction { app: String, action: String, offered: String },
    #[error("{app} does not have the {CHARGE_PERMISSION} permission")]
    MayNotCharge { app: String },
}

impl RequestError {
    pub fn code(&self) -> &'static Code {
        match self {
            RequestError::ParamsNotObject | RequestError::ParamsTooLarge => catalogue::INVALID_PARAMS,
            RequestError::UnknownAction { .. } => catalogue::UNKNOWN_ACTION,
            RequestError::MayNotCharge { .. } => catalogue::MINIAPP_MAY_NOT_CHARGE,
        }
    }
}

impl From<RequestError> for Problem {
    fn from(e: RequestError) -> Self {
        Problem::new(e.code(), e.to_string())
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
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ServerAnswer {
    /// The request's: an answer about another request is no answer.
    pub request_id: String,
    /// What it will deliver, shown in the chat: 1 to 200 printable characters.
    #[cfg_attr(
        feature = "openapi",
        schemars(length(min = 1, max = 200), regex(pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"))
    )]
    pub deliver: String,
    /// The amount it asks: exactly the one the user approved (none where none was), else the
    /// request is refused.
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
    /// Relayed for a payment session that was cancelled (or expired) before the request was
    /// recorded: nothing is charged, and the server is told so.
    Withdrawn,
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
    /// The problem code of the answer (`None`: a success).
    pub fn refusal(&self) -> Option<&'static Code> {
        match self {
            Outcome::Charged { .. } | Outcome::Completed { .. } => None,
            Outcome::AmountMismatch { .. } => Some(catalogue::AMOUNT_MISMATCH),
            Outcome::InsufficientFunds { .. } => Some(catalogue::INSUFFICIENT_FUNDS),
            Outcome::WalletCurrencyMismatch { .. } => Some(catalogue::WALLET_CURRENCY_MISMATCH),
            Outcome::Withdrawn => Some(catalogue::PAYMENT_SESSION_CLOSED),
            Outcome::ServerFailed { fault: ServerFault::Timeout, .. } => Some(catalogue::MINIAPP_SERVER_TIMEOUT),
            Outcome::ServerFailed { fault: ServerFault::Unreachable, .. } => {
                Some(catalogue::MINIAPP_SERVER_UNREACHABLE)
            }
            Outcome::ServerFailed { fault: ServerFault::InvalidAnswer, .. } => {
                Some(catalogue::MINIAPP_SERVER_INVALID_ANSWER)
            }
            Outcome::ServerFailed { fault: ServerFault::BadSignature, .. } => {
                Some(catalogue::MINIAPP_SERVER_BAD_SIGNATURE)
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
            Outcome::Withdrawn => {
                format!("The payment to {title} was cancelled before it was made; nothing was charged.")
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
                "reason": self.outcome.refusal().map(|code| code.code()),
                "charged": self.outcome.charged(),
                "deliver": self.deliver(),
            }),
        }
    }

    /// A payment the user approved that was not made, as their home shows it for a few days (it
    /// may be dismissed): `miniapp_request:<id>`, what went wrong in the words of the chat message,
    /// the conversation to read it in. None for a request that paid or asked no payment, or that
    /// the user's session withdrew (they cancelled it).
    pub fn failed_payment_element(&self, title: &str, now: i64) -> Option<Element> {
        let approved = self.approved?;
        if self.outcome.refusal().is_none() || self.outcome == Outcome::Withdrawn {
            return None;
        }
        let held = HeldMoney {
            id: format!("miniapp_request:{}", self.id),
            kind: "miniapp.payment_failed",
            reason: self.outcome.text(title),
            data: json!({"app_id": self.app_id, "request_id": self.id, "approved": approved,
                         "reason": self.outcome.refusal().map(|code| code.code())}),
            path: format!("/conversations/{}/messages", Counterparty::mini_app(&self.app_id).as_str()),
            held: Held::GivenBack,
            explain: json!({"rule": "a payment the user approved that was not made",
                            "inputs": {"request": self.id, "outcome": self.summary()}}),
        };
        Some(held.element(now))
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
    pub fn notice(&self) -> OutcomeNotice {
        OutcomeNotice {
            event_id: self.outcome_id(),
            request_id: self.id.clone(),
            outcome: self.summary(),
            reason: self.outcome.refusal().map(|code| code.code()),
            amount: self.outcome.charged(),
        }
    }
}

/// A relayed request's outcome, as the app's server is told it (`POST <server_url>/outcomes`).
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct OutcomeNotice {
    /// The same on each delivery of this notice: the server treats a repeated one as done.
    pub event_id: String,
    pub request_id: String,
    /// `charged` or `completed`: deliver; `refused`: do not.
    pub outcome: &'static str,
    /// Why it was refused: an error code (docs/api/errors.md).
    pub reason: Option<&'static str>,
    /// What was charged, if it was.
    pub amount: Option<Money>,
}

/// What must hold of relayed requests and the money they moved (`crate::reconcile`): a charged
/// request moved exactly its amount once, as its charge; any other outcome moved nothing; and no
/// charge was made for a request that was not recorded. `requests` are all those of the users whose
/// books these are (a charge and its request's record are written in one transaction).
pub fn check_requests(requests: &[RelayedRequest], books: &Books) -> Vec<Violation> {
    let transfers = books.transfers_by_id();
    let mut violations = Vec::new();
    for request in requests {
        let charge = transfers.get(format!("{}/charge", request.id).as_str()).map(|t| (t.kind.as_str(), t.amount()));
        let moved = charge.map_or("nothing".into(), |(kind, amount)| format!("{amount} as {kind}"));
        let problem = match (request.outcome.charged(), charge) {
            (Some(amount), Some(("miniapp.charge", charged))) if charged == amount.amount() => continue,
            (Some(amount), _) => format!("is charged {amount} but moved {moved}"),
            (None, Some(_)) => format!("is {} but moved {moved}", request.summary()),
            (None, None) => continue,
        };
        violations.push(Violation::record(format!("mini-app request {}", request.id), problem));
    }
    let recorded: std::collections::HashSet<&str> = requests.iter().map(|r| r.id.as_str()).collect();
    for charge in books.transfers.iter().filter(|t| t.kind == "miniapp.charge") {
        let request = charge.cause.strip_prefix("miniapp-request/").unwrap_or(&charge.cause);
        if !recorded.contains(request) {
            violations.push(Violation::record(format!("charge {}", charge.id), "moved money for no recorded request"));
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::TransferRecord;
    use crate::miniapp::registry::tests::interface;
    use proptest::prelude::*;

    fn usd(amount: &str) -> Money {
        Money::parse(amount, "USD").unwrap()
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
        assert_eq!(request("sell", None).check_against(&interface).unwrap_err().code(), catalogue::UNKNOWN_ACTION);
        interface.permissions.clear();
        assert_eq!(request("buy", None).check_against(&interface), Ok(()));
        assert_eq!(
            request("buy", Some(usd("1.00"))).check_against(&interface),
            Err(RequestError::MayNotCharge { app: "Tea Corner".into() })
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
        assert_eq!(
            json!(relayed.notice()),
            json!({"event_id": "r_1/outcome", "request_id": "r_1", "outcome": "charged", "reason": null,
                   "amount": usd("4.5")})
        );
        let charge = relayed.charge("m_1").unwrap().unwrap();
        assert_eq!((charge.id.as_str(), charge.legs[1].account.as_str()), ("r_1/charge", "merchant:m_1"));
        relayed.outcome = Outcome::AmountMismatch { approved: Some(usd("4.5")), asked: Some(usd("5")) };
        assert_eq!(
            relayed.message("Tea Corner").text,
            "Tea Corner asked for 5.00 USD but you approved 4.50 USD; nothing was charged."
        );
        assert_eq!((relayed.notice().outcome, relayed.notice().reason), ("refused", Some("amount_mismatch")));
        assert!(relayed.charge("m_1").unwrap().is_none());
    }

    #[test]
    fn a_payment_approved_and_not_made_is_told_on_the_home_unless_withdrawn() {
        let relayed = |approved: Option<Money>, outcome: Outcome| RelayedRequest {
            id: "r_1".into(),
            app_id: "a_1".into(),
            user: "alice".into(),
            action: "buy".into(),
            approved,
            outcome,
            created_at: 0,
        };
        let timeout = Outcome::ServerFailed { fault: ServerFault::Timeout, detail: "slow".into() };
        let failed = relayed(Some(usd("4.5")), timeout.clone()).failed_payment_element("Tea Corner", 100).unwrap();
        assert_eq!((failed.id.as_str(), failed.kind.as_str()), ("miniapp_request:r_1", "miniapp.payment_failed"));
        assert_eq!((failed.class, failed.critical), (crate::attention::Class::MoneyAtRisk, false));
        assert_eq!(failed.expires_at, Some(100 + crate::attention::GIVEN_BACK_SHOWN_SECONDS));
        assert_eq!(
            failed.reason,
            "Tea Corner did not answer in time; nothing was charged. You can try again from the app."
        );
        assert_eq!(failed.data["reason"], "miniapp_server_timeout");
        assert!(!failed.data.to_string().contains("slow"), "a server's detail stays in the logs");
        assert_eq!(failed.actions[0].path.as_deref(), Some("/conversations/miniapp:a_1/messages"));
        let charged = Outcome::Charged { amount: usd("4.5"), deliver: "tea".into() };
        assert_eq!(relayed(Some(usd("4.5")), charged).failed_payment_element("T", 0), None);
        assert_eq!(relayed(Some(usd("4.5")), Outcome::Withdrawn).failed_payment_element("T", 0), None);
        assert_eq!(relayed(None, timeout).failed_payment_element("T", 0), None, "it paid nothing");
    }

    #[test]
    fn a_request_moved_its_charge_once_if_and_only_if_it_was_charged() {
        let request = |id: &str, outcome: Outcome| RelayedRequest {
            id: id.into(),
            app_id: "a_1".into(),
            user: "alice".into(),
            action: "buy".into(),
            approved: Some(usd("4.5")),
            outcome,
            created_at: 0,
        };
        let charged = request("r_1", Outcome::Charged { amount: usd("4.5"), deliver: "tea".into() });
        let refused = request("r_2", Outcome::AmountMismatch { approved: Some(usd("4.5")), asked: None });
        let books_of = |requests: &[&RelayedRequest]| Books {
            transfers: requests
                .iter()
                .map(|r| {
                    let mut paid = RelayedRequest::clone(r);
                    paid.outcome = Outcome::Charged { amount: usd("4.5"), deliver: "tea".into() };
                    TransferRecord::of(&paid.charge("m_1").unwrap().unwrap())
                })
                .collect(),
            ..Books::default()
        };
        assert_eq!(check_requests(&[charged.clone(), refused.clone()], &books_of(&[&charged])), []);
        assert_eq!(
            check_requests(std::slice::from_ref(&charged), &Books::default()),
            [Violation::record("mini-app request r_1", "is charged 4.50 USD but moved nothing")]
        );
        assert_eq!(
            check_requests(std::slice::from_ref(&refused), &books_of(&[&refused])),
            [Violation::record("mini-app request r_2", "is refused but moved 4.50 as miniapp.charge")]
        );
        assert_eq!(
            check_requests(&[], &books_of(&[&charged])),
            [Violation::record("charge r_1/charge", "moved money for no recorded request")]
        );
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
