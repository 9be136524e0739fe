//! Payment sessions (capability 1): the server decides how the purchase app loads the
//! payment UI (the payment app in the foreground, a simulated sheet while it loads behind, or
//! simulated interfaces alone), before any money moves. A session fixes what is paid (amount and
//! payee from the server, so a simulated sheet cannot disagree with what is charged), the process,
//! why (`policy`, then the circuit breaker, `breaker`), its fallback chain (the error-flow table's
//! `payment` flow) and a launch deadline. Confirming it, with the user's payment PIN (`pin`), moves
//! the money once whichever process confirms: its payment's id (a purchase's order, a mini-app's
//! request) derives from the session's, so its one transfer can be made once. A transfer
//! instruction's session is the other way round: its id derives from the instruction's, its
//! confirmation is the user's consent, and the transfer side moves the money under the
//! instruction's id, once, only with that consent (`instruction::consent`).
//!
//! Sessions pay for what other capabilities sell (purchases, mini-app charges, transfer
//! instructions), so this module sits above them (layer 5).

pub mod api;
pub mod breaker;
pub mod pin;
pub mod policy;
pub mod store;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Problem;
use crate::attention::{Action, Class, Element};
use crate::crypto::sha256_hex;
use crate::flows::{FlowTable, Kind};
use crate::instruction::operation::{Operation, OperationState};
use crate::instruction::signed::Instruction;
use crate::miniapp::{RelayedRequest, UserRequest};
use crate::money::Money;
use crate::problem::catalogue;
use crate::purchase::{Order, OrderState, ValidPurchase};
use policy::{Decision, Process};

/// How long an open session waits to be confirmed.
pub const SESSION_TTL_SECONDS: i64 = 900;

/// How long past its instruction's expiry a transfer instruction's consent may still be carried
/// out: the transfer side judges the expiry when a request starts, and commits within its
/// function's timeout (10 s, template.yaml), retrying a busy ledger.
pub const CONSENT_GRACE_SECONDS: i64 = 60;

/// A payment session as stored and shown. What is fixed at creation is stored as JSON; its stage
/// is stored beside it, as attributes the confirmation and the cancel are conditional on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentSession {
    pub id: String,
    pub user: String,
    #[serde(skip)]
    pub stage: Stage,
    pub pay: Pay,
    pub loading_process: Process,
    pub reason: String,
    pub policy_version: u64,
    pub fallback_chain: Vec<Process>,
    pub launch_deadline_ms: u64,
    /// Whose launches this session's outcomes count for (the circuit breaker's key).
    #[serde(default)]
    pub client: SessionClient,
    pub created_at: i64,
    pub expires_at: i64,
}

/// The client facts a session keeps: its platform and payment app version.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SessionClient {
    pub platform: String,
    pub app_version: Option<String>,
}

/// What a session pays for, as the server fixed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Pay {
    Purchase {
        merchant_id: String,
        payee: String,
        product_id: String,
        quantity: u32,
        amount: Money,
    },
    /// A charge the user approves in a mini-app's interface (`session_id`: the mini-app session
    /// of its verification), relayed to the app's server when confirmed.
    MiniappCharge {
        app_id: String,
        payee: String,
        session_id: String,
        action: String,
        params: Value,
        amount: Money,
    },
    /// A transfer instruction the platform signed for the user (capability 8), with its signature:
    /// the transfer side carries it out once the session is confirmed.
    TransferInstruction {
        instruction: Instruction,
        signature: String,
    },
}

impl Pay {
    pub fn purchase(purchase: &ValidPurchase, payee: &str) -> Pay {
        Pay::Purchase {
            merchant_id: purchase.merchant_id.clone(),
            payee: payee.to_owned(),
            product_id: purchase.product_id.clone(),
            quantity: purchase.quantity,
            amount: purchase.amount,
        }
    }

    /// `request` of app `app_id` (titled `payee`), which approves `amount`.
    pub fn miniapp_charge(app_id: &str, payee: &str, request: UserRequest, amount: Money) -> Pay {
        Pay::MiniappCharge {
            app_id: app_id.to_owned(),
            payee: payee.to_owned(),
            session_id: request.session_id,
            action: request.action,
            params: request.params,
            amount,
        }
    }

