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

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Problem;
use crate::attention::{Action, Class, Element};
use crate::crypto::sha256_hex;
use crate::flows::{FlowAnswer, FlowTable, Kind};
use crate::instruction::operation::{Operation, OperationState, OperationView};
use crate::instruction::signed::Instruction;
use crate::miniapp::{RelayedRequest, UserRequest};
use crate::money::Money;
use crate::problem::catalogue;
use crate::purchase::{Order, OrderState, OrderView, ValidPurchase};
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
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct SessionClient {
    pub platform: String,
    /// The payment app's version, when it is installed.
    pub app_version: Option<String>,
}

/// What a session pays for, as the server fixed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
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

/// A confirmed session's payment as its user sees it: what the capability that made it shows.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum PaymentView {
    /// A purchase's order.
    Order(OrderView),
    /// A mini-app charge's request.
    MiniappCharge(MiniappChargeView),
    /// A transfer instruction's operation on the transfer side.
    Operation(OperationView),
}

/// A mini-app charge relayed to its app's server, and how it ended.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct MiniappChargeView {
    pub id: String,
    pub app_id: String,
    /// `charged` or `refused` (`completed` for a request that pays nothing).
    pub outcome: &'static str,
    /// Why it was refused, as a problem code; null when it went through.
    pub reason: Option<&'static str>,
    /// What was charged, when it was.
    pub charged: Option<Money>,
    /// What the app's server will deliver, when it went through.
    pub deliver: Option<String>,
}

impl Payment {
    fn view(&self) -> PaymentView {
        match self {
            Payment::Order(order) => PaymentView::Order(order.view()),
            Payment::Request(request) => PaymentView::MiniappCharge(MiniappChargeView {
                id: request.id.clone(),
                app_id: request.app_id.clone(),
                outcome: request.summary(),
                reason: request.outcome.refusal().map(|code| code.code()),
                charged: request.outcome.charged(),
                deliver: request.deliver().map(str::to_owned),
            }),
            Payment::Operation(operation) => PaymentView::Operation(OperationView::from(operation)),
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
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", schemars(rename = "PaymentSessionState"))]
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
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", schemars(rename = "PaymentSessionEvent"))]
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

/// A payment session as its user sees it: what it pays, how the client loads the payment UI and
/// falls back, its state and, once confirmed, its payment.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct PaymentSessionView {
    pub id: String,
    pub pay: Pay,
    /// The process the client loads the payment UI by first.
    pub loading_process: Process,
    /// Why that process: the policy's rule and the facts it saw, the circuit breaker's demotion,
    /// or an admin's force.
    pub reason: String,
    /// The version of the payment-sessions policy that decided (0: the house policy).
    pub policy_version: u64,
    /// The processes to fall back to, in order, when the one loading fails.
    pub fallback_chain: Vec<Process>,
    /// How long the client waits for the payment app to come up before it falls back.
    pub launch_deadline_ms: u64,
    pub client: SessionClient,
    pub created_at: i64,
    /// When an open session can no longer be confirmed.
    pub expires_at: i64,
    pub state: State,
    /// Once confirmed: by which process, when, and its payment's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmed: Option<SessionConfirmation>,
    /// Once confirmed: its payment as it stands, null while it is on its way.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schemars(with = "Option<PaymentView>"))]
    pub payment: Option<Option<PaymentView>>,
    /// A transfer instruction consented to and not carried out yet, while it lives: what the
    /// client sends the transfer side to carry it out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub present: Option<InstructionPresentation>,
    /// When its user cancelled it: nothing moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<i64>,
    /// What each process it offers needs (its own, then its fallback chain's), by process.
    pub processes: BTreeMap<Process, ProcessView>,
}

/// A session's confirmation.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct SessionConfirmation {
    /// The process that confirmed it.
    pub by: Process,
    pub at: i64,
    /// The id its payment is made under: an order's, a mini-app request's, an instruction's.
    pub payment_id: String,
}

/// The request that carries out a consented transfer instruction.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct InstructionPresentation {
    /// `POST`.
    pub method: &'static str,
    /// `/transfer/operations`.
    pub path: &'static str,
    pub body: PresentationBody,
}

