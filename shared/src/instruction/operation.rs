//! The operation: a user's client sends a signed instruction and the user's confirmation of what it
//! showed to the transfer side, which moves the money only if everything agrees (`judge`, pure):
//! the platform's signature under the key it expects, a lifetime of at most `MAX_LIFETIME_SECONDS`
//! that has not ended, the caller as the payer, the shown text as the one confirmed, and amount,
//! currency and payee equal to the transfer side's OWN copy of the listing at the instruction's
//! version. What a compromised platform could change is exactly what is compared.
//!
//! A carried-out operation is kept (`TransferOperationsTable`, partition `id`, the instruction's
//! id) and written once, in the transaction that moves its money; the instruction's nonce is spent
//! in the same transaction, so neither the same instruction nor another one carrying its nonce
//! pays twice.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::Put;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;

use super::listing::Listing;
use super::platform_api::MAX_QUANTITY;
use super::signed::{Instruction, MAX_LIFETIME_SECONDS, SignatureFault, verify};
use crate::Problem;
use crate::dynamo::{Item, StoreError, Write, get_decimal, get_n, get_s, n, s, scan_all};
use crate::ids;
use crate::ledger::{AccountId, Books, LedgerError, Transfer};
use crate::money::{Currency, Money};
use crate::problem::catalogue;
use crate::reconcile::Violation;
use crate::text::head;

/// Rule: an instruction is carried out once.
pub const OPERATION_NEW: &str = "operation.new";

/// How far ahead of our clock an instruction's `issued_at` may be (the platform's clock may run
/// ahead of ours); no more, or an instruction could live longer than `MAX_LIFETIME_SECONDS`.
pub const CLOCK_SKEW_SECONDS: i64 = 30;

/// What the user confirmed: the hash of the text their client showed them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    pub display_hash: String,
}

/// The body of `POST /transfer/operations`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Presented {
    pub instruction: Instruction,
    /// The platform's signature (base64 of ASN.1 DER), as the platform answered it.
    pub signature: String,
    pub confirmation: Confirmation,
}

/// A term of the instruction that is not the transfer side's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub field: &'static str,
    pub instructed: String,
    pub listed: String,
}

/// Why an operation is refused. Those that only a faulty or compromised platform, or a client
/// sending what is not its user's, can cause are security events (`is_security_event`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Signature(SignatureFault),
    /// Signed, but its id, listing id or nonce breaks the id rule (only a faulty platform signs such).
    Malformed,
    /// Issued ahead of our clock, or to live longer than an instruction may.
    Lifetime,
    Expired,
    /// The instruction names another payer than the caller.
    NotPayer,
    /// The user confirmed another text than the instruction's.
    NotConfirmed,
    UnknownListing,
    /// The listing is at another version on this side (its terms changed since, or not yet here).
    Version {
        current: u64,
    },
    /// At the same version, the instruction's terms are not this side's copy's.
    Terms(Vec<Difference>),
}

impl Refusal {
    pub fn is_security_event(&self) -> bool {
        !matches!(self, Refusal::Expired | Refusal::UnknownListing | Refusal::Version { .. })
    }

    /// The audit log's and the user's record of what differed.
    pub fn detail(&self) -> serde_json::Value {
        match self {
            Refusal::Signature(fault) => json!({"reason": "signature", "fault": fault.to_string()}),
            Refusal::Malformed => json!({"reason": "malformed"}),
            Refusal::Lifetime => json!({"reason": "lifetime"}),
            Refusal::Expired => json!({"reason": "expired"}),
            Refusal::NotPayer => json!({"reason": "payer"}),
            Refusal::NotConfirmed => json!({"reason": "confirmation"}),
            Refusal::UnknownListing => json!({"reason": "listing"}),
            Refusal::Version { current } => json!({"reason": "listing_version", "current_version": current}),
            Refusal::Terms(differences) => json!({
                "reason": "terms",
                "differences": differences
                    .iter()
                    .map(|d| json!({"field": d.field, "instructed": head(&d.instructed, 80), "listed": d.listed}))
                    .collect::<Vec<_>>(),
            }),
        }
    }

