//! Capability 8, signed transfer instructions: a provider (a merchant) publishes a listing to two
//! servers of ours that share nothing, the transfer platform and the transfer side, each keeping
//! its own copy in its own table. A client asks the platform for a transfer instruction; the user
//! confirms what it shows; the transfer side moves the money only if the instruction, signed by the
//! platform, agrees with ITS OWN copy of the listing: a buggy or compromised platform cannot make it
//! move another amount, to another payee, for another payer, or twice.
//!
//! - `listing`: a listing's terms, their validation, and how a publication changes a copy (its
//!   `listing_version` goes up on every change); the store of one side's copies.
//! - `api`: the listing routes both functions serve, each over its own table.
//! - `signed`: the transfer instruction, its canonical form, its signature (KMS ECC P-256) and its
//!   verification with the public key alone.
//! - `platform_api`: the platform's route that prices and signs an instruction.
//! - `operation`: the transfer side's judgement of a presented instruction against its own copy,
//!   and the store of the operations it carried out.
//! - `operations_api`: the transfer side's route that carries an instruction out.
//! - `service`: what moves an operation's money after it was carried out: a two-phase hold's one
//!   settlement, the provider's refunds.
//! - `provider_api`: the provider's signed routes on its operations (post, void, refunds).
//! - `notices`: what the notifier does with operations' messages: tells the provider and the payer
//!   how an operation stands or was refunded, releases a hold at its expiry.
//! - `threshold`: above which amount the payer's own device must co-sign an operation.
//! - `consent`: an instruction paid through a payment session (capability 1) waits for the
//!   session's confirmation; this side reads the session, never writes it.
//! - `admin`: the transfer side's admin routes (thresholds per account, unfreezing a listing).

pub mod admin;
pub mod api;
pub mod consent;
pub mod listing;
pub mod notices;
pub mod operation;
pub mod operations_api;
pub mod platform_api;
pub mod provider_api;
pub mod service;
pub mod signed;
pub mod threshold;
