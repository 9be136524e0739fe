//! superpay's common library.
//!
//! The functional core (money, idempotency decisions, config diffing) is plain Rust with no I/O and
//! is tested without servers. The ports' AWS adapters (`*::store`) and the HTTP glue (`http`,
//! `auth`, `*::api`) form the imperative shell that each Lambda function's `main.rs` wires up.

pub mod admin;
pub mod attention;
pub mod audit;
pub mod auth;
pub mod aws;
pub mod bank;
pub mod batch;
pub mod clock;
pub mod config;
pub mod conversation;
pub mod crypto;
pub mod device_keys;
pub mod dynamo;
pub mod flows;
pub mod home;
pub mod http;
pub mod idempotency;
pub mod ids;
pub mod instruction;
pub mod instrument;
pub mod keys;
pub mod ledger;
pub mod logging;
pub mod merchant;
pub mod miniapp;
pub mod money;
pub mod nonce;
pub mod notifier;
pub mod offline;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod outbound;
pub mod outbox;
pub mod party_keys;
pub mod payment_session;
pub mod problem;
pub mod purchase;
pub mod queues;
pub mod reconcile;
pub mod reconciliation;
pub mod rules;
pub mod security;
pub mod signed;
pub mod text;

pub use problem::Problem;
