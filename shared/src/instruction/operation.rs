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
//! pays twice. A two-phase listing's operation holds the amount instead; the provider then posts
//! at most the held amount (the rest goes back) or voids it, or the hold times out and goes back:
//! the three share one settlement transfer id, so a hold is settled exactly once. A provider
//! refunds what reached it, never more.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Put, Update};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::listing::Listing;
use super::platform_api::MAX_QUANTITY;
use super::signed::{Display, Instruction, MAX_LIFETIME_SECONDS, SignatureFault, verify};
use crate::Problem;
use crate::device_keys::DeviceKey;
use crate::dynamo::{Item, StoreError, Write, get_decimal, get_n, get_s, n, s, scan_all};
use crate::ids;
use crate::ledger::{AccountId, Books, LedgerError, Leg, Transfer, TransferRecord};
use crate::money::{Currency, Money};
use crate::problem::catalogue;
use crate::reconcile::Violation;
use crate::text::head;

/// Rule: an instruction is carried out once.
pub const OPERATION_NEW: &str = "operation.new";
/// Rule: a two-phase operation's hold still stands (it is settled once).
pub const OPERATION_HELD: &str = "operation.held";
/// Rule: the operation's refunds are still those a refund was judged against.
pub const OPERATION_REFUNDS_AS_READ: &str = "operation.refunds_as_read";

/// How far ahead of our clock an instruction's `issued_at` may be (the platform's clock may run
/// ahead of ours); no more, or an instruction could live longer than `MAX_LIFETIME_SECONDS`.
pub const CLOCK_SKEW_SECONDS: i64 = 30;

/// The first line of what a device co-signs: no offline code can start so (its payload starts
/// with a key id, which holds no `/`), nor can an instruction the platform signs.
pub const DEVICE_DOMAIN: &str = "superpay/transfer-confirmation/v1";

/// What the user confirmed: the hash of the text their client showed them and, above their
/// threshold, their device's signature of the whole instruction.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema), schemars(rename = "TransferConfirmation"))]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    /// The SHA-256 (hex) of the text the user was shown: the instruction's.
    pub display_hash: String,
    /// Above the payer's threshold: their device's co-signature (checked whenever sent).
    #[serde(default)]
    pub device: Option<DeviceSignature>,
}

/// A signature by one of the payer's enrolled devices over `device_message(instruction)`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DeviceSignature {
    /// The device's key id, as it signs offline codes.
    pub key_id: String,
    /// Base64 of the 64-byte P-256 signature (r then s), as the device signs offline codes.
    pub signature: String,
}

/// The bytes a device co-signs: `DEVICE_DOMAIN`, a newline, then the instruction's canonical form
/// (which holds the display hash). `None` when the instruction has no canonical form.
pub fn device_message(instruction: &Instruction) -> Option<Vec<u8>> {
    let canonical = instruction.canonical()?;
    Some([DEVICE_DOMAIN.as_bytes(), b"\n", &canonical].concat())
}

/// What the judgement reads beside the presented instruction.
pub struct Facts<'a> {
    /// The platform's key id and public key (DER SubjectPublicKeyInfo).
    pub kid: &'a str,
    pub public_key: &'a [u8],
    /// The signed-in user.
    pub caller: &'a str,
    /// This side's copy of the listing (`None`: unknown here), and its merchant's name.
    pub listed: Option<&'a Listing>,
    pub provider_name: &'a str,
    /// The payer's threshold in the instruction's currency: above it, their device co-signs.
    pub threshold: Decimal,
    /// The device the confirmation's device signature names, if it names one that exists.
    pub device: Option<&'a DeviceKey>,
    /// How long after its enrollment a device may co-sign (a stolen token can enroll one).
    pub device_cosign_delay: i64,
    pub now: i64,
}

/// The body of `POST /transfer/operations`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema), schemars(rename = "PresentedInstruction"))]
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
    /// The transfer side froze the listing (a divergence at one version).
    Frozen,
    /// Above the payer's threshold, and no device signature.
    DeviceRequired {
        threshold: Decimal,
    },
    /// The device signature is not by one of the payer's enrolled, unrevoked devices over it.
    DeviceSignature,
    /// The device was enrolled too recently to co-sign.
    DeviceTooNew {
        usable_at: i64,
    },
    /// Another instruction with this one's id or nonce was carried out: only a faulty platform signs
    /// two such.
    Reused,
}

impl Refusal {
    pub fn is_security_event(&self) -> bool {
        !matches!(
            self,
            Refusal::Expired
                | Refusal::UnknownListing
                | Refusal::Version { .. }
                | Refusal::Frozen
                | Refusal::DeviceRequired { .. }
                | Refusal::DeviceTooNew { .. }
        )
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
            Refusal::Frozen => json!({"reason": "frozen"}),
            Refusal::DeviceRequired { threshold } => json!({"reason": "device_required", "threshold": threshold}),
            Refusal::DeviceSignature => json!({"reason": "device"}),
            Refusal::DeviceTooNew { usable_at } => json!({"reason": "device_too_new", "usable_at": usable_at}),
            Refusal::Reused => json!({"reason": "reused"}),
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
            Refusal::Frozen => Problem::new(
                catalogue::LISTING_FROZEN,
                format!(
                    "listing {:?} is frozen: the platform's copy disagreed with this side's; nothing moved",
                    instruction.listing_id
                ),
            ),
            Refusal::DeviceRequired { threshold } => Problem::new(
                catalogue::DEVICE_SIGNATURE_REQUIRED,
                format!(
                    "{} is above your threshold of {threshold} {}: confirm on your enrolled device \
                     (confirmation.device); nothing moved",
                    instruction.amount,
                    instruction.amount.currency()
                ),
            )
            .with("threshold", threshold.to_string()),
            Refusal::DeviceTooNew { usable_at } => Problem::new(
                catalogue::DEVICE_TOO_NEW,
                format!(
                    "the device was enrolled too recently to confirm transfers; it may from {usable_at}; nothing moved"
                ),
            )
            .with("usable_at", *usable_at),
            Refusal::Reused => Problem::new(
                catalogue::INSTRUCTION_ALREADY_USED,
                format!(
                    "another instruction with the id {:?} or its nonce was carried out; nothing moved for this one",
                    instruction.id
                ),
            ),
            Refusal::DeviceSignature => Problem::new(
                catalogue::DEVICE_SIGNATURE_INVALID,
                "the device signature is not by one of your enrolled, unrevoked devices over this instruction; \
                 nothing moved",
            ),
        }
    }
}

