//! Transaction conflicts as DynamoDB raises them. DynamoDB cancels a TransactWriteItems with the
//! reason `TransactionConflict` at an item's position when another transaction on that item is in
//! progress; dynoxide instead runs transactions one after the other, so locally two captures
//! crediting one merchant's account never conflict and a hot item looks cheaper than it is.
//!
//! The registry is shared by every function's proxy (`crate::aws_proxy`: they all run in the runner
//! process). A transaction claims the items it names (table and key, whatever the action: Put,
//! Update, Delete or ConditionCheck) from the moment its proxy forwards it until its answer came
//! back, plus `WINDOW`: a DynamoDB transaction holds its items for its two phases across storage
//! nodes, several milliseconds, where dynoxide's commit takes about one. A transaction that names
//! an item another holds is answered at once, not forwarded, with the cancellation
//! `crate::faults` builds, `TransactionConflict` at that item's position. Only transactions are
//! registered: a PutItem or UpdateItem on an item a transaction holds, which DynamoDB also refuses
//! (`TransactionConflictException`), goes through, and so does DynamoDB's ceiling of about 1,000
//! writes a second on one item (not emulated: a conflict hits a hot item long before it here).
//!
//! On where `Options::conflicts` says so: `cargo stack up --conflicts`, `cargo stack test
//! --conflicts`, and always in `cargo stack bench`'s contention scenario (docs/decisions.md says
//! why not by default).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long an item stays claimed after its transaction's answer (see the module comment).
pub const WINDOW: Duration = Duration::from_millis(5);

/// Which item each position of a TransactWriteItems body names, as `table` and its key's
/// attributes; `None` for a position whose table's key is unknown (never claimed).
/// `key_attributes` is each table's key schema (partition and sort key names), by table name.
pub fn transaction_items(body: &[u8], key_attributes: &BTreeMap<String, Vec<String>>) -> Vec<Option<String>> {
    let Ok(json) = serde_json::from_slice::<Value>(body) else { return vec![] };
    let Some(items) = json["TransactItems"].as_array() else { return vec![] };
    items
        .iter()
        .map(|item| {
            let action = ["Put", "Update", "Delete", "ConditionCheck"].iter().find_map(|a| item.get(*a))?;
            let table = action["TableName"].as_str()?;
            // A Put names its key among the item's attributes, the others in `Key`.
            let attributes = action.get("Key").or_else(|| action.get("Item"))?;
            let names = key_attributes.get(table)?;
            let key: BTreeMap<&str, &Value> =
                names.iter().map(|name| Some((name.as_str(), attributes.get(name)?))).collect::<Option<_>>()?;
            Some(format!("{table}\u{0}{}", serde_json::to_string(&key).ok()?))
        })
        .collect()
}

/// An item's holder: a transaction in flight, or one that answered, holding it until then.
#[derive(Debug, Clone, Copy)]
enum Hold {
    InFlight(u64),
    Until(Instant),
}

#[derive(Default)]
struct State {
    next: u64,
    items: HashMap<String, Hold>,
    /// Conflicts answered, per function.
    injected: BTreeMap<String, u64>,
}

/// The registry of items held by transactions in flight, with the conflicts it answered.
#[derive(Clone)]
pub struct Conflicts {
    state: Arc<Mutex<State>>,
    window: Duration,
}

impl Default for Conflicts {
    fn default() -> Self {
        Conflicts::new(WINDOW)
    }
}

/// The items one transaction holds, until it is released (or dropped: a call whose answer never
/// came, such as a client gone mid-call, releases them then).
pub struct Claim {
    conflicts: Conflicts,
    id: u64,
    items: Vec<String>,
}

impl Claim {
    /// The transaction answered at `now`: its items stay held for the window.
    pub fn release(mut self, now: Instant) {
        self.release_at(now);
    }

    fn release_at(&mut self, now: Instant) {
        let Ok(mut state) = self.conflicts.state.lock() else { return };
        let until = now + self.conflicts.window;
        for item in self.items.drain(..) {
            if let Some(hold) = state.items.get_mut(&item)
                && matches!(hold, Hold::InFlight(id) if *id == self.id)
            {
                *hold = Hold::Until(until);
            }
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.release_at(Instant::now());
    }
}

impl Conflicts {
    pub fn new(window: Duration) -> Self {
        Conflicts { state: Arc::default(), window }
    }

    /// Claims `items` (one per position of the transaction) for a transaction of `function`
    /// forwarded at `now`, or the position of the first item another transaction holds: that
    /// transaction is then cancelled, and the conflict counted for `function`.
    pub fn claim(&self, function: &str, items: &[Option<String>], now: Instant) -> Result<Claim, usize> {
        let mut claimed = Claim { conflicts: self.clone(), id: 0, items: vec![] };
        // A poisoned registry claims nothing: the call goes through as it would without it.
        let Ok(mut state) = self.state.lock() else { return Ok(claimed) };
        let held = |hold: &Hold| match hold {
            Hold::InFlight(_) => true,
            Hold::Until(until) => *until > now,
        };
        let conflict = items.iter().position(|item| item.as_ref().and_then(|i| state.items.get(i)).is_some_and(held));
        if let Some(position) = conflict {
            *state.injected.entry(function.to_owned()).or_default() += 1;
            return Err(position);
        }
        // Forget what no longer holds anything, so the registry stays as small as what is in flight.
        state.items.retain(|_, hold| held(hold));
        state.next += 1;
        claimed.id = state.next;
        for item in items.iter().flatten() {
            state.items.insert(item.clone(), Hold::InFlight(claimed.id));
            claimed.items.push(item.clone());
        }
        // Unlocked before `claimed` can be dropped (its drop locks the registry).
        drop(state);
        Ok(claimed)
    }