    fn payee_and_amount(&self) -> (&str, &Money) {
        match self {
            Pay::Purchase { payee, amount, .. } | Pay::MiniappCharge { payee, amount, .. } => (payee, amount),
            Pay::TransferInstruction { instruction, .. } => (&instruction.payee, &instruction.amount),
        }
    }
}

/// A confirmed session's payment, as the capability that made it recorded it.
#[derive(Debug, Clone, PartialEq)]
pub enum Payment {
    Order(Order),
    Request(RelayedRequest),
    /// The transfer side's operation of a transfer instruction.
    Operation(Operation),
}

impl Payment {
    fn view(&self) -> Value {
        match self {
            Payment::Order(order) => json!(order.view()),
            Payment::Request(request) => json!({
                "id": request.id,
                "app_id": request.app_id,
                "outcome": request.summary(),
                "reason": request.outcome.refusal().map(|code| code.code()),
                "charged": request.outcome.charged(),
                "deliver": request.deliver(),
            }),
            Payment::Operation(operation) => operation.view(),
        }
    }

    fn state(&self) -> State {
        match self {
            Payment::Order(order) => match order.state {
                OrderState::AwaitingMerchant => State::Processing,
                OrderState::Paid => State::Paid,
                OrderState::Declined => State::Declined,
                OrderState::Expired => State::Expired,
            },
            Payment::Request(request) if request.outcome.refusal().is_none() => State::Paid,
            Payment::Request(_) => State::Failed,
            Payment::Operation(operation) => match operation.state {
                OperationState::Completed | OperationState::Posted => State::Paid,
                OperationState::Held => State::Processing,
                OperationState::Voided => State::Declined,
                OperationState::Released => State::Expired,
            },
        }
    }
}

/// Where a session is, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Stage {
    #[default]
    Open,
    /// Confirmed by `by` at `at`: the money moved (or is moving) under `payment_id`.
    Confirmed { payment_id: String, by: Process, at: i64 },
    /// Cancelled by its user before it was confirmed: nothing moved.
    Cancelled { at: i64 },
}

/// A session's state as its user sees it: the stage, and once confirmed its payment's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting to be confirmed.
    Open,
    /// Confirmed; the merchant has not decided yet (the money is held), or a transfer
    /// instruction's consent is recorded and the transfer side has not carried it out yet.
    Processing,
    Paid,
    /// The merchant declined: the money is back in the wallet.
    Declined,
    /// A mini-app charge that did not go through (its server refused or failed, the wallet was
    /// short): nothing moved; `payment.reason` says why.
    Failed,
    /// Never confirmed in time (nothing moved), or confirmed and never decided by the merchant
    /// (the money is back in the wallet).
    Expired,
    Cancelled,
}

/// What a client reports about the loading of a session's payment UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The payment app did not start.
    LaunchFailed,
    /// The payment app did not come up by the launch deadline.
    Timeout,
    /// The user is back from the payment app.
    AppReturned,
    /// The user gave up the payment.
    Cancelled,
}

impl PaymentSession {
    /// A new open session paying `pay`, loading by `decision.process` and falling back along
    /// `fallback_chain`.
    pub fn new(
        id: String,
        user: &str,
        pay: Pay,
        decision: &Decision,
        fallback_chain: Vec<Process>,
        client: SessionClient,
        now: i64,
    ) -> PaymentSession {
        let pay_expires = match &pay {
            Pay::TransferInstruction { instruction, .. } => Some(instruction.expires_at),
            _ => None,
        };
        PaymentSession {
            id,
            user: user.to_owned(),
            stage: Stage::Open,
            pay,
            loading_process: decision.process,
            reason: decision.reason.clone(),
            policy_version: decision.policy_version,
            fallback_chain,
            launch_deadline_ms: decision.launch_deadline_ms,
            client,
            created_at: now,
            // No later than what it pays for: an expired instruction is carried out by no one.
            expires_at: match &pay_expires {
                Some(at) => (*at).min(now + SESSION_TTL_SECONDS),
                None => now + SESSION_TTL_SECONDS,
            },
        }
    }