/// Whether the transfer side carries out `presented` on `facts`. The platform's signature first:
/// nothing an unsigned instruction says is read before it holds; the device's last, once the
/// instruction is one this side would carry out.
pub fn judge(presented: &Presented, facts: &Facts) -> Result<(), Refusal> {
    let instruction = &presented.instruction;
    let (caller, now) = (facts.caller, facts.now);
    judge_signed(instruction, &presented.signature, (facts.kid, facts.public_key), caller, now)?;
    if presented.confirmation.display_hash != instruction.display_hash {
        return Err(Refusal::NotConfirmed);
    }
    let listed = facts.listed.ok_or(Refusal::UnknownListing)?;
    if listed.version != instruction.listing_version {
        return Err(Refusal::Version { current: listed.version });
    }
    let differences = differences(instruction, listed, facts.provider_name);
    if !differences.is_empty() {
        return Err(Refusal::Terms(differences));
    }
    if listed.freeze.frozen_at.is_some() {
        return Err(Refusal::Frozen);
    }
    // A device signature is checked whenever one is sent: a wrong one is never ignored.
    match &presented.confirmation.device {
        Some(signed) => {
            let signature = STANDARD.decode(&signed.signature).map_err(|_| Refusal::DeviceSignature)?;
            let message = device_message(instruction).ok_or(Refusal::DeviceSignature)?;
            let device =
                facts.device.filter(|d| d.key_id == signed.key_id && d.user == caller && d.revoked_at.is_none());
            let Some(device) = device.filter(|d| d.signed(&message, &signature)) else {
                return Err(Refusal::DeviceSignature);
            };
            let usable_at = device.enrolled_at + facts.device_cosign_delay;
            if now < usable_at {
                return Err(Refusal::DeviceTooNew { usable_at });
            }
        }
        None if instruction.amount.amount() > facts.threshold => {
            return Err(Refusal::DeviceRequired { threshold: facts.threshold });
        }
        None => {}
    }
    Ok(())
}

/// What is judged of an instruction before anything of the listing: the platform's signature
/// (under `kid`, whose public key is `public_key`), its ids, its lifetime and expiry at `now`, and that it is `caller`'s to pay. A
/// payment session for an instruction is opened only past this.
pub fn judge_signed(
    instruction: &Instruction,
    signature: &str,
    (kid, public_key): (&str, &[u8]),
    caller: &str,
    now: i64,
) -> Result<(), Refusal> {
    verify(instruction, signature, kid, public_key).map_err(Refusal::Signature)?;
    // The platform's ids start `ti_`: an operation's ledger ids (`<id>/hold`, `hold:<id>`) can
    // never be another capability's (`o_...`, `p_...`).
    let ours = instruction.id.starts_with("ti_");
    if !ours || ![&instruction.id, &instruction.listing_id, &instruction.nonce].into_iter().all(|id| ids::is_valid(id))
    {
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
    Ok(())
}

/// Each term of `instruction` that `listed` (at the same version, its merchant named
/// `provider_name`) does not have, the text the user confirmed among them: it must say what moves.
fn differences(instruction: &Instruction, listed: &Listing, provider_name: &str) -> Vec<Difference> {
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
    let due = price.currency().rescale(price.amount() * Decimal::from(instruction.quantity));
    differ("amount", instruction.amount.amount().to_string(), due.to_string());
    differ("currency", instruction.amount.currency().code().to_owned(), price.currency().code().to_owned());
    differ("payee", instruction.payee.clone(), listed.payee().as_str().to_owned());
    if let Ok(due) = Money::new(due, price.currency()) {
        let shown = Display::of(due, provider_name, &listed.merchant_id, instruction.quantity, &listed.terms.title);
        differ("display", instruction.display.text.clone(), shown.text);
    }
    found
}

/// How a carried-out operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum OperationState {
    /// The money moved to the provider.
    Completed,
    /// Two-phase: the amount is held until the provider posts (part of) it or voids it, or its
    /// hold times out.
    Held,
    /// The provider took `paid` of the hold; the rest went back to the payer.
    Posted,
    /// The provider voided the hold: all of it went back.
    Voided,
    /// Nobody settled the hold by its expiry: all of it went back.
    Released,
}

impl OperationState {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationState::Completed => "completed",
            OperationState::Held => "held",
            OperationState::Posted => "posted",
            OperationState::Voided => "voided",
            OperationState::Released => "released",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Completed, Self::Held, Self::Posted, Self::Voided, Self::Released]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// How a provider (or the hold's timeout) ends a two-phase operation's hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Take this much of the hold (at most all of it); the rest goes back.
    Post(Money),
    Void,
    /// The hold's timeout.
    Release,
}

