//! The local stack that replaces `sam local` (which needs Docker): see the README's first command.

pub mod aws_proxy;
pub mod bench;
pub mod chart;
pub mod checkov;
pub mod conflicts;
pub mod cpu_share;
pub mod emulators;
pub mod faults;
pub mod gateway;
pub mod iam;
pub mod jwt;
pub mod openapi;
pub mod process;
pub mod resources;
pub mod runtime_api;
pub mod seed;
pub mod sqs_source;
pub mod stack;
pub mod template;
pub mod tls;