    /// The circuit breaker's key for `process` on this session's client.
    pub fn breaker_key(&self, process: Process) -> String {
        breaker::key(process, &self.client.platform, self.client.app_version.as_deref())
    }

    /// The processes this session offers: its own, then its fallback chain.
    pub fn offers(&self, process: Process) -> bool {
        self.loading_process == process || self.fallback_chain.contains(&process)
    }

    /// The id of the one payment a confirmation makes (an order's, a mini-app request's): derived
    /// from the session's, so however many processes confirm, the money moves once. A transfer
    /// instruction's is the instruction's own (its session's id derives from it).
    pub fn payment_id(&self) -> String {
        let (prefix, what) = match &self.pay {
            Pay::Purchase { .. } => ("o", "order"),
            Pay::MiniappCharge { .. } => ("r", "miniapp-request"),
            Pay::TransferInstruction { instruction, .. } => return instruction.id.clone(),
        };
        format!("{prefix}_{}", &sha256_hex(format!("{}/{what}", self.id).as_bytes())[..20])
    }

    /// The one order a purchase's confirmation makes, its hold (`<order id>/hold`) the transfer.
    pub fn order(&self, order_ttl_seconds: i64, now: i64) -> Option<Order> {
        let Pay::Purchase { merchant_id, product_id, quantity, amount, .. } = &self.pay else { return None };
        Some(Order {
            id: self.payment_id(),
            user: self.user.clone(),
            merchant_id: merchant_id.clone(),
            product_id: product_id.clone(),
            quantity: *quantity,
            amount: *amount,
            state: OrderState::AwaitingMerchant,
            created_at: now,
            expires_at: now + order_ttl_seconds,
            refundable: rust_decimal::Decimal::ZERO,
            decision: None,
        })
    }

    /// The request a mini-app charge's confirmation relays to its app, the amount approved.
    pub fn miniapp_request(&self) -> Option<(&str, UserRequest)> {
        let Pay::MiniappCharge { app_id, session_id, action, params, amount, .. } = &self.pay else { return None };
        let request = UserRequest {
            session_id: session_id.clone(),
            action: action.clone(),
            params: params.clone(),
            approved: Some(*amount),
        };
        Some((app_id, request))
    }

    /// The transfer instruction this session pays, if it pays one.
    pub fn instruction(&self) -> Option<&Instruction> {
        match &self.pay {
            Pay::TransferInstruction { instruction, .. } => Some(instruction),
            _ => None,
        }
    }

    /// The session's state at `now`, `payment` being its payment once confirmed.
    pub fn state(&self, payment: Option<&Payment>, now: i64) -> State {
        match (&self.stage, payment) {
            (Stage::Open, _) if now >= self.expires_at => State::Expired,
            (Stage::Open, _) => State::Open,
            (Stage::Cancelled { .. }, _) => State::Cancelled,
            // An instruction's consent the transfer side never carried out before the instruction
            // expired, and no longer can: one judged just in time may commit a little later.
            (Stage::Confirmed { .. }, None)
                if self.instruction().is_some_and(|i| now > i.expires_at + CONSENT_GRACE_SECONDS) =>
            {
                State::Expired
            }
            // The payment commits with the confirmation: read before it, it is on its way (an
            // instruction's, when its client presents it to the transfer side).
            (Stage::Confirmed { .. }, None) => State::Processing,
            (Stage::Confirmed { .. }, Some(payment)) => payment.state(),
        }
    }

    /// Whether it may still be confirmed or cancelled at `now`: the refusal if not.
    pub fn check_open(&self, now: i64) -> Result<(), Problem> {
        match self.stage {
            Stage::Cancelled { .. } => Err(Problem::new(
                catalogue::PAYMENT_SESSION_CLOSED,
                format!("payment session {} was cancelled; nothing moved", self.id),
            )),
            Stage::Confirmed { .. } => Err(Problem::new(
                catalogue::PAYMENT_SESSION_CLOSED,
                format!("payment session {} is confirmed: its payment stands (GET it for the outcome)", self.id),
            )),
            Stage::Open if now >= self.expires_at => Err(Problem::new(
                catalogue::PAYMENT_SESSION_EXPIRED,
                format!("payment session {} expired unconfirmed at {}; start a new one", self.id, self.expires_at),
            )),
            Stage::Open => Ok(()),
        }
    }