/// Why a settlement or a refund cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettleRefusal {
    #[error("operation {id} is {state}, not held")]
    NotHeld { id: String, state: &'static str },
    #[error("{posted} is more than the {held} held")]
    OverHold { posted: Money, held: Money },
    #[error("operation {id}'s hold expired at {expired_at}: it goes back to the payer")]
    HoldExpired { id: String, expired_at: i64 },
    #[error("the operation is in {held}, not {asked}")]
    Currency { held: Currency, asked: Currency },
    #[error("operation {id} is {state}: nothing was paid to refund")]
    NotPaid { id: String, state: &'static str },
    #[error("{asked} is more than the {refundable} still refundable")]
    OverPaid { asked: Decimal, refundable: Decimal },
}

impl From<SettleRefusal> for Problem {
    fn from(refusal: SettleRefusal) -> Self {
        let detail = format!("{refusal}; nothing moved");
        match refusal {
            SettleRefusal::NotHeld { .. } => Problem::new(catalogue::OPERATION_NOT_HELD, detail),
            SettleRefusal::OverHold { held, .. } => {
                Problem::new(catalogue::POST_EXCEEDS_HOLD, detail).with("held", held.amount().to_string())
            }
            SettleRefusal::HoldExpired { .. } => Problem::new(catalogue::HOLD_EXPIRED, detail),
            SettleRefusal::Currency { .. } => Problem::new(catalogue::CURRENCY_MISMATCH, detail),
            SettleRefusal::NotPaid { .. } => Problem::new(catalogue::OPERATION_NOT_PAID, detail),
            SettleRefusal::OverPaid { refundable, .. } => {
                Problem::new(catalogue::REFUND_EXCEEDS_PAID, detail).with("refundable", refundable.to_string())
            }
        }
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
    /// Its listing was two-phase: the amount was held first.
    pub two_phase: bool,
    /// Two-phase: when an unsettled hold goes back to the payer.
    pub hold_expires_at: Option<i64>,
    /// What reached the provider (the amount; what it posted of a hold; nothing yet, or ever).
    pub paid: Decimal,
    /// What the provider refunded of `paid`.
    pub refunded: Decimal,
    pub created_at: i64,
}

impl Operation {
    /// The operation `instruction` becomes, judged on `listed`, for `request`: held for
    /// `hold_seconds` if the listing is two-phase, else completed.
    pub fn of(instruction: &Instruction, listed: &Listing, request: String, now: i64, hold_seconds: i64) -> Self {
        let two_phase = listed.terms.two_phase;
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
            state: if two_phase { OperationState::Held } else { OperationState::Completed },
            two_phase,
            hold_expires_at: two_phase.then_some(now + hold_seconds),
            paid: if two_phase { Decimal::ZERO } else { instruction.amount.amount() },
            refunded: Decimal::ZERO,
            created_at: now,
        }
    }

    pub fn payee(&self) -> AccountId {
        AccountId::merchant(&self.merchant_id)
    }

    fn hold_account(&self) -> AccountId {
        AccountId::hold(&self.id)
    }

    fn cause(&self) -> String {
        format!("instruction/{}", self.id)
    }

    /// Whether `other` carries out the same instruction (its id, nonce, payer and terms).
    pub fn same_instruction(&self, other: &Operation) -> bool {
        (&self.id, &self.nonce, &self.payer, &self.listing_id, self.listing_version, self.quantity, self.amount)
            == (
                &other.id,
                &other.nonce,
                &other.payer,
                &other.listing_id,
                other.listing_version,
                other.quantity,
                other.amount,
            )
    }

    /// The money it moves when carried out, from the payer's wallet to the provider's account (or,
    /// two-phase, to its hold), under an id derived from the instruction's: one instruction never
    /// pays twice.
    pub fn opening(&self) -> Result<Transfer, LedgerError> {
        let (id, to, kind) = match self.two_phase {
            false => (format!("{}/transfer", self.id), self.payee(), "instruction.transfer"),
            true => (format!("{}/hold", self.id), self.hold_account(), "instruction.hold"),
        };
        Transfer::between(id, self.amount, AccountId::wallet(&self.payer), to, kind, self.cause())
    }

    /// The hold's one settlement at `now` (a post, a void or the timeout's release share its id, so
    /// only one ever moves money) and the operation after it. A provider posts only before the hold
    /// expires: after, the money is the payer's again.
    pub fn settle(&self, settlement: Settlement, now: i64) -> Result<(Transfer, Operation), SettleRefusal> {
        if self.state != OperationState::Held {
            return Err(SettleRefusal::NotHeld { id: self.id.clone(), state: self.state.as_str() });
        }
        if let (Settlement::Post(_), Some(expired_at)) = (settlement, self.hold_expires_at)
            && now > expired_at
        {
            return Err(SettleRefusal::HoldExpired { id: self.id.clone(), expired_at });
        }
        let (state, kind, paid) = match settlement {
            Settlement::Post(posted) if posted.currency() != self.amount.currency() => {
                return Err(SettleRefusal::Currency { held: self.amount.currency(), asked: posted.currency() });
            }
            Settlement::Post(posted) if posted.amount() > self.amount.amount() => {
                return Err(SettleRefusal::OverHold { posted, held: self.amount });
            }
            Settlement::Post(posted) => (OperationState::Posted, "instruction.post", posted.amount()),
            Settlement::Void => (OperationState::Voided, "instruction.void", Decimal::ZERO),
            Settlement::Release => (OperationState::Released, "instruction.release", Decimal::ZERO),
        };
        let back = self.amount.amount() - paid;
        let legs = [
            (self.hold_account(), -self.amount.amount()),
            (self.payee(), paid),
            (AccountId::wallet(&self.payer), back),
        ];
        let transfer = Transfer {
            id: format!("{}/settle", self.id),
            currency: self.amount.currency(),
            legs: legs
                .into_iter()
                .filter(|(_, amount)| !amount.is_zero())
                .map(|(account, amount)| Leg { account, amount })
                .collect(),
            kind,
            cause: self.cause(),
        };
        Ok((transfer, Operation { state, paid, ..self.clone() }))
    }

    /// `amount` of what reached the provider, back to the payer, as refund `refund_id`; and the
    /// operation after it.
    pub fn refund(&self, amount: Money, refund_id: &str) -> Result<(Transfer, Operation), SettleRefusal> {
        if !matches!(self.state, OperationState::Completed | OperationState::Posted) || self.paid.is_zero() {
            return Err(SettleRefusal::NotPaid { id: self.id.clone(), state: self.state.as_str() });
        }
        if amount.currency() != self.amount.currency() {
            return Err(SettleRefusal::Currency { held: self.amount.currency(), asked: amount.currency() });
        }
        let refundable = self.paid - self.refunded;
        if amount.amount() > refundable {
            return Err(SettleRefusal::OverPaid { asked: amount.amount(), refundable });
        }
        let transfer = Transfer::between(
            format!("{}/refund/{refund_id}", self.id),
            amount,
            self.payee(),
            AccountId::wallet(&self.payer),
            "instruction.refund",
            self.cause(),
        )
        .map_err(|_| SettleRefusal::NotPaid { id: self.id.clone(), state: self.state.as_str() })?;
        Ok((transfer, Operation { refunded: self.refunded + amount.amount(), ..self.clone() }))
    }

    /// Its view as the data a message, a webhook, a home element or a payment session carries.
    pub fn view(&self) -> serde_json::Value {
        json!(OperationView::from(self))
    }

    /// The message in the payer's conversation with the provider, named `provider_name`, about the
    /// operation as it stands.
    pub fn message_text(&self, provider_name: &str) -> String {
        let currency = self.amount.currency();
        let (what, back) =
            (format!("{} x {}", self.quantity, self.title), currency.rescale(self.amount.amount() - self.paid));
        match self.state {
            OperationState::Completed => format!("Paid {} to {provider_name} for {what}.", self.amount),
            OperationState::Held => format!("Holding {} for {provider_name} for {what}.", self.amount),
            OperationState::Posted if back.is_zero() => {
                format!("Paid {} to {provider_name} for {what}.", self.amount)
            }
            OperationState::Posted => format!(
                "Paid {} {currency} to {provider_name} for {what}; {back} {currency} is back in your wallet.",
                currency.rescale(self.paid)
            ),
            OperationState::Voided => {
                format!("{provider_name} cancelled {what}; {} is back in your wallet.", self.amount)
            }
            OperationState::Released => {
                format!("{provider_name} did not confirm {what} in time; {} is back in your wallet.", self.amount)
            }
        }
    }
}

/// An operation as its payer reads it and its provider's webhook carries it (never the nonce or
/// the request).
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct OperationView {
    /// The instruction's id.
    id: String,
    state: OperationState,
    payer: String,
    merchant_id: String,
    /// The provider's account (`merchant:<id>`).
    payee: String,
    listing_id: String,
    /// The version of this side's listing it was judged on.
    listing_version: u64,
    /// This side's title of the listing.
    title: String,
    quantity: u32,
    amount: Money,
    /// What reached the provider (the amount; what it posted of a hold; nothing yet, or ever), in
    /// the currency's scale.
    paid: String,
    /// What the provider refunded of `paid`, in the currency's scale.
    refunded: String,
    /// Its listing was two-phase: the amount was held first.
    two_phase: bool,
    created_at: i64,
    /// Two-phase: when an unsettled hold goes back to the payer (absent otherwise, never null).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schemars(with = "i64"))]
    hold_expires_at: Option<i64>,
}

impl From<&Operation> for OperationView {
    fn from(operation: &Operation) -> Self {
        let currency = operation.amount.currency();
        OperationView {
            id: operation.id.clone(),
            state: operation.state,
            payer: operation.payer.clone(),
            merchant_id: operation.merchant_id.clone(),
            payee: operation.payee().as_str().to_owned(),
            listing_id: operation.listing_id.clone(),
            listing_version: operation.listing_version,
            title: operation.title.clone(),
            quantity: operation.quantity,
            amount: operation.amount,
            paid: currency.rescale(operation.paid).to_string(),
            refunded: currency.rescale(operation.refunded).to_string(),
            two_phase: operation.two_phase,
            created_at: operation.created_at,
            hold_expires_at: operation.hold_expires_at,
        }
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

    /// The check that no operation `id` was carried out.
    pub fn absent_check(&self, id: &str) -> Result<Write, StoreError> {
        let check = aws_sdk_dynamodb::types::ConditionCheck::builder()
            .table_name(&self.table)
            .key("id", s(id))
            .condition_expression("attribute_not_exists(id)")
            .build()?;
        Ok(Write::check(OPERATION_NEW, check))
    }

    /// The operation's record, written once.
    pub fn create_item(&self, operation: &Operation) -> Result<Write, StoreError> {
        let mut put = Put::builder()
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
            .item("two_phase", AttributeValue::Bool(operation.two_phase))
            .item("paid", n(operation.paid))
            .item("refunded", n(operation.refunded))
            .item("created_at", n(operation.created_at))
            .condition_expression("attribute_not_exists(id)");
        if let Some(at) = operation.hold_expires_at {
            put = put.item("hold_expires_at", n(at));
        }
        Ok(Write::put(OPERATION_NEW, put.build()?))
    }

    /// The hold's settlement as `after` records it at `now`, only while the hold still stands (and,
    /// for a post, has not expired).
    pub fn settle_item(&self, after: &Operation, now: i64) -> Result<Write, StoreError> {
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("id", s(&after.id))
            .update_expression("SET #state = :state, paid = :paid")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":state", s(after.state.as_str()))
            .expression_attribute_values(":paid", n(after.paid))
            .expression_attribute_values(":held", s(OperationState::Held.as_str()));
        update = match after.state {
            OperationState::Posted => update
                .condition_expression("#state = :held AND hold_expires_at >= :now")
                .expression_attribute_values(":now", n(now)),
            _ => update.condition_expression("#state = :held"),
        };
        Ok(Write::update(OPERATION_HELD, update.build()?))
    }

    /// A refund as `after` records it, only while the refunds so far are those `before` read.
    pub fn refund_item(&self, before: &Operation, after: &Operation) -> Result<Write, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("id", s(&after.id))
            .update_expression("SET refunded = :after")
            .condition_expression("refunded = :before")
            .expression_attribute_values(":after", n(after.refunded))
            .expression_attribute_values(":before", n(before.refunded))
            .build()?;
        Ok(Write::update(OPERATION_REFUNDS_AS_READ, update))
    }
}

