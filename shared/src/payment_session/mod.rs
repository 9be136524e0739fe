//! Payment sessions (capability 1, in progress): the server decides how the purchase app loads the
//! payment UI (the payment app in the foreground, a simulated sheet while it loads behind, or
//! simulated interfaces alone), before any money moves. A session fixes what is paid (amount and
//! payee from the server, so a simulated sheet cannot disagree with what is charged), the process,
//! why (`policy`), its fallback chain (the error-flow table's `payment` flow) and a launch
//! deadline. Confirming it, which moves the money once whichever process confirms, comes next.
//!
//! Sessions pay for what other capabilities sell (a purchase now; mini-app charges and transfer
//! instructions to come), so this module sits above them (layer 5).

pub mod api;
pub mod policy;
pub mod store;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::flows::{FlowTable, Kind};
use crate::problem::catalogue;
use crate::purchase::ValidPurchase;
use policy::{Decision, Process};

/// How long an open session waits to be confirmed.
pub const SESSION_TTL_SECONDS: i64 = 900;

/// A payment session as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentSession {
    pub id: String,
    pub user: String,
    pub state: String,
    pub pay: Pay,
    pub loading_process: Process,
    pub reason: String,
    pub policy_version: u64,
    pub fallback_chain: Vec<Process>,
    pub launch_deadline_ms: u64,
    pub created_at: i64,
    pub expires_at: i64,
}

/// What a session pays for, as the server fixed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Pay {
    Purchase { merchant_id: String, payee: String, product_id: String, quantity: u32, amount: String, currency: String },
}

impl PaymentSession {
    /// A new open session for `purchase` (its merchant named `payee`), decided by `decision`.
    pub fn for_purchase(
        id: String,
        user: &str,
        purchase: &ValidPurchase,
        payee: &str,
        decision: &Decision,
        table: &FlowTable,
        now: i64,
    ) -> PaymentSession {
        let fallback_chain = fallback_chain(table, decision.process, user);
        PaymentSession {
            id,
            user: user.to_owned(),
            state: "open".into(),
            pay: Pay::Purchase {
                merchant_id: purchase.merchant_id.clone(),
                payee: payee.to_owned(),
                product_id: purchase.product_id.clone(),
                quantity: purchase.quantity,
                amount: purchase.amount.amount().to_string(),
                currency: purchase.amount.currency().code().to_owned(),
            },
            loading_process: decision.process,
            reason: decision.reason.clone(),
            policy_version: decision.policy_version,
            fallback_chain,
            launch_deadline_ms: decision.launch_deadline_ms,
            created_at: now,
            expires_at: now + SESSION_TTL_SECONDS,
        }
    }

    /// The session as its user sees it: with what each process of its chain needs, the launch
    /// link for those that load the app and the simulated interface for those that show one.
    pub fn view(&self) -> Value {
        let mut view = serde_json::to_value(self).unwrap_or_else(|_| json!({}));
        if let Some(object) = view.as_object_mut() {
            object.remove("user");
        }
        let processes: serde_json::Map<String, Value> = std::iter::once(self.loading_process)
            .chain(self.fallback_chain.iter().copied())
            .map(|process| (process.as_str().to_owned(), self.process_view(process)))
            .collect();
        view["processes"] = Value::Object(processes);
        view
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
        let Pay::Purchase { payee, product_id, quantity, amount, currency, .. } = &self.pay;
        json!({"screens": [
            {"id": "review", "fields": [
                {"name": "payee", "value": payee},
                {"name": "item", "value": format!("{product_id} x {quantity}")},
                {"name": "amount", "value": amount, "currency": currency}]},
            {"id": "pin", "fields": [{"name": "pin", "input": "digits", "length": 6}]},
            {"id": "result", "fields": []}]})
    }
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