    /// Refuses `process` unless the session offers it.
    pub fn check_offers(&self, process: Process) -> Result<(), Problem> {
        if self.offers(process) {
            return Ok(());
        }
        Err(Problem::new(
            catalogue::PAYMENT_PROCESS_NOT_OFFERED,
            format!(
                "payment session {} loads by {} then {:?}: not by {}",
                self.id,
                self.loading_process.as_str(),
                self.fallback_chain.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
                process.as_str()
            ),
        ))
    }

    /// While it is open, the session is a time-bound item on its user's home: the payment they
    /// started, to confirm before it expires (its deadline and its end). Its confirmation or
    /// cancel deletes it; past the expiry the home drops it. Not critical: nothing is held.
    pub fn home_element(&self) -> Element {
        let (payee, amount) = match &self.pay {
            Pay::Purchase { payee, amount, .. } | Pay::MiniappCharge { payee, amount, .. } => (payee, amount),
            Pay::TransferInstruction { instruction, .. } => (&instruction.payee, &instruction.amount),
        };
        Element {
            id: home_element_id(&self.id),
            kind: "payment_session.open".into(),
            class: Class::TimeBound,
            reason: format!("you started paying {amount} to {payee}: confirm it before it expires"),
            data: json!({"session_id": self.id, "payee": payee, "amount": amount}),
            actions: vec![Action::call("view", "GET", format!("/payment-sessions/{}", self.id))],
            deadline: Some(self.expires_at),
            expires_at: Some(self.expires_at),
            at: self.created_at,
            critical: false,
            explain: json!({"rule": "a payment session open, until it expires",
                            "inputs": {"session": self.id, "expires_at": self.expires_at}}),
        }
    }

    /// The session as its user sees it at `now`: its state (with its payment's order once
    /// confirmed), and what each process of its chain needs, the launch link for those that load
    /// the app and the simulated interface for those that show one.
    pub fn view(&self, payment: Option<&Payment>, now: i64) -> Value {
        let mut view = serde_json::to_value(self).unwrap_or_else(|_| json!({}));
        if let Some(object) = view.as_object_mut() {
            object.remove("user");
        }
        view["state"] = json!(self.state(payment, now));
        match &self.stage {
            Stage::Confirmed { payment_id, by, at } => {
                view["confirmed"] = json!({"by": by, "at": at, "payment_id": payment_id});
                view["payment"] = payment.map(Payment::view).unwrap_or(Value::Null);
                // Consented, not carried out, and still in time to be presented.
                if let (Pay::TransferInstruction { instruction, signature }, None) = (&self.pay, payment)
                    && now <= instruction.expires_at
                {
                    view["present"] = json!({
                        "method": "POST",
                        "path": "/transfer/operations",
                        "body": {"instruction": instruction, "signature": signature,
                                 "confirmation": {"display_hash": instruction.display_hash}},
                    });
                }
            }
            Stage::Cancelled { at } => view["cancelled_at"] = json!(at),
            Stage::Open => {}
        }
        let processes: serde_json::Map<String, Value> = std::iter::once(self.loading_process)
            .chain(self.fallback_chain.iter().copied())
            .map(|process| (process.as_str().to_owned(), self.process_view(process)))
            .collect();
        view["processes"] = Value::Object(processes);
        view
    }

    /// What the client does after `event` at `process`: the next process to load (with what it
    /// needs) and the error-flow table's answer, or `None` for the next when there is none.
    pub fn next_after(&self, event: Event, process: Process, table: &FlowTable) -> (Option<Process>, Value) {
        match event {
            Event::LaunchFailed | Event::Timeout => {
                let at = table.step(&format!("payment/{}", process.as_str()));
                let code = catalogue::PAYMENT_APP_LAUNCH_FAILED.code();
                let (action, rule) = table.decide(at.as_ref(), code, &self.user);
                let answer = table.answer(at.as_ref(), action, rule);
                // The first process the table's switches reach that this session offers: one the
                // circuit breaker demoted is not offered, and the table may have changed since.
                let next = fallback_chain(table, process, &self.user).into_iter().find(|next| self.offers(*next));
                (next, answer)
            }
            // Back from the app, the session says how it went; an open one may be tried again.
            Event::AppReturned => (matches!(self.stage, Stage::Open).then_some(process), Value::Null),
            Event::Cancelled => (None, Value::Null),
        }
    }