    /// The conflicts answered so far, per function.
    pub fn injected(&self) -> BTreeMap<String, u64> {
        self.state.lock().map(|state| state.injected.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> BTreeMap<String, Vec<String>> {
        BTreeMap::from([
            ("ledger".to_owned(), vec!["pk".to_owned(), "sk".to_owned()]),
            ("orders".into(), vec!["id".into()]),
        ])
    }

    fn account(id: &str) -> Value {
        serde_json::json!({"pk": {"S": format!("account#{id}")}, "sk": {"S": "account"}})
    }

    /// A transaction updating `accounts` of the ledger, then putting an order.
    fn transaction(accounts: &[&str], order: &str) -> Vec<u8> {
        let mut items: Vec<Value> = accounts
            .iter()
            .map(|a| serde_json::json!({"Update": {"TableName": "ledger", "Key": account(a), "UpdateExpression": "SET x = :x"}}))
            .collect();
        items.push(
            serde_json::json!({"Put": {"TableName": "orders", "Item": {"id": {"S": order}, "state": {"S": "paid"}}}}),
        );
        serde_json::to_vec(&serde_json::json!({ "TransactItems": items })).unwrap_or_default()
    }

    #[test]
    fn each_position_names_its_table_and_key_whatever_the_action() {
        let body = serde_json::json!({"TransactItems": [
            {"ConditionCheck": {"TableName": "orders", "Key": {"id": {"S": "o1"}}}},
            {"Put": {"TableName": "ledger", "Item": {"sk": {"S": "account"}, "pk": {"S": "account#m"}, "balance": {"N": "1"}}}},
            {"Delete": {"TableName": "unknown", "Key": {"id": {"S": "x"}}}},
            {"Update": {"TableName": "ledger", "Key": account("m")}},
        ]});
        let items = transaction_items(&serde_json::to_vec(&body).unwrap_or_default(), &keys());
        assert_eq!(items.len(), 4);
        assert_eq!(items[0].as_deref(), Some("orders\u{0}{\"id\":{\"S\":\"o1\"}}"));
        assert!(items[2].is_none(), "a table without a known key is never claimed");
        assert_eq!(items[1], items[3], "a Put's key is read from its item, whatever the attributes' order");
        assert!(transaction_items(b"not json", &keys()).is_empty());
    }

    #[test]
    fn a_transaction_on_an_item_another_holds_is_cancelled_at_that_position() {
        let conflicts = Conflicts::new(Duration::from_millis(5));
        let now = Instant::now();
        let first = conflicts.claim("F", &transaction_items(&transaction(&["wallet", "m"], "o1"), &keys()), now);
        assert!(first.is_ok());
        // The second names the merchant's account second (after its own hold account).
        let second = transaction_items(&transaction(&["hold", "m"], "o2"), &keys());
        assert_eq!(conflicts.claim("G", &second, now).err(), Some(1));
        assert_eq!(conflicts.injected(), BTreeMap::from([("G".to_owned(), 1)]));
    }

    #[test]
    fn transactions_on_disjoint_items_both_go_through() {
        let conflicts = Conflicts::new(Duration::from_millis(5));
        let now = Instant::now();
        let first = conflicts.claim("F", &transaction_items(&transaction(&["w1", "m1"], "o1"), &keys()), now);
        let second = conflicts.claim("F", &transaction_items(&transaction(&["w2", "m2"], "o2"), &keys()), now);
        assert!(first.is_ok() && second.is_ok());
        assert!(conflicts.injected().is_empty());
    }

    #[test]
    fn an_item_is_free_again_once_its_transaction_answered_and_the_window_passed() {
        let window = Duration::from_millis(5);
        let conflicts = Conflicts::new(window);
        let start = Instant::now();
        let items = transaction_items(&transaction(&["w", "m"], "o1"), &keys());
        let Ok(first) = conflicts.claim("F", &items, start) else { panic!("the first claims its items") };
        let answered = start + Duration::from_millis(2);
        first.release(answered);
        let again = transaction_items(&transaction(&["h", "m"], "o2"), &keys());
        assert_eq!(conflicts.claim("F", &again, answered + window / 2).err(), Some(1), "within the window");
        assert!(conflicts.claim("F", &again, answered + window).is_ok(), "after it");
    }

    #[test]
    fn a_claim_dropped_without_an_answer_frees_its_items() {
        let conflicts = Conflicts::new(Duration::ZERO);
        let items = transaction_items(&transaction(&["w", "m"], "o1"), &keys());
        drop(conflicts.claim("F", &items, Instant::now()));
        assert!(conflicts.claim("F", &items, Instant::now() + Duration::from_millis(1)).is_ok());
    }
}