    pub fn problem(&self, instruction: &Instruction) -> Problem {
        match self {
            Refusal::Signature(fault) => Problem::new(
                catalogue::INSTRUCTION_SIGNATURE_INVALID,
                format!("{fault}; nothing moved: ask the platform for a new instruction"),
            ),
            Refusal::Malformed => Problem::new(
                catalogue::INSTRUCTION_MALFORMED,
                "the instruction's id, listing_id or nonce is not an id; nothing moved",
            ),
            Refusal::Lifetime => Problem::new(
                catalogue::INSTRUCTION_LIFETIME_INVALID,
                format!(
                    "an instruction is issued no later than now and lives at most {MAX_LIFETIME_SECONDS} s; this one \
                     was issued at {} to expire at {}",
                    instruction.issued_at, instruction.expires_at
                ),
            ),
            Refusal::Expired => Problem::new(
                catalogue::INSTRUCTION_EXPIRED,
                format!(
                    "the instruction expired at {}; nothing moved: ask the platform for a new one",
                    instruction.expires_at
                ),
            ),
            Refusal::NotPayer => Problem::new(
                catalogue::INSTRUCTION_NOT_FOR_CALLER,
                "the instruction names another payer than the signed-in user; nothing moved",
            ),
            Refusal::NotConfirmed => Problem::new(
                catalogue::CONFIRMATION_MISMATCH,
                "the confirmation is not of the instruction's display text (display_hash differs); nothing moved",
            ),
            Refusal::UnknownListing => super::listing::unknown_listing(&instruction.listing_id),
            Refusal::Version { current } => Problem::new(
                catalogue::INSTRUCTION_LISTING_VERSION,
                format!(
                    "the instruction is for version {} of listing {:?}, which is at version {current} here; nothing \
                     moved: ask the platform for a new instruction",
                    instruction.listing_version, instruction.listing_id
                ),
            )
            .with("current_version", *current),
            Refusal::Terms(differences) => Problem::new(
                catalogue::INSTRUCTION_TERMS_MISMATCH,
                format!(
                    "the instruction's {} differ from listing {:?} at version {}; nothing moved",
                    differences.iter().map(|d| d.field).collect::<Vec<_>>().join(", "),
                    instruction.listing_id,
                    instruction.listing_version
                ),
            )
            .with("fields", differences.iter().map(|d| d.field).collect::<Vec<_>>()),
        }
    }
}

/// Whether the transfer side carries out `presented` for `caller` at `now`, with the platform's
/// public key `public_key` (named `kid`) and this side's copy of the listing (`None`: unknown here).
/// The signature first: nothing an unsigned instruction says is read before it holds.
pub fn judge(
    presented: &Presented,
    kid: &str,
    public_key: &[u8],
    caller: &str,
    listed: Option<&Listing>,
    now: i64,
) -> Result<(), Refusal> {
    let instruction = &presented.instruction;
    verify(instruction, &presented.signature, kid, public_key).map_err(Refusal::Signature)?;
    if ![&instruction.id, &instruction.listing_id, &instruction.nonce].into_iter().all(|id| ids::is_valid(id)) {
        return Err(Refusal::Malformed);
    }
    if instruction.issued_at > now + CLOCK_SKEW_SECONDS
        || instruction.expires_at.saturating_sub(instruction.issued_at) > MAX_LIFETIME_SECONDS
    {
        return Err(Refusal::Lifetime);
    }
    if now > instruction.expires_at {
        return Err(Refusal::Expired);
    }
    if instruction.payer != caller {
        return Err(Refusal::NotPayer);
    }
    if presented.confirmation.display_hash != instruction.display_hash {
        return Err(Refusal::NotConfirmed);
    }
    let listed = listed.ok_or(Refusal::UnknownListing)?;
    if listed.version != instruction.listing_version {
        return Err(Refusal::Version { current: listed.version });
    }
    let differences = differences(instruction, listed);
    if !differences.is_empty() {
        return Err(Refusal::Terms(differences));
    }
    Ok(())
}