    fn process_view(&self, process: Process) -> Value {
        let launch =
            json!({"url": format!("superpay://pay?session={}", self.id), "deadline_ms": self.launch_deadline_ms});
        match process {
            Process::ForegroundApp => json!({"launch": launch}),
            Process::SimulatedSheet => json!({"launch": launch, "interface": self.interface()}),
            Process::SimulatedOnly => json!({"interface": self.interface()}),
        }
    }

    /// The simulated interface: its screens in order, the amount and payee fixed by the server.
    fn interface(&self) -> Value {
        let (payee, amount) = self.pay.payee_and_amount();
        let item = match &self.pay {
            Pay::Purchase { product_id, quantity, .. } => format!("{product_id} x {quantity}"),
            Pay::MiniappCharge { action, .. } => action.clone(),
            Pay::TransferInstruction { instruction, .. } => instruction.display.text.clone(),
        };
        json!({"screens": [
            {"id": "review", "fields": [
                {"name": "payee", "value": payee},
                {"name": "item", "value": item},
                {"name": "amount", "value": amount.amount().to_string(), "currency": amount.currency().code()}]},
            {"id": "pin", "fields": [{"name": "pin", "input": "digits", "length": 6}]},
            {"id": "result", "fields": []}]})
    }
}

/// The id of session `session_id`'s home element.
pub fn home_element_id(session_id: &str) -> String {
    format!("payment_session:{session_id}")
}