/// What must hold of operations and the money they moved (`crate::reconcile`): each operation
/// moved exactly what its state says, whole (its opening transfer; a settled hold's one settlement,
/// splitting the amount between provider and payer as `paid` says), `paid` is what its state
/// allows (the amount once completed, nothing held or given back, at most the hold once posted),
/// no hold stands `slack` seconds past its expiry at `now`, each refund moved money from the
/// provider back to the payer in the operation's currency and they add up to `refunded`, never
/// beyond `paid`; and no instruction's money moved without its operation recorded (they are
/// written in one transaction). `operations` are all those whose transfers `books` holds.
pub fn check_operations(operations: &[Operation], books: &Books, now: i64, slack: i64) -> Vec<Violation> {
    let transfers = books.transfers_by_id();
    let mut violations = Vec::new();
    let mut refunds: HashMap<&str, Vec<&TransferRecord>> = HashMap::new();
    for refund in books.transfers.iter().filter(|t| t.kind == "instruction.refund") {
        refunds.entry(refund.cause.as_str()).or_default().push(refund);
    }
    for operation in operations {
        let mut problem =
            |text: String| violations.push(Violation::record(format!("operation {}", operation.id), text));
        let (amount, paid) = (operation.amount.amount(), operation.paid);
        let paid_allowed = match operation.state {
            OperationState::Completed => paid == amount,
            OperationState::Held | OperationState::Voided | OperationState::Released => paid.is_zero(),
            OperationState::Posted => paid > Decimal::ZERO && paid <= amount,
        };
        if !paid_allowed {
            problem(format!("is {} but says {paid} of {amount} was paid", operation.state.as_str()));
        }
        if operation.state == OperationState::Held
            && operation.hold_expires_at.is_some_and(|expires_at| now > expires_at + slack)
        {
            problem(format!(
                "is still held {} s past its hold's expiry",
                now - operation.hold_expires_at.unwrap_or(now)
            ));
        }
        let settlement = match operation.state {
            OperationState::Posted => Money::new(paid, operation.amount.currency()).ok().map(Settlement::Post),
            OperationState::Voided => Some(Settlement::Void),
            OperationState::Released => Some(Settlement::Release),
            OperationState::Completed | OperationState::Held => None,
        };
        let held = Operation { state: OperationState::Held, paid: Decimal::ZERO, ..operation.clone() };
        let mut expected = vec![operation.opening().map_err(|e| e.to_string())];
        if let Some(settlement) = settlement {
            expected.push(held.settle(settlement, operation.created_at).map(|(t, _)| t).map_err(|e| e.to_string()));
        }
        for transfer in expected {
            let transfer = match transfer {
                Ok(transfer) => TransferRecord::of(&transfer),
                Err(e) => {
                    problem(e);
                    continue;
                }
            };
            match transfers.get(transfer.id.as_str()) {
                Some(moved) if **moved == transfer => {}
                Some(moved) => problem(format!("is {} but moved {moved}", operation.state.as_str())),
                None => problem(format!("is {} but its {} moved nothing", operation.state.as_str(), transfer.kind)),
            }
        }
        if operation.state == OperationState::Held
            && let Some(settled) = transfers.get(format!("{}/settle", operation.id).as_str())
        {
            problem(format!("is held but its hold was settled: {settled}"));
        }
        let theirs = refunds.get(operation.cause().as_str()).cloned().unwrap_or_default();
        let back = [(operation.payee(), false), (AccountId::wallet(&operation.payer), true)];
        for refund in &theirs {
            let shape: Vec<(AccountId, bool)> =
                refund.legs.iter().map(|(a, x)| (a.clone(), *x > Decimal::ZERO)).collect();
            if shape != back || refund.currency != operation.amount.currency() {
                problem(format!("has a refund that is not from its provider back to its payer: {refund}"));
            }
        }
        let refunded: Decimal = theirs.iter().map(|r| r.amount()).sum();
        if refunded != operation.refunded || operation.refunded > paid {
            problem(format!("refunded {} of {paid} paid, but its refunds moved {refunded}", operation.refunded));
        }
    }
    let recorded: std::collections::HashSet<&str> = operations.iter().map(|o| o.id.as_str()).collect();
    for moved in books.transfers.iter().filter(|t| t.kind.starts_with("instruction.")) {
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
        two_phase: matches!(item.get("two_phase"), Some(AttributeValue::Bool(true))),
        hold_expires_at: if item.contains_key("hold_expires_at") {
            Some(get_n(item, "hold_expires_at")?)
        } else {
            None
        },
        paid: currency.rescale(get_decimal(item, "paid")?),
        refunded: currency.rescale(get_decimal(item, "refunded")?),
        created_at: get_n(item, "created_at")?,
    })
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use proptest::prelude::*;

    use super::super::listing::{Freeze, Terms};
    use super::super::signed::SignatureFault;
    use super::super::signed::tests::{LocalKey, instruction};
    use super::*;
    use crate::ledger::TransferRecord;

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
            freeze: Default::default(),
        }
    }

    /// `instruction` signed by `key`, confirmed by its user as shown.
    fn presented(key: &LocalKey, instruction: Instruction) -> Presented {
        Presented {
            signature: key.sign(&instruction),
            confirmation: Confirmation { display_hash: instruction.display_hash.clone(), device: None },
            instruction,
        }
    }

    /// Under a threshold the tests' amounts never reach, without a device.
    fn judged(key: &LocalKey, presented: &Presented, caller: &str, listed: Option<&Listing>) -> Result<(), Refusal> {
        let public_key = key.spki();
        let facts = Facts {
            kid: "k-1",
            public_key: &public_key,
            caller,
            listed,
            provider_name: "Sea Shop",
            threshold: Decimal::new(1_000_000, 0),
            device: None,
            device_cosign_delay: 60,
            now: NOW,
        };
        judge(presented, &facts)
    }

    /// A phone's enrolled key, as `crate::device_keys` holds it, and its private half.
    fn enrolled(user: &str) -> (DeviceKey, EcdsaKeyPair) {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let key = DeviceKey {
            id: "d_1".into(),
            user: user.into(),
            key_id: "d_1.k1".into(),
            public_key: STANDARD.encode(pair.public_key().as_ref()),
            enrolled_at: NOW - 60,
            revoked_at: None,
        };
        (key, pair)
    }

    /// `presented`, co-signed by `pair` (as key `d_1.k1`) over `message`.
    fn cosigned(mut presented: Presented, pair: &EcdsaKeyPair, message: &[u8]) -> Presented {
        let signature = pair.sign(&SystemRandom::new(), message).unwrap();
        presented.confirmation.device =
            Some(DeviceSignature { key_id: "d_1.k1".into(), signature: STANDARD.encode(signature.as_ref()) });
        presented
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
        let fields = |differences: &[Difference]| differences.iter().map(|d| d.field).collect::<Vec<_>>();
        assert_eq!(fields(&differences), ["amount", "currency", "display"]);
        assert_eq!(differences[0], Difference { field: "amount", instructed: "85.00".into(), listed: "80.00".into() });
        assert_eq!(differences[2].listed, "Pay 80.00 EUR to Sea Shop (m_1) for 1 x Sea view room.");
        let elsewhere = Listing { merchant_id: "m_2".into(), ..listed() };
        let Refusal::Terms(differences) = refused(presented(&key, instruction()), "alice", Some(&elsewhere)) else {
            panic!()
        };
        assert_eq!(fields(&differences), ["payee", "display"]);
        assert_eq!(
            differences[0],
            Difference { field: "payee", instructed: "merchant:m_1".into(), listed: "merchant:m_2".into() }
        );
        // The terms this side would move, shown as other terms (ten rooms shown as one; another
        // shop's name): the text the user confirmed must say what moves.
        let mut ten = Instruction { quantity: 10, amount: Money::parse("850.00", "USD").unwrap(), ..instruction() };
        ten.display_hash = ten.display.hash();
        let Refusal::Terms(differences) = refused(presented(&key, ten), "alice", Some(&listing)) else { panic!() };
        assert_eq!(fields(&differences), ["display"]);
        let mut renamed = instruction();
        renamed.display = Display::of(renamed.amount, "Tea Shop", "m_1", 1, "Sea view room");
        renamed.display_hash = renamed.display.hash();
        let Refusal::Terms(differences) = refused(presented(&key, renamed), "alice", Some(&listing)) else { panic!() };
        assert_eq!(fields(&differences), ["display"]);
    }

    #[test]
    fn above_the_threshold_only_the_payers_own_live_device_can_confirm() {
        let key = LocalKey::new();
        let public_key = key.spki();
        let (phone, pair) = enrolled("alice");
        let listing = listed();
        let judged = |presented: &Presented, threshold: i64, device: Option<&DeviceKey>| {
            let facts = Facts {
                kid: "k-1",
                public_key: &public_key,
                caller: "alice",
                listed: Some(&listing),
                provider_name: "Sea Shop",
                threshold: Decimal::new(threshold, 2),
                device,
                device_cosign_delay: 60,
                now: NOW,
            };
            judge(presented, &facts)
        };
        let plain = presented(&key, instruction());
        let message = device_message(&plain.instruction).unwrap();
        assert!(message.starts_with(b"superpay/transfer-confirmation/v1\nsuperpay/transfer-instruction/v1\n"));
        // 85.00 is at the threshold: no device needed; above it, one is.
        assert_eq!(judged(&plain, 8_500, None), Ok(()));
        assert_eq!(judged(&plain, 8_499, None), Err(Refusal::DeviceRequired { threshold: Decimal::new(8_499, 2) }));
        let signed = cosigned(plain.clone(), &pair, &message);
        assert_eq!(judged(&signed, 0, Some(&phone)), Ok(()));
        // Whenever a device signature is sent it must hold, even below the threshold.
        let refused = |presented: &Presented, device: Option<&DeviceKey>| judged(presented, 8_500, device);
        assert_eq!(refused(&signed, None), Err(Refusal::DeviceSignature), "an unknown device");
        let (bobs, _) = enrolled("bob");
        assert_eq!(
            refused(&signed, Some(&DeviceKey { public_key: phone.public_key.clone(), ..bobs })),
            Err(Refusal::DeviceSignature),
            "another payer's device"
        );
        // Enrolled a minute ago is old enough; a second ago (a stolen token's fresh device) is not.
        let fresh = DeviceKey { enrolled_at: NOW - 1, ..phone.clone() };
        assert_eq!(refused(&signed, Some(&fresh)), Err(Refusal::DeviceTooNew { usable_at: NOW + 59 }));
        let revoked = DeviceKey { revoked_at: Some(NOW - 1), ..phone.clone() };
        assert_eq!(refused(&signed, Some(&revoked)), Err(Refusal::DeviceSignature), "a revoked device");
        let (other_phone, other_pair) = enrolled("alice");
        assert_eq!(
            refused(&cosigned(plain.clone(), &other_pair, &message), Some(&phone)),
            Err(Refusal::DeviceSignature)
        );
        assert_eq!(refused(&signed, Some(&other_phone)), Err(Refusal::DeviceSignature), "another key of the payer's");
        // The canonical instruction alone (as if it were something else the key signs) is not it.
        let undomained = cosigned(plain.clone(), &pair, &plain.instruction.canonical().unwrap());
        assert_eq!(refused(&undomained, Some(&phone)), Err(Refusal::DeviceSignature));
        let mut garbled = signed.clone();
        garbled.confirmation.device.as_mut().unwrap().signature = "not base64!".into();
        assert_eq!(refused(&garbled, Some(&phone)), Err(Refusal::DeviceSignature));
        // A frozen listing is refused before any device is asked.
        let frozen = Listing { freeze: Freeze { frozen_at: Some(NOW), cleared_through: 0 }, ..listed() };
        let facts = Facts {
            kid: "k-1",
            public_key: &public_key,
            caller: "alice",
            listed: Some(&frozen),
            provider_name: "Sea Shop",
            threshold: Decimal::ZERO,
            device: None,
            device_cosign_delay: 60,
            now: NOW,
        };
        assert_eq!(judge(&plain, &facts), Err(Refusal::Frozen));
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
            Refusal::DeviceSignature,
        ];
        assert!(events.iter().all(Refusal::is_security_event));
        let ordinary = [
            Refusal::Expired,
            Refusal::UnknownListing,
            Refusal::Version { current: 3 },
            Refusal::Frozen,
            Refusal::DeviceRequired { threshold: Decimal::ONE },
            Refusal::DeviceTooNew { usable_at: NOW },
        ];
        assert!(!ordinary.iter().any(Refusal::is_security_event));
        let long = Difference { field: "payee", instructed: "x".repeat(10_000), listed: "merchant:m_1".into() };
        let detail = Refusal::Terms(vec![long]).detail().to_string();
        assert!(detail.len() < 300, "what differed is quoted in part: {}", detail.len());
    }

    #[test]
    fn an_operation_moved_exactly_its_amount_once_and_no_money_moved_without_one() {
        let key = LocalKey::new();
        let judged = presented(&key, instruction());
        let operation = Operation::of(&judged.instruction, &listed(), "r_1".into(), NOW, 60);
        let moved = TransferRecord::of(&operation.opening().unwrap());
        assert_eq!(check_operations(std::slice::from_ref(&operation), &books(vec![moved.clone()]), NOW, 60), vec![]);
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

    fn books(transfers: Vec<TransferRecord>) -> Books {
        Books { transfers, ..Books::default() }
    }

    /// The checker's findings, in one line.
    fn found(operations: &[Operation], transfers: Vec<TransferRecord>) -> String {
        check_operations(operations, &books(transfers), NOW, 60)
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn usd(cents: i64) -> Money {
        Money::new(Decimal::new(cents, 2), "USD".parse().unwrap()).unwrap()
    }

    /// A two-phase operation of 85.00 USD, held.
    fn held() -> Operation {
        let two_phase = Listing { terms: Terms { two_phase: true, ..listed().terms }, ..listed() };
        Operation::of(&instruction(), &two_phase, "r_1".into(), NOW, 60)
    }

    #[test]
    fn the_view_names_the_state_as_it_is_stored_and_a_hold_expiry_only_for_a_hold() {
        let paid = Operation::of(&instruction(), &listed(), "r_1".into(), NOW, 60);
        assert_eq!(
            paid.view(),
            json!({"id": "ti_1", "state": "completed", "payer": "alice", "merchant_id": "m_1",
                   "payee": "merchant:m_1", "listing_id": "sea-view", "listing_version": 2, "title": "Sea view room",
                   "quantity": 1, "amount": {"amount": "85.00", "currency": "USD"}, "paid": "85.00",
                   "refunded": "0.00", "two_phase": false, "created_at": NOW})
        );
        assert_eq!(held().view()["hold_expires_at"], NOW + 60);
        for state in [
            OperationState::Completed,
            OperationState::Held,
            OperationState::Posted,
            OperationState::Voided,
            OperationState::Released,
        ] {
            assert_eq!(Operation { state, ..held() }.view()["state"], state.as_str());
        }
    }

    #[test]
    fn a_hold_is_settled_once_posting_at_most_what_it_holds() {
        let hold = held();
        assert_eq!(
            (hold.state, hold.paid, hold.hold_expires_at),
            (OperationState::Held, Decimal::ZERO, Some(NOW + 60))
        );
        assert_eq!(hold.opening().unwrap().accounts(), [AccountId::wallet("alice"), AccountId::hold("ti_1")]);
        let (post, posted) = hold.settle(Settlement::Post(usd(6_000)), NOW).unwrap();
        assert_eq!(post.id, "ti_1/settle");
        assert_eq!(
            post.legs.iter().map(|l| (l.account.as_str(), l.amount)).collect::<Vec<_>>(),
            [
                ("hold:ti_1", Decimal::new(-8_500, 2)),
                ("merchant:m_1", Decimal::new(6_000, 2)),
                ("wallet:alice", Decimal::new(2_500, 2))
            ]
        );
        assert_eq!((posted.state, posted.paid), (OperationState::Posted, Decimal::new(6_000, 2)));
        let (whole, _) = hold.settle(Settlement::Post(usd(8_500)), NOW).unwrap();
        assert_eq!(whole.legs.len(), 2, "nothing goes back");
        // A void and the timeout's release give it all back, under the same id as a post.
        for (settlement, state) in
            [(Settlement::Void, OperationState::Voided), (Settlement::Release, OperationState::Released)]
        {
            let (back, after) = hold.settle(settlement, NOW).unwrap();
            assert_eq!((back.id.as_str(), back.legs.len(), after.state), ("ti_1/settle", 2, state));
            assert_eq!(back.legs[1], Leg { account: AccountId::wallet("alice"), amount: Decimal::new(8_500, 2) });
        }
        assert!(matches!(hold.settle(Settlement::Post(usd(8_501)), NOW), Err(SettleRefusal::OverHold { .. })));
        let euros = Money::new(Decimal::ONE, "EUR".parse().unwrap()).unwrap();
        assert!(matches!(hold.settle(Settlement::Post(euros), NOW), Err(SettleRefusal::Currency { .. })));
        for settled in [posted.clone(), Operation { state: OperationState::Completed, ..hold.clone() }] {
            assert!(matches!(settled.settle(Settlement::Void, NOW), Err(SettleRefusal::NotHeld { .. })));
        }
        // The checker: a posted hold moved its opening and its one settlement, split as posted.
        let opening = TransferRecord::of(&hold.opening().unwrap());
        let settled = TransferRecord::of(&post);
        assert_eq!(found(std::slice::from_ref(&posted), vec![opening.clone(), settled.clone()]), "");
        assert!(found(std::slice::from_ref(&posted), vec![opening.clone()]).contains("instruction.post moved nothing"));
        assert!(
            found(std::slice::from_ref(&hold), vec![opening.clone(), settled.clone()])
                .contains("is held but its hold was settled")
        );
        let claimed = Operation { paid: Decimal::new(8_500, 2), ..posted.clone() };
        assert!(found(&[claimed], vec![opening.clone(), settled]).contains("is posted but moved"));
        let paid_while_held = Operation { paid: Decimal::ONE, ..hold.clone() };
        assert!(found(&[paid_while_held], vec![opening.clone()]).contains("says 1 of 85.00 was paid"));
        let forgotten = Operation { hold_expires_at: Some(NOW - 61), ..hold.clone() };
        assert!(found(&[forgotten], vec![opening.clone()]).contains("still held 61 s past its hold's expiry"));
        // After its expiry a hold may only go back.
        let late = Operation { hold_expires_at: Some(NOW - 1), ..hold.clone() };
        assert!(matches!(late.settle(Settlement::Post(usd(100)), NOW), Err(SettleRefusal::HoldExpired { .. })));
        assert!(late.settle(Settlement::Release, NOW).is_ok() && late.settle(Settlement::Void, NOW).is_ok());
    }

    #[test]
    fn a_provider_refunds_what_reached_it_never_more() {
        let key = LocalKey::new();
        let paid = Operation::of(&presented(&key, instruction()).instruction, &listed(), "r_1".into(), NOW, 60);
        let (refund, after) = paid.refund(usd(5_000), "k1").unwrap();
        assert_eq!((refund.id.as_str(), after.refunded), ("ti_1/refund/k1", Decimal::new(5_000, 2)));
        assert_eq!(refund.accounts(), [AccountId::merchant("m_1"), AccountId::wallet("alice")]);
        assert!(matches!(after.refund(usd(3_501), "k2"), Err(SettleRefusal::OverPaid { .. })));
        assert!(after.refund(usd(3_500), "k2").is_ok());
        let (_, posted) = held().settle(Settlement::Post(usd(1_000)), NOW).unwrap();
        assert!(matches!(posted.refund(usd(1_001), "k"), Err(SettleRefusal::OverPaid { .. })));
        for unpaid in [held(), held().settle(Settlement::Void, NOW).unwrap().1] {
            assert!(matches!(unpaid.refund(usd(1), "k"), Err(SettleRefusal::NotPaid { .. })));
        }
        // The checker: refunds moved add up to what the operation says was refunded.
        let opening = TransferRecord::of(&paid.opening().unwrap());
        assert_eq!(found(std::slice::from_ref(&after), vec![opening.clone(), TransferRecord::of(&refund)]), "");
        assert!(
            found(std::slice::from_ref(&after), vec![opening.clone()])
                .contains("refunded 50.00 of 85.00 paid, but its refunds moved 0")
        );
        let mut to_someone_else = TransferRecord::of(&refund);
        to_someone_else.legs[1].0 = AccountId::wallet("mallory");
        assert!(
            found(std::slice::from_ref(&after), vec![opening, to_someone_else])
                .contains("not from its provider back to its payer")
        );
    }

    proptest! {
        /// A post of any amount either settles the hold, balanced, the provider taking the post
        /// and the payer the rest, or is refused and moves nothing.
        #[test]
        fn a_post_splits_the_hold_or_is_refused(cents in 1i64..=20_000) {
            let hold = held();
            match hold.settle(Settlement::Post(usd(cents)), NOW) {
                Ok((transfer, after)) => {
                    prop_assert!(cents <= 8_500);
                    prop_assert_eq!(transfer.legs.iter().map(|l| l.amount).sum::<Decimal>(), Decimal::ZERO);
                    prop_assert_eq!(after.paid, Decimal::new(cents, 2));
                    let back = transfer.legs.iter().find(|l| l.account == AccountId::wallet("alice")).map(|l| l.amount);
                    prop_assert_eq!(back.unwrap_or_default(), Decimal::new(8_500 - cents, 2));
                }
                Err(refusal) => prop_assert!(cents > 8_500, "{:?}", refusal),
            }
        }

        /// Whatever a platform signs (shown consistently), the money moves only on this side's
        /// terms: the amount is the price times a quantity of 1 to MAX_QUANTITY, in the listing's
        /// currency, to its payee. Half the cases price the amount right, so both outcomes are met.
        #[test]
        fn only_this_sides_terms_move_money(
            cents in 1u64..=20_000,
            priced in any::<bool>(),
            quantity in 0u32..=1_001,
            euro in any::<bool>(),
            other_payee in any::<bool>(),
        ) {
            let key = LocalKey::new();
            let currency = if euro { "EUR" } else { "USD" };
            let cents = if priced { 8_500 * i64::from(quantity.max(1)) } else { cents as i64 };
            let amount = Money::new(Decimal::new(cents, 2), currency.parse().unwrap()).unwrap();
            let payee = if other_payee { "merchant:m_2" } else { "merchant:m_1" };
            let merchant = payee.strip_prefix("merchant:").unwrap();
            let display = Display::of(amount, "Sea Shop", merchant, quantity, "Sea view room");
            let signed = Instruction {
                amount,
                quantity,
                payee: payee.into(),
                display_hash: display.hash(),
                display,
                ..instruction()
            };
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