/// Each term of `instruction` that `listed` (at the same version) does not have.
fn differences(instruction: &Instruction, listed: &Listing) -> Vec<Difference> {
    let price = listed.terms.price;
    let mut found = vec![];
    let mut differ = |field, instructed: String, listed: String| {
        if instructed != listed {
            found.push(Difference { field, instructed, listed });
        }
    };
    let quantity_ok = (1..=MAX_QUANTITY).contains(&instruction.quantity);
    differ(
        "quantity",
        instruction.quantity.to_string(),
        if quantity_ok { instruction.quantity.to_string() } else { format!("1 to {MAX_QUANTITY}") },
    );
    let due = price.amount() * Decimal::from(instruction.quantity);
    differ("amount", instruction.amount.amount().to_string(), price.currency().rescale(due).to_string());
    differ("currency", instruction.amount.currency().code().to_owned(), price.currency().code().to_owned());
    differ("payee", instruction.payee.clone(), listed.payee().as_str().to_owned());
    found
}

/// How a carried-out operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationState {
    /// The money moved to the provider.
    Completed,
}

impl OperationState {
    fn as_str(self) -> &'static str {
        match self {
            OperationState::Completed => "completed",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        (text == "completed").then_some(OperationState::Completed)
    }
}

/// An instruction the transfer side carried out, with the terms of its own copy it was judged on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The instruction's id.
    pub id: String,
    pub payer: String,
    pub merchant_id: String,
    pub listing_id: String,
    pub listing_version: u64,
    /// This side's title of the listing (what the user's message names).
    pub title: String,
    pub quantity: u32,
    pub amount: Money,
    /// The instruction's nonce, spent with it.
    pub nonce: String,
    /// The request that carried it out (derived from its Idempotency-Key and caller): its retry is
    /// told apart from another request carrying the same instruction.
    pub request: String,
    pub state: OperationState,
    pub created_at: i64,
}

impl Operation {
    /// The operation `instruction` becomes, judged on `listed`, for `request`.
    pub fn of(instruction: &Instruction, listed: &Listing, request: String, now: i64) -> Self {
        Operation {
            id: instruction.id.clone(),
            payer: instruction.payer.clone(),
            merchant_id: listed.merchant_id.clone(),
            listing_id: listed.id.clone(),
            listing_version: listed.version,
            title: listed.terms.title.clone(),
            quantity: instruction.quantity,
            amount: instruction.amount,
            nonce: instruction.nonce.clone(),
            request,
            state: OperationState::Completed,
            created_at: now,
        }
    }

    pub fn payee(&self) -> AccountId {
        AccountId::merchant(&self.merchant_id)
    }

    /// The money it moves, payer's wallet -> provider's account, under an id derived from the
    /// instruction's: one instruction never pays twice.
    pub fn transfer(&self) -> Result<Transfer, LedgerError> {
        Transfer::between(
            format!("{}/transfer", self.id),
            self.amount,
            AccountId::wallet(&self.payer),
            self.payee(),
            "instruction.transfer",
            format!("instruction/{}", self.id),
        )
    }

    /// What the payer reads and the provider's webhook carries (never the nonce or the request).
    pub fn view(&self) -> serde_json::Value {
        json!({
            "id": self.id,
            "state": self.state.as_str(),
            "payer": self.payer,
            "merchant_id": self.merchant_id,
            "payee": self.payee().as_str(),
            "listing_id": self.listing_id,
            "listing_version": self.listing_version,
            "title": self.title,
            "quantity": self.quantity,
            "amount": self.amount,
            "created_at": self.created_at,
        })
    }

    /// The message in the payer's conversation with the provider, named `provider_name`.
    pub fn message_text(&self, provider_name: &str) -> String {
        format!("Paid {} to {provider_name} for {} x {}.", self.amount, self.quantity, self.title)
    }
}

/// The transfer side's carried-out operations.
#[derive(Clone, Debug)]
pub struct OperationStore {
    client: Client,
    table: String,
}