/// The processes a client falls back to, in order, when `process` does not launch: what the
/// error-flow table's `payment` flow switches `user` to on `payment_app_launch_failed`, as
/// `POST /flows/next` would, until it stops switching. A table without the flow's steps (published
/// before they existed) gives the house table's chain.
pub fn fallback_chain(table: &FlowTable, process: Process, user: &str) -> Vec<Process> {
    let at = format!("payment/{}", process.as_str());
    let Some(start) = table.step(&at) else {
        tracing::warn!(
            table_version = table.version,
            step = at,
            "the error-flow table has no payment flow; the house table's chain answers"
        );
        return fallback_chain(&FlowTable::house(), process, user);
    };
    // Enough failures to walk every step, with each retry the table may give on the way.
    let failures = vec![catalogue::PAYMENT_APP_LAUNCH_FAILED.code().to_owned(); 64];
    table
        .replay(Some(start), &failures, user)
        .iter()
        .filter(|hop| hop["action"] == json!(Kind::SwitchFlow))
        .filter_map(|hop| hop["to"].as_str()?.strip_prefix("payment/"))
        .filter_map(|step| serde_json::from_value(json!(step)).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::purchase::PurchaseRequest;

    fn session(now: i64) -> PaymentSession {
        let purchase = PurchaseRequest {
            merchant_id: "m_1".into(),
            product_id: "tea".into(),
            quantity: 2,
            amount: serde_json::from_value(json!({"amount": "9.00", "currency": "USD"})).unwrap(),
        }
        .validate()
        .unwrap();
        let decision = Decision {
            process: Process::ForegroundApp,
            launch_deadline_ms: 8000,
            rule: None,
            policy_version: 1,
            reason: "the default".into(),
        };
        let chain = fallback_chain(&FlowTable::house(), decision.process, "u");
        let client = SessionClient { platform: "android".into(), app_version: Some("9.1.0".into()) };
        PaymentSession::new("ps_1".into(), "u", Pay::purchase(&purchase, "Tea"), &decision, chain, client, now)
    }

    #[test]
    fn an_open_session_is_a_time_bound_reminder_until_it_expires() {
        let open = session(100).home_element();
        assert_eq!(open.id, home_element_id("ps_1"));
        assert_eq!((open.class, open.critical), (Class::TimeBound, false), "nothing is held: it may be dismissed");
        let expires = session(100).expires_at;
        assert_eq!((open.deadline, open.expires_at, open.at), (Some(expires), Some(expires), 100));
        assert!(open.live_at(expires - 1) && !open.live_at(expires), "the server drops it at the session's expiry");
        assert_eq!(open.data["amount"], json!({"amount": "9.00", "currency": "USD"}));
        assert_eq!(open.actions, vec![Action::call("view", "GET", "/payment-sessions/ps_1")]);
    }

    #[test]
    fn a_session_pays_under_one_order_whatever_confirms_it_and_reports_its_outcome() {
        let open = session(100);
        let order = open.order(600, 150).unwrap();
        assert_eq!(order.id, open.order(600, 999).unwrap().id, "the order's id is the session's, not the time's");
        assert_eq!((order.id.len(), order.id.starts_with("o_")), (22, true));
        let other = PaymentSession { id: "ps_2".into(), ..open.clone() };
        assert_ne!(order.id, other.payment_id());
        assert_eq!((order.amount.amount().to_string(), order.quantity, order.user.as_str()), ("9.00".into(), 2, "u"));

        assert_eq!(open.state(None, 100), State::Open);
        assert_eq!(open.state(None, 100 + SESSION_TTL_SECONDS), State::Expired);
        assert_eq!(open.check_open(100 + SESSION_TTL_SECONDS).unwrap_err().code, "payment_session_expired");
        let confirmed = PaymentSession {
            stage: Stage::Confirmed { payment_id: order.id.clone(), by: Process::SimulatedOnly, at: 150 },
            ..open.clone()
        };
        assert_eq!(confirmed.state(None, 150), State::Processing);
        for (state, shown) in [
            (OrderState::AwaitingMerchant, State::Processing),
            (OrderState::Paid, State::Paid),
            (OrderState::Declined, State::Declined),
            (OrderState::Expired, State::Expired),
        ] {
            let payment = Payment::Order(Order { state, ..order.clone() });
            // Past the session's own expiry too: a confirmed session is its payment's outcome.
            assert_eq!(confirmed.state(Some(&payment), 100 + 2 * SESSION_TTL_SECONDS), shown);
        }
        assert_eq!(confirmed.check_open(150).unwrap_err().code, "payment_session_closed");
        let cancelled = PaymentSession { stage: Stage::Cancelled { at: 120 }, ..open.clone() };
        assert_eq!(
            (cancelled.state(None, 130), cancelled.check_open(130).unwrap_err().code),
            (State::Cancelled, "payment_session_closed")
        );
        let view = confirmed.view(Some(&Payment::Order(order.clone())), 150);
        assert_eq!(
            (view["state"].as_str(), view["confirmed"]["by"].as_str()),
            (Some("processing"), Some("simulated_only"))
        );
        assert!(view.get("user").is_none());
    }

    #[test]
    fn a_transfer_instructions_session_pays_under_its_id_no_longer_than_it_lives() {
        let instruction = crate::instruction::signed::tests::instruction();
        let pay = Pay::TransferInstruction { instruction: instruction.clone(), signature: "c2ln".into() };
        let open = PaymentSession { pay, expires_at: instruction.expires_at, ..session(1_000) };
        let made = PaymentSession::new(
            "ps_1".into(),
            "alice",
            open.pay.clone(),
            &Decision {
                process: Process::SimulatedOnly,
                launch_deadline_ms: 0,
                rule: None,
                policy_version: 1,
                reason: "r".into(),
            },
            vec![],
            SessionClient::default(),
            1_000,
        );
        assert_eq!(made.expires_at, instruction.expires_at, "the instruction's 300 s, not the session's 900 s");
        assert_eq!(open.payment_id(), instruction.id);
        assert_eq!(open.interface()["screens"][0]["fields"][1]["value"], instruction.display.text.as_str());

        let by = Process::SimulatedOnly;
        let confirmed =
            PaymentSession { stage: Stage::Confirmed { payment_id: instruction.id.clone(), by, at: 1_100 }, ..open };
        // Consented, not carried out yet: the client is told what to present to the transfer side.
        let view = confirmed.view(None, 1_100);
        assert_eq!(view["state"], "processing");
        assert_eq!(view["present"]["path"], "/transfer/operations");
        assert_eq!(view["present"]["body"]["confirmation"]["display_hash"], instruction.display_hash.as_str());
        assert_eq!(view["present"]["body"]["signature"], "c2ln");
        // Never presented before the instruction expired: nothing moved, nothing left to present
        // (once one judged just in time would have committed).
        let late = confirmed.view(None, instruction.expires_at + CONSENT_GRACE_SECONDS);
        assert_eq!((late["state"].as_str(), &late["present"]), (Some("processing"), &Value::Null));
        let view = confirmed.view(None, instruction.expires_at + CONSENT_GRACE_SECONDS + 1);
        assert_eq!((view["state"].as_str(), &view["present"]), (Some("expired"), &Value::Null));
        let operation = Operation {
            id: instruction.id.clone(),
            payer: "alice".into(),
            merchant_id: "m_1".into(),
            listing_id: instruction.listing_id.clone(),
            listing_version: 2,
            title: "Sea view room".into(),
            quantity: 1,
            amount: instruction.amount,
            nonce: instruction.nonce.clone(),
            request: "r".into(),
            state: OperationState::Completed,
            two_phase: false,
            hold_expires_at: None,
            paid: instruction.amount.amount(),
            refunded: rust_decimal::Decimal::ZERO,
            created_at: 1_100,
        };
        for (state, shown) in [
            (OperationState::Completed, State::Paid),
            (OperationState::Held, State::Processing),
            (OperationState::Posted, State::Paid),
            (OperationState::Voided, State::Declined),
            (OperationState::Released, State::Expired),
        ] {
            let payment = Payment::Operation(Operation { state, ..operation.clone() });
            // Carried out: its outcome, whatever the instruction's expiry.
            assert_eq!(confirmed.state(Some(&payment), instruction.expires_at + 10), shown, "{state:?}");
            assert_eq!(confirmed.view(Some(&payment), 1_100)["present"], Value::Null);
        }
    }

    #[test]
    fn events_walk_the_house_chain_and_refuse_processes_not_offered() {
        let open = session(100);
        let house = FlowTable::house();
        let next = |event, at| open.next_after(event, at, &house).0;
        assert_eq!(next(Event::LaunchFailed, Process::ForegroundApp), Some(Process::SimulatedSheet));
        assert_eq!(next(Event::Timeout, Process::SimulatedSheet), Some(Process::SimulatedOnly));
        assert_eq!(next(Event::LaunchFailed, Process::SimulatedOnly), None);
        assert_eq!(next(Event::AppReturned, Process::ForegroundApp), Some(Process::ForegroundApp));
        assert_eq!(next(Event::Cancelled, Process::ForegroundApp), None);
        let only = PaymentSession { loading_process: Process::SimulatedOnly, fallback_chain: vec![], ..open.clone() };
        assert_eq!(only.check_offers(Process::ForegroundApp).unwrap_err().code, "payment_process_not_offered");
        assert!(open.check_offers(Process::SimulatedOnly).is_ok());
        // The sheet demoted by the breaker: a failed app launch falls back past it.
        let demoted = PaymentSession { fallback_chain: vec![Process::SimulatedOnly], ..open.clone() };
        let (next, answer) = demoted.next_after(Event::LaunchFailed, Process::ForegroundApp, &house);
        assert_eq!((next, answer["to"].as_str()), (Some(Process::SimulatedOnly), Some("payment/simulated_sheet")));
        assert_eq!(open.breaker_key(Process::ForegroundApp), "foreground_app/android/9.1.0");
    }

    #[test]
    fn the_house_chain_falls_back_to_the_simulated_processes_in_order() {
        let house = FlowTable::house();
        assert_eq!(
            fallback_chain(&house, Process::ForegroundApp, "u"),
            [Process::SimulatedSheet, Process::SimulatedOnly]
        );
        assert_eq!(fallback_chain(&house, Process::SimulatedSheet, "u"), [Process::SimulatedOnly]);
        assert!(fallback_chain(&house, Process::SimulatedOnly, "u").is_empty());
        // A table from before the payment flow: the house chain.
        let old =
            FlowTable::parse(&json!({"flows": {"a": ["x"]}, "default": {"action": "abort", "message_key": "m"}}), 3)
                .unwrap();
        assert_eq!(
            fallback_chain(&old, Process::ForegroundApp, "u"),
            [Process::SimulatedSheet, Process::SimulatedOnly]
        );
    }
}
