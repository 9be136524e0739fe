//! Mini-apps (capability 2): third-party apps that run inside the chat. An admin registers an app
//! (its owner merchant, its server, its key, its interface descriptor). A user's client verifies an
//! app id: a positive answer is the descriptor and a short-lived session bound to the user and the
//! app; a negative one is a chat message saying why. A request made in the app's interface goes
//! through us to the app's server (signed both ways); we charge the user only the exact amount the
//! user approved and the server asked for, tell the server the outcome, and answer the client with
//! the chat message that reports it and a directive to close the app's interface.
//!
//! The pure part is in three modules, re-exported here: `registry` (an app, its status, its
//! interface descriptor and its validation, whether it may be used now), `session` (the session a
//! verification grants, the user's pseudonym for each app) and `request` (a relayed request, the
//! judge of the server's answer, the charge, and what the user and the server are told). `api`
//! serves the users' routes, `admin` the registry's admin routes (an app is a `KeyedParty`),
//! `relay` calls the app's server, `store` holds the tables, `notices` handles the app's messages
//! on the notifications queue.

pub mod admin;
pub mod api;
pub mod notices;
pub mod registry;
pub mod relay;
pub mod request;
pub mod service;
pub mod session;
pub mod store;

pub use registry::{
    CHARGE_PERMISSION, Interface, InterfaceAction, MiniApp, MiniAppStatus, PERMISSIONS, Refusal, Registration,
    RegistrationJson, check_available, unknown_miniapp,
};
pub use request::{
    CLOSE_INTERFACE, MAX_PARAMS_BYTES, Outcome, RelayedRequest, RequestError, RequestJson, ServerAnswer, ServerFault,
    UserRequest, check_requests, judge,
};
pub use session::{Session, SessionError, app_user};