impl OperationStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        OperationStore { client, table: table.into() }
    }

    pub async fn get(&self, id: &str) -> Result<Option<Operation>, StoreError> {
        let output =
            self.client.get_item().table_name(&self.table).key("id", s(id)).consistent_read(true).send().await?;
        output.item().map(operation_from_item).transpose()
    }

    /// Every operation (a scan: for the invariant checker, not for a request's path).
    pub async fn all(&self) -> Result<Vec<Operation>, StoreError> {
        scan_all(&self.client, &self.table).await?.iter().map(operation_from_item).collect()
    }

    /// The operation's record, written once.
    pub fn create_item(&self, operation: &Operation) -> Result<Write, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .item("id", s(&operation.id))
            .item("payer", s(&operation.payer))
            .item("merchant_id", s(&operation.merchant_id))
            .item("listing_id", s(&operation.listing_id))
            .item("listing_version", n(operation.listing_version))
            .item("title", s(&operation.title))
            .item("quantity", n(operation.quantity))
            .item("amount", n(operation.amount.amount()))
            .item("currency", s(operation.amount.currency().code()))
            .item("nonce", s(&operation.nonce))
            .item("request", s(&operation.request))
            .item("state", s(operation.state.as_str()))
            .item("created_at", n(operation.created_at))
            .condition_expression("attribute_not_exists(id)")
            .build()?;
        Ok(Write::put(OPERATION_NEW, put))
    }
}

/// What must hold of operations and the money they moved (`crate::reconcile`): each completed
/// operation moved exactly its amount once, from its payer's wallet to its provider's account; and
/// no instruction's money moved without its operation recorded (they are written in one
/// transaction). `operations` are all those whose transfers `books` holds.
pub fn check_operations(operations: &[Operation], books: &Books) -> Vec<Violation> {
    let transfers = books.transfers_by_id();
    let mut violations = Vec::new();
    for operation in operations {
        let expected = match operation.transfer() {
            Ok(transfer) => crate::ledger::TransferRecord::of(&transfer),
            Err(e) => {
                violations.push(Violation::record(format!("operation {}", operation.id), e.to_string()));
                continue;
            }
        };
        match transfers.get(expected.id.as_str()) {
            Some(moved) if **moved == expected => {}
            Some(moved) => violations.push(Violation::record(
                format!("operation {}", operation.id),
                format!("is {} but moved {moved}", operation.amount),
            )),
            None => violations
                .push(Violation::record(format!("operation {}", operation.id), "is completed but moved nothing")),
        }
    }
    let recorded: std::collections::HashSet<&str> = operations.iter().map(|o| o.id.as_str()).collect();
    for moved in books.transfers.iter().filter(|t| t.kind == "instruction.transfer") {
        let operation = moved.cause.strip_prefix("instruction/").unwrap_or(&moved.cause);
        if !recorded.contains(operation) {
            violations
                .push(Violation::record(format!("transfer {}", moved.id), "moved money for no recorded operation"));
        }
    }
    violations
}

