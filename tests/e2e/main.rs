//! End-to-end tests against the local stack: HTTP in, DynamoDB/SQS state out.
//! One test binary for all of them (each binary links the AWS SDK). Run with `cargo stack test`.

mod adapters;
mod browser;
mod cash;
mod config;
mod devices;
mod events;
mod faults;
mod flows;
mod home;
mod iam;
mod instructions;
mod instruments;
mod ledger;
mod links;
mod merchants;
mod miniapps;
mod notifications;
mod offline;
mod operations;
mod ops;
mod payment_sessions;
mod purchases;
mod reconcile;
mod refunds;
mod runner;
mod topup;
mod two_phase;
mod validation;
