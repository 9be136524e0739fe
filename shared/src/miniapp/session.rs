//! A verified user's standing with one app: the short-lived session a verification grants (bound
//! to the user and the app), and the pseudonym the app's server knows the user by.

use crate::Problem;
use crate::crypto::{Key, TokenPurpose, keyed_token};
use crate::problem::{Code, catalogue};

/// A verified user's pass to one app for a short while. Its id is not a bearer credential: it only
/// works with the JWT of the user it was issued to, for the app it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub user: String,
    pub app_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

impl Session {
    pub fn check(&self, user: &str, app_id: &str, now: i64) -> Result<(), SessionError> {
        if self.user != user || self.app_id != app_id {
            return Err(SessionError::Invalid);
        }
        if now >= self.expires_at {
            return Err(SessionError::Expired);
        }
        Ok(())
    }
}

/// Why a session does not let its bearer use an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Unknown, or another user's or another app's: the same answer, so ids cannot be probed.
    #[error("this session was not issued to you for this mini-app: verify the app to get one")]
    Invalid,
    #[error("the mini-app session expired: verify the app again to get a new one")]
    Expired,
}

impl SessionError {
    pub fn code(self) -> &'static Code {
        match self {
            SessionError::Invalid => catalogue::MINIAPP_SESSION_INVALID,
            SessionError::Expired => catalogue::MINIAPP_SESSION_EXPIRED,
        }
    }
}

impl From<SessionError> for Problem {
    fn from(e: SessionError) -> Self {
        Problem::new(e.code(), e.to_string())
    }
}

/// The user as one app's server knows them: stable for that app, different for every other app,
/// and not the platform's user id. Keyed by the server's token secret (`crate::keys::TokenSecret`),
/// so neither an app nor anyone else can recompute it from a guessed user id, nor link one user's
/// pseudonyms across apps. (Until issue 9 it was an unkeyed hash; every pseudonym changed once then.)
pub fn app_user(secret: &Key, app_id: &str, user: &str) -> String {
    format!("u_{}", keyed_token(secret, TokenPurpose::MiniAppPseudonym, &[app_id, user]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_serves_only_its_user_and_app_until_it_expires() {
        let session =
            Session { id: "s_1".into(), user: "alice".into(), app_id: "a_1".into(), created_at: 0, expires_at: 100 };
        assert_eq!(session.check("alice", "a_1", 99), Ok(()));
        assert_eq!(session.check("bob", "a_1", 99), Err(SessionError::Invalid));
        assert_eq!(session.check("alice", "a_2", 99), Err(SessionError::Invalid));
        assert_eq!(session.check("alice", "a_1", 100), Err(SessionError::Expired));
    }

    #[test]
    fn app_users_are_stable_per_app_and_differ_across_apps_users_and_secrets() {
        let secret = Key::random();
        let alice = app_user(&secret, "a_1", "alice");
        assert_eq!(alice, app_user(&secret, "a_1", "alice"));
        assert_ne!(alice, app_user(&secret, "a_2", "alice"));
        assert_ne!(alice, app_user(&secret, "a_1", "bob"));
        assert_ne!(alice, app_user(&Key::random(), "a_1", "alice"), "only the secret's holder computes it");
        assert!(alice.starts_with("u_") && !alice.contains("alice"));
    }
}