fn operation_from_item(item: &Item) -> Result<Operation, StoreError> {
    let corrupt = |what: &str| StoreError::new(format!("a stored operation is corrupt: {what}"));
    let currency: Currency = get_s(item, "currency")?.parse().map_err(|_| corrupt("currency"))?;
    Ok(Operation {
        id: get_s(item, "id")?.to_owned(),
        payer: get_s(item, "payer")?.to_owned(),
        merchant_id: get_s(item, "merchant_id")?.to_owned(),
        listing_id: get_s(item, "listing_id")?.to_owned(),
        listing_version: get_n(item, "listing_version")?,
        title: get_s(item, "title")?.to_owned(),
        quantity: get_n(item, "quantity")?,
        amount: Money::new(get_decimal(item, "amount")?, currency).map_err(|_| corrupt("amount"))?,
        nonce: get_s(item, "nonce")?.to_owned(),
        request: get_s(item, "request")?.to_owned(),
        state: OperationState::parse(get_s(item, "state")?).ok_or_else(|| corrupt("state"))?,
        created_at: get_n(item, "created_at")?,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::listing::Terms;
    use super::super::signed::tests::{LocalKey, instruction};
    use super::super::signed::{Display, SignatureFault};
    use super::*;

    const NOW: i64 = 1_100;

    /// This side's copy of the listing `instruction()` is for: 85.00 USD, version 2, merchant m_1.
    fn listed() -> Listing {
        Listing {
            id: "sea-view".into(),
            merchant_id: "m_1".into(),
            terms: Terms {
                title: "Sea view room".into(),
                price: Money::parse("85.00", "USD").unwrap(),
                two_phase: false,
            },
            version: 2,
            updated_at: 0,
        }
    }

    /// `instruction` signed by `key`, confirmed by its user as shown.
    fn presented(key: &LocalKey, instruction: Instruction) -> Presented {
        Presented {
            signature: key.sign(&instruction),
            confirmation: Confirmation { display_hash: instruction.display_hash.clone() },
            instruction,
        }
    }

    fn judged(key: &LocalKey, presented: &Presented, caller: &str, listed: Option<&Listing>) -> Result<(), Refusal> {
        judge(presented, "k-1", &key.spki(), caller, listed, NOW)
    }

    #[test]
    fn an_instruction_signed_by_the_key_for_the_caller_and_this_sides_terms_is_carried_out() {
        let key = LocalKey::new();
        assert_eq!(judged(&key, &presented(&key, instruction()), "alice", Some(&listed())), Ok(()));
        // At the last second of its life, and issued a little ahead of our clock.
        let last =
            Instruction { issued_at: NOW + CLOCK_SKEW_SECONDS, expires_at: NOW + CLOCK_SKEW_SECONDS, ..instruction() };
        assert_eq!(judged(&key, &presented(&key, last), "alice", Some(&listed())), Ok(()));
    }

    #[test]
    fn each_refusal_in_the_order_nothing_unsigned_is_read_before_the_signature() {
        let key = LocalKey::new();
        let listing = listed();
        let refused = |presented: Presented, caller: &str, listed: Option<&Listing>| {
            judged(&key, &presented, caller, listed).unwrap_err()
        };
        // Changed after signing: the signature no longer holds, whatever else is wrong.
        let mut tampered = presented(&key, instruction());
        tampered.instruction.amount = Money::parse("0.85", "USD").unwrap();
        tampered.instruction.payer = "mallory".into();
        assert_eq!(refused(tampered, "mallory", None), Refusal::Signature(SignatureFault::Mismatch));
        let other_key = LocalKey::new();
        assert_eq!(
            refused(presented(&other_key, instruction()), "alice", Some(&listing)),
            Refusal::Signature(SignatureFault::Mismatch)
        );
        let other_kid = Instruction { kid: "k-2".into(), ..instruction() };
        assert_eq!(
            refused(presented(&key, other_kid), "alice", Some(&listing)),
            Refusal::Signature(SignatureFault::OtherKey)
        );
        // Signed (by a faulty or compromised platform), and still refused.
        let bad_id = Instruction { id: "ti 1/../x".into(), ..instruction() };
        assert_eq!(refused(presented(&key, bad_id), "alice", Some(&listing)), Refusal::Malformed);
        let ahead = Instruction { issued_at: NOW + CLOCK_SKEW_SECONDS + 1, expires_at: NOW + 100, ..instruction() };
        assert_eq!(refused(presented(&key, ahead), "alice", Some(&listing)), Refusal::Lifetime);
        let long = Instruction { issued_at: NOW, expires_at: NOW + MAX_LIFETIME_SECONDS + 1, ..instruction() };
        assert_eq!(refused(presented(&key, long), "alice", Some(&listing)), Refusal::Lifetime);
        let expired = Instruction { issued_at: NOW - 301, expires_at: NOW - 1, ..instruction() };
        assert_eq!(refused(presented(&key, expired), "alice", Some(&listing)), Refusal::Expired);
        assert_eq!(refused(presented(&key, instruction()), "mallory", Some(&listing)), Refusal::NotPayer);
        let mut unconfirmed = presented(&key, instruction());
        unconfirmed.confirmation.display_hash = Display { text: "Pay 1.00 USD.".into() }.hash();
        assert_eq!(refused(unconfirmed, "alice", Some(&listing)), Refusal::NotConfirmed);
        assert_eq!(refused(presented(&key, instruction()), "alice", None), Refusal::UnknownListing);
        for version in [1, 3] {
            let other = Listing { version, ..listed() };
            assert_eq!(
                refused(presented(&key, instruction()), "alice", Some(&other)),
                Refusal::Version { current: version }
            );
        }
        // The platform's copy said otherwise at the same version: every differing term is named.
        let cheaper =
            Listing { terms: Terms { price: Money::parse("80.00", "EUR").unwrap(), ..listed().terms }, ..listed() };
        let Refusal::Terms(differences) = refused(presented(&key, instruction()), "alice", Some(&cheaper)) else {
            panic!()
        };
        assert_eq!(
            differences,
            [
                Difference { field: "amount", instructed: "85.00".into(), listed: "80.00".into() },
                Difference { field: "currency", instructed: "USD".into(), listed: "EUR".into() },
            ]
        );
        let elsewhere = Listing { merchant_id: "m_2".into(), ..listed() };
        let Refusal::Terms(differences) = refused(presented(&key, instruction()), "alice", Some(&elsewhere)) else {
            panic!()
        };
        assert_eq!(
            differences,
            [Difference { field: "payee", instructed: "merchant:m_1".into(), listed: "merchant:m_2".into() }]
        );
    }

    #[test]
    fn only_what_a_faulty_platform_or_client_causes_is_a_security_event() {
        let events = [
            Refusal::Signature(SignatureFault::Mismatch),
            Refusal::Malformed,
            Refusal::Lifetime,
            Refusal::NotPayer,
            Refusal::NotConfirmed,
            Refusal::Terms(vec![]),
        ];
        assert!(events.iter().all(Refusal::is_security_event));
        let ordinary = [Refusal::Expired, Refusal::UnknownListing, Refusal::Version { current: 3 }];
        assert!(!ordinary.iter().any(Refusal::is_security_event));
        let long = Difference { field: "payee", instructed: "x".repeat(10_000), listed: "merchant:m_1".into() };
        let detail = Refusal::Terms(vec![long]).detail().to_string();
        assert!(detail.len() < 300, "what differed is quoted in part: {}", detail.len());
    }

    #[test]
    fn an_operation_moved_exactly_its_amount_once_and_no_money_moved_without_one() {
        let key = LocalKey::new();
        let judged = presented(&key, instruction());
        let operation = Operation::of(&judged.instruction, &listed(), "r_1".into(), NOW);
        let moved = crate::ledger::TransferRecord::of(&operation.transfer().unwrap());
        let books = |transfers: Vec<crate::ledger::TransferRecord>| Books { transfers, ..Books::default() };
        assert_eq!(check_operations(std::slice::from_ref(&operation), &books(vec![moved.clone()])), vec![]);
        let found = |operations: &[Operation], transfers| {
            check_operations(operations, &books(transfers)).iter().map(|v| v.to_string()).collect::<Vec<_>>().join("; ")
        };
        assert!(found(std::slice::from_ref(&operation), vec![]).contains("moved nothing"));
        let mut short = moved.clone();
        short.legs =
            vec![(AccountId::wallet("alice"), Decimal::new(-100, 2)), (operation.payee(), Decimal::new(100, 2))];
        assert!(
            found(std::slice::from_ref(&operation), vec![short]).contains("moved instruction.transfer of 1.00 USD")
        );
        let mut elsewhere = moved.clone();
        elsewhere.legs[1].0 = AccountId::merchant("m_2");
        assert!(found(std::slice::from_ref(&operation), vec![elsewhere]).contains("to merchant:m_2"));
        assert!(found(&[], vec![moved]).contains("no recorded operation"));
    }

    proptest! {
        /// Whatever a platform signs, the money moves only on this side's terms: the amount is the
        /// price times a quantity of 1 to MAX_QUANTITY, in the listing's currency, to its payee.
        #[test]
        fn only_this_sides_terms_move_money(
            cents in 1u64..=20_000,
            quantity in 0u32..=1_001,
            euro in any::<bool>(),
            other_payee in any::<bool>(),
        ) {
            let key = LocalKey::new();
            let currency = if euro { "EUR" } else { "USD" };
            let amount = Money::new(Decimal::new(cents as i64, 2), currency.parse().unwrap()).unwrap();
            let payee = if other_payee { "merchant:m_2" } else { "merchant:m_1" };
            let signed = Instruction { amount, quantity, payee: payee.into(), ..instruction() };
            let judged = judged(&key, &presented(&key, signed), "alice", Some(&listed()));
            let due = Decimal::new(8_500, 2) * Decimal::from(quantity);
            let agrees = !euro && !other_payee && (1..=MAX_QUANTITY).contains(&quantity) && amount.amount() == due;
            prop_assert_eq!(judged.is_ok(), agrees, "{:?}", judged);
            if let Err(refusal) = judged {
                prop_assert!(matches!(refusal, Refusal::Terms(ref d) if !d.is_empty()), "{:?}", refusal);
            }
        }
    }
}