/// `POST /transfer/operations`'s body for a session's instruction.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct PresentationBody {
    pub instruction: Instruction,
    pub signature: String,
    pub confirmation: PresentationConfirmation,
}

/// The user's confirmation of the text the instruction shows.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct PresentationConfirmation {
    pub display_hash: String,
}

/// What a process needs: the launch of one that loads the payment app, the simulated interface of
/// one that shows it.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct ProcessView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launch: Option<AppLaunch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<SimulatedInterface>,
}

/// How the client launches the payment app for a session.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct AppLaunch {
    /// The payment app's link to the session.
    pub url: String,
    /// How long to wait for the app to come up before falling back.
    pub deadline_ms: u64,
}

/// The simulated payment interface: its screens in order (`review`, `pin`, `result`), the amount
/// and payee fixed by the server.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct SimulatedInterface {
    pub screens: Vec<SimulatedScreen>,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct SimulatedScreen {
    pub id: &'static str,
    pub fields: Vec<ScreenField>,
}

/// A field of a simulated screen: a value shown, or what the user enters.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum ScreenField {
    /// A value shown (an amount with its currency).
    Shown {
        name: &'static str,
        value: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        currency: Option<&'static str>,
    },
    /// What the user enters: `input` says what (`digits`), `length` how many.
    Input { name: &'static str, input: &'static str, length: u32 },
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

    /// The session as its user sees it at `now`: its state (with its payment once confirmed), and
    /// what each process of its chain needs, the launch link for those that load the app and the
    /// simulated interface for those that show one.
    pub fn view(&self, payment: Option<&Payment>, now: i64) -> PaymentSessionView {
        let (confirmed, cancelled_at) = match &self.stage {
            Stage::Confirmed { payment_id, by, at } => {
                (Some(SessionConfirmation { by: *by, at: *at, payment_id: payment_id.clone() }), None)
            }
            Stage::Cancelled { at } => (None, Some(*at)),
            Stage::Open => (None, None),
        };
        // Consented, not carried out, and still in time to be presented.
        let present = match (&self.pay, payment) {
            (Pay::TransferInstruction { instruction, signature }, None)
                if confirmed.is_some() && now <= instruction.expires_at =>
            {
                Some(InstructionPresentation {
                    method: "POST",
                    path: "/transfer/operations",
                    body: PresentationBody {
                        instruction: instruction.clone(),
                        signature: signature.clone(),
                        confirmation: PresentationConfirmation { display_hash: instruction.display_hash.clone() },
                    },
                })
            }
            _ => None,
        };
        PaymentSessionView {
            id: self.id.clone(),
            pay: self.pay.clone(),
            loading_process: self.loading_process,
            reason: self.reason.clone(),
            policy_version: self.policy_version,
            fallback_chain: self.fallback_chain.clone(),
            launch_deadline_ms: self.launch_deadline_ms,
            client: self.client.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            state: self.state(payment, now),
            payment: confirmed.as_ref().map(|_| payment.map(Payment::view)),
            confirmed,
            present,
            cancelled_at,
            processes: std::iter::once(self.loading_process)
                .chain(self.fallback_chain.iter().copied())
                .map(|process| (process, self.process_view(process)))
                .collect(),
        }
    }

    /// What the client does after `event` at `process`: the next process to load, `None` when there
    /// is none, and the error-flow table's answer to a failed launch.
    pub fn next_after(
        &self,
        event: Event,
        process: Process,
        table: &FlowTable,
    ) -> (Option<Process>, Option<FlowAnswer>) {
        match event {
            Event::LaunchFailed | Event::Timeout => {
                let at = table.step(&format!("payment/{}", process.as_str()));
                let code = catalogue::PAYMENT_APP_LAUNCH_FAILED.code();
                let (action, rule) = table.decide(at.as_ref(), code, &self.user);
                let answer = table.decided(at.as_ref(), action, rule);
                // The first process the table's switches reach that this session offers: one the
                // circuit breaker demoted is not offered, and the table may have changed since.
                let next = fallback_chain(table, process, &self.user).into_iter().find(|next| self.offers(*next));
                (next, Some(answer))
            }
            // Back from the app, the session says how it went; an open one may be tried again.
            Event::AppReturned => (matches!(self.stage, Stage::Open).then_some(process), None),
            Event::Cancelled => (None, None),
        }
    }

    fn process_view(&self, process: Process) -> ProcessView {
        let launch =
            || AppLaunch { url: format!("superpay://pay?session={}", self.id), deadline_ms: self.launch_deadline_ms };
        match process {
            Process::ForegroundApp => ProcessView { launch: Some(launch()), interface: None },
            Process::SimulatedSheet => ProcessView { launch: Some(launch()), interface: Some(self.interface()) },
            Process::SimulatedOnly => ProcessView { launch: None, interface: Some(self.interface()) },
        }
    }

    /// The simulated interface: its screens in order, the amount and payee fixed by the server.
    fn interface(&self) -> SimulatedInterface {
        let (payee, amount) = self.pay.payee_and_amount();
        let item = match &self.pay {
            Pay::Purchase { product_id, quantity, .. } => format!("{product_id} x {quantity}"),
            Pay::MiniappCharge { action, .. } => action.clone(),
            Pay::TransferInstruction { instruction, .. } => instruction.display.text.clone(),
        };
        let shown = |name, value, currency| ScreenField::Shown { name, value, currency };
        SimulatedInterface {
            screens: vec![
                SimulatedScreen {
                    id: "review",
                    fields: vec![
                        shown("payee", payee.to_owned(), None),
                        shown("item", item, None),
                        shown("amount", amount.amount().to_string(), Some(amount.currency().code())),
                    ],
                },
                SimulatedScreen {
                    id: "pin",
                    fields: vec![ScreenField::Input { name: "pin", input: "digits", length: 6 }],
                },
                SimulatedScreen { id: "result", fields: vec![] },
            ],
        }
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
        let view = json!(confirmed.view(Some(&Payment::Order(order.clone())), 150));
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
        assert_eq!(json!(open.interface())["screens"][0]["fields"][1]["value"], instruction.display.text.as_str());

        let by = Process::SimulatedOnly;
        let confirmed =
            PaymentSession { stage: Stage::Confirmed { payment_id: instruction.id.clone(), by, at: 1_100 }, ..open };
        // Consented, not carried out yet: the client is told what to present to the transfer side.
        let view = json!(confirmed.view(None, 1_100));
        assert_eq!(view["state"], "processing");
        assert_eq!(view["present"]["path"], "/transfer/operations");
        assert_eq!(view["present"]["body"]["confirmation"]["display_hash"], instruction.display_hash.as_str());
        assert_eq!(view["present"]["body"]["signature"], "c2ln");
        // Never presented before the instruction expired: nothing moved, nothing left to present
        // (once one judged just in time would have committed).
        let late = json!(confirmed.view(None, instruction.expires_at + CONSENT_GRACE_SECONDS));
        assert_eq!((late["state"].as_str(), &late["present"]), (Some("processing"), &Value::Null));
        let view = json!(confirmed.view(None, instruction.expires_at + CONSENT_GRACE_SECONDS + 1));
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
            assert_eq!(json!(confirmed.view(Some(&payment), 1_100))["present"], Value::Null);
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
        assert_eq!(
            (next, json!(answer)["to"].as_str()),
            (Some(Process::SimulatedOnly), Some("payment/simulated_sheet"))
        );
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
