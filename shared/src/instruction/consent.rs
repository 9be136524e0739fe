//! A transfer instruction paid through a payment session (capability 1) is carried out only with
//! the session's consent. The session is opened and confirmed (with the user's payment PIN) by
//! `PaymentSessionsFunction`, and the money is moved by this side alone, as for any instruction:
//! this side reads the session, never writes it, and the session's function never writes this
//! side's tables.
//!
//! The session of an instruction has an id derived from the instruction's (`session_id`), so this
//! side finds it without being told: an operation checks, in its own transaction, that the
//! instruction has no session or that its session is confirmed, by its payer, for it. A user who
//! cancelled a session, or never confirmed it, cannot have its instruction carried out around it.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::ConditionCheck;

use super::signed::Instruction;
use crate::Problem;
use crate::clock::now_epoch_seconds;
use crate::crypto::sha256_hex;
use crate::dynamo::{StoreError, Write, get_n_opt, get_s, s};
use crate::problem::catalogue;

/// Rule: an instruction with a payment session is carried out only once the session is confirmed.
pub const SESSION_CONSENTS: &str = "instruction.session_consents";

/// What a session's consent is for: the SHA-256 of the instruction's canonical form, so a consent
/// given for one instruction is never spent on another that carries its id (a platform signing an id
/// again after its key's record expired). Empty for an instruction without a canonical form, which
/// no session holds.
pub fn digest(instruction: &Instruction) -> String {
    instruction.canonical().map(|bytes| sha256_hex(&bytes)).unwrap_or_default()
}

/// The id of the payment session of instruction `instruction_id` (`ps_` and 32 hex digits, as
/// every session's).
pub fn session_id(instruction_id: &str) -> String {
    format!("ps_{}", &sha256_hex(format!("transfer-instruction/{instruction_id}").as_bytes())[..32])
}

/// The payment sessions' table (`PaymentSessionsTable`), read-only: a session's `stage`, `user`,
/// `payment_id`, `instruction_digest` and `expires_at` attributes, as `payment_session::store`
/// writes them.
#[derive(Clone, Debug)]
pub struct SessionConsents {
    client: Client,
    table: String,
}

impl SessionConsents {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        SessionConsents { client, table: table.into() }
    }

    /// The check that `instruction` has no payment session, or one confirmed by its payer for it
    /// (this very instruction: its digest).
    pub fn check_item(&self, instruction: &Instruction) -> Result<Write, StoreError> {
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .key("id", s(session_id(&instruction.id)))
            .condition_expression(
                "attribute_not_exists(id) OR (stage = :confirmed AND #user = :payer AND payment_id = :instruction \
                 AND instruction_digest = :digest)",
            )
            .expression_attribute_names("#user", "user")
            .expression_attribute_values(":confirmed", s("confirmed"))
            .expression_attribute_values(":payer", s(&instruction.payer))
            .expression_attribute_values(":instruction", s(&instruction.id))
            .expression_attribute_values(":digest", s(digest(instruction)))
            .build()?;
        Ok(Write::check(SESSION_CONSENTS, check))
    }

    /// Why `instruction`'s session did not consent to it, as the session now is.
    pub async fn withheld(&self, instruction: &Instruction) -> Result<Withheld, StoreError> {
        let id = session_id(&instruction.id);
        let read = self.client.get_item().table_name(&self.table).key("id", s(&id));
        // What the answer needs, nothing of what the session pays for.
        let read = read.projection_expression("stage, expires_at, instruction_digest").consistent_read(true);
        let out = read.send().await?;
        let Some(item) = out.item() else {
            // Gone since the check: sessions are never deleted, so only a failure of ours.
            return Err(StoreError::new(format!("payment session {id} failed the consent check and is missing")));
        };
        if get_s(item, "instruction_digest").ok() != Some(digest(instruction).as_str()) {
            return Ok(Withheld::OtherInstruction);
        }
        let expired = get_n_opt::<i64>(item, "expires_at")?.is_some_and(|at| now_epoch_seconds() >= at);
        let (code, why) = match get_s(item, "stage")? {
            "open" if expired => (catalogue::PAYMENT_SESSION_EXPIRED, "it expired unconfirmed".to_owned()),
            "open" => (
                catalogue::PAYMENT_SESSION_NOT_CONFIRMED,
                format!(
                    "confirm it first (POST /payment-sessions/{id}/confirm, with your payment PIN), then send the \
                     instruction again with a new Idempotency-Key"
                ),
            ),
            "cancelled" => (catalogue::PAYMENT_SESSION_CLOSED, "it was cancelled".to_owned()),
            // Confirmed between the check and this read: sent again, it is carried out.
            _ => (
                catalogue::PAYMENT_SESSION_NOT_CONFIRMED,
                "it was confirmed only after this was judged: send the instruction again with a new \
                 Idempotency-Key"
                    .to_owned(),
            ),
        };
        let problem = Problem::new(
            code,
            format!("instruction {} is paid through payment session {id}: {why}; nothing moved", instruction.id),
        );
        Ok(Withheld::Session(problem.with("payment_session", id)))
    }
}

/// Why a payment session did not consent to an instruction.
#[derive(Debug)]
pub enum Withheld {
    /// The session is not confirmed, was cancelled or expired: the user's answer.
    Session(Problem),
    /// The session is for another instruction carrying this id: only a platform signing one id
    /// twice makes one, so it is refused as a reused instruction is.
    OtherInstruction,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instruction_has_one_session_id_of_the_sessions_shape() {
        let id = session_id("ti_1");
        assert_eq!(id, session_id("ti_1"));
        assert_ne!(id, session_id("ti_2"));
        assert!(id.starts_with("ps_") && id.len() == 35 && crate::ids::is_valid(&id), "{id}");
    }
}
