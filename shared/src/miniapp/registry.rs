//! The mini-app registry: a registered app (its owner merchant, its server, its key), its status,
//! the interface descriptor the client loads and its validation, a registration request, and
//! whether an app may be opened and used now (a refusal is also the chat message a verification
//! posts).

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::Problem;
use crate::conversation::{Counterparty, NewMessage};
use crate::http::partner_url;
use crate::keys::{PreviousKey, StoredKey};
use crate::party_keys::KeyedParty;
use crate::problem::{Code, catalogue};

/// The permissions an interface may ask for. Only `wallet.charge` is enforced here (a request with
/// an approved amount needs it); the client shows the others when the user opens the app.
pub const PERMISSIONS: &[&str] = &["wallet.charge", "profile.basic", "location"];
pub const CHARGE_PERMISSION: &str = "wallet.charge";

/// Whether the app may be opened and used: a suspended one may not for now, a revoked one never again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum MiniAppStatus {
    Active,
    Suspended,
    /// Final: a revoked app never becomes active again.
    Revoked,
}

impl MiniAppStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MiniAppStatus::Active => "active",
            MiniAppStatus::Suspended => "suspended",
            MiniAppStatus::Revoked => "revoked",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [MiniAppStatus::Active, MiniAppStatus::Suspended, MiniAppStatus::Revoked]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// An action the app's interface may offer (e.g. `buy`); relayed requests must name one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct InterfaceAction {
    #[cfg_attr(feature = "openapi", schemars(regex(pattern = r"^[a-z0-9_.-]{1,40}$")))]
    pub id: String,
    #[cfg_attr(feature = "openapi", schemars(schema_with = "label::<60>"))]
    pub title: String,
}

/// What the client loads to show the app inside the chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Interface {
    #[cfg_attr(feature = "openapi", schemars(schema_with = "label::<60>"))]
    pub title: String,
    /// The page the client opens (hosted by the third party).
    #[cfg_attr(feature = "openapi", schemars(schema_with = "crate::admin::partner_url"))]
    pub entry_page: String,
    /// 1 to 20, each id once.
    #[cfg_attr(feature = "openapi", schemars(length(min = 1, max = 20)))]
    pub actions: Vec<InterfaceAction>,
    /// What the app asks of the user, shown when it opens; only `wallet.charge` lets it charge.
    #[cfg_attr(feature = "openapi", schemars(schema_with = "permissions"))]
    pub permissions: Vec<String>,
}

/// The schema of `is_label`'s text of at most `MAX` characters: exact, as every whitespace and
/// control character is in the Basic Multilingual Plane (`crate::admin::bmp_class`).
#[cfg(feature = "openapi")]
fn label<const MAX: usize>(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let space = crate::admin::bmp_class(char::is_whitespace);
    let control = crate::admin::bmp_class(char::is_control);
    let inner = MAX - 2;
    let pattern = format!("^[^{space}{control}]([^{control}]{{0,{inner}}}[^{space}{control}])?$");
    schemars::json_schema!({
        "type": "string",
        "pattern": pattern,
        "description": format!("1 to {MAX} characters, no control character, no space around"),
    })
}

/// The schema of the permissions an interface asks for: `PERMISSIONS`, each once.
#[cfg(feature = "openapi")]
fn permissions(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "array", "items": {"enum": PERMISSIONS}, "uniqueItems": true})
}

fn is_identifier(text: &str) -> bool {
    (1..=40).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

fn is_label(text: &str, max: usize) -> bool {
    let chars = text.chars().count();
    text.trim() == text && (1..=max).contains(&chars) && !text.chars().any(char::is_control)
}

impl Interface {
    /// `allow_http`: whether a plain http entry page is accepted (the local stack only).
    pub fn validate(self, allow_http: bool) -> Result<Self, InvalidInterface> {
        let invalid = InvalidInterface;
        if !is_label(&self.title, 60) {
            return Err(invalid("interface.title must be 1 to 60 characters, without surrounding spaces".into()));
        }
        let entry_page = partner_url(&self.entry_page, allow_http)
            .ok_or_else(|| invalid("interface.entry_page must be an absolute https URL".into()))?
            .to_owned();
        if self.actions.is_empty() || self.actions.len() > 20 {
            return Err(invalid("interface.actions must list 1 to 20 actions".into()));
        }
        for (i, action) in self.actions.iter().enumerate() {
            if !is_identifier(&action.id) {
                return Err(invalid(format!(
                    "interface.actions[{i}].id must be 1 to 40 lower-case letters, digits, '_', '.' or '-'"
                )));
            }
            if !is_label(&action.title, 60) {
                return Err(invalid(format!("interface.actions[{i}].title must be 1 to 60 characters")));
            }
            if self.actions[..i].iter().any(|a| a.id == action.id) {
                return Err(invalid(format!("interface.actions[{i}].id {:?} is listed twice", action.id)));
            }
        }
        for (i, permission) in self.permissions.iter().enumerate() {
            if !PERMISSIONS.contains(&permission.as_str()) {
                return Err(invalid(format!(
                    "interface.permissions[{i}] {permission:?} is not one of {}",
                    PERMISSIONS.join(", ")
                )));
            }
            if self.permissions[..i].contains(permission) {
                return Err(invalid(format!("interface.permissions[{i}] {permission:?} is listed twice")));
            }
        }
        Ok(Interface { entry_page, ..self })
    }

    pub fn action(&self, id: &str) -> Option<&InterfaceAction> {
        self.actions.iter().find(|a| a.id == id)
    }

    pub fn may_charge(&self) -> bool {
        self.permissions.iter().any(|p| p == CHARGE_PERMISSION)
    }
}

/// Which rule an interface descriptor breaks, in words naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInterface(pub String);

impl From<InvalidInterface> for Problem {
    fn from(e: InvalidInterface) -> Self {
        Problem::new(catalogue::INVALID_INTERFACE, e.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiniApp {
    pub id: String,
    /// The merchant whose account the app's charges are paid into.
    pub owner_merchant_id: String,
    /// Where relayed requests go (`<server_url>/requests`) and outcomes (`<server_url>/outcomes`).
    pub server_url: String,
    pub status: MiniAppStatus,
    /// Names the current master key in signatures, so keys can rotate.
    pub key_id: String,
    /// The master key, envelope-encrypted by KMS.
    pub key_ciphertext: Vec<u8>,
    /// The key before the last rotation, while it is still honoured.
    pub previous_key: Option<PreviousKey>,
    pub interface: Interface,
    pub created_at: i64,
}

impl MiniApp {
    /// The owner string KMS binds the key to (its encryption context).
    pub fn key_owner(id: &str) -> String {
        format!("miniapp/{id}")
    }

    pub fn view(&self) -> MiniAppView {
        MiniAppView {
            id: self.id.clone(),
            owner_merchant_id: self.owner_merchant_id.clone(),
            server_url: self.server_url.clone(),
            status: self.status,
            key_id: self.key_id.clone(),
            interface: self.interface.clone(),
            created_at: self.created_at,
        }
    }
}

/// What an admin sees of a mini-app: everything but its key.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct MiniAppView {
    pub id: String,
    /// The merchant whose account the app's charges are paid into.
    pub owner_merchant_id: String,
    /// Where relayed requests go (`<server_url>/requests`) and outcomes (`<server_url>/outcomes`).
    pub server_url: String,
    pub status: MiniAppStatus,
    /// Names its current key in signatures.
    pub key_id: String,
    pub interface: Interface,
    pub created_at: i64,
}

impl KeyedParty for MiniApp {
    const ROTATE_ACTION: &'static str = "miniapp.rotate_key";
    const END_GRACE_ACTION: &'static str = "miniapp.end_key_grace";

    fn id(&self) -> &str {
        &self.id
    }

    fn stored_key(&self) -> StoredKey<'_> {
        StoredKey { key_id: &self.key_id, ciphertext: &self.key_ciphertext, previous: self.previous_key.as_ref() }
    }

    fn kms_owner(&self) -> String {
        MiniApp::key_owner(&self.id)
    }

    fn audit_resource(&self) -> String {
        format!("miniapp/{}", self.id)
    }

    fn location(&self) -> String {
        format!("/miniapps/{}", self.id)
    }
}

/// A registration request, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub owner_merchant_id: String,
    pub server_url: String,
    pub interface: Interface,
}

/// A registration's body.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", schemars(rename = "MiniAppRegistration"))]
#[serde(deny_unknown_fields)]
pub struct RegistrationJson {
    /// An active merchant, whose account the app's charges are paid into.
    #[cfg_attr(feature = "openapi", schemars(schema_with = "crate::openapi::id"))]
    owner_merchant_id: String,
    /// Where relayed requests go (`<server_url>/requests`) and outcomes (`<server_url>/outcomes`).
    #[cfg_attr(feature = "openapi", schemars(schema_with = "crate::admin::partner_url"))]
    server_url: String,
    interface: Interface,
}

impl Registration {
    /// `allow_http`: whether plain http URLs are accepted (the local stack only).
    pub fn parse(json: RegistrationJson, allow_http: bool) -> Result<Self, Problem> {
        let server_url = partner_url(&json.server_url, allow_http).ok_or_else(|| {
            Problem::new(
                catalogue::INVALID_SERVER_URL,
                "server_url must be an absolute https URL, e.g. https://tea.example/superpay",
            )
        })?;
        Ok(Registration {
            owner_merchant_id: crate::ids::check("owner_merchant_id", &json.owner_merchant_id)?.to_owned(),
            server_url: server_url.trim_end_matches('/').to_owned(),
            interface: json.interface.validate(allow_http)?,
        })
    }
}

pub fn unknown_miniapp(id: &str) -> Problem {
    Problem::new(catalogue::UNKNOWN_MINIAPP, format!("no mini-app {id:?}"))
}

/// Why an app cannot be opened or used: the problem, and the chat message a verification posts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static Code,
    pub text: String,
    /// Whose conversation the message belongs in: the app's, or the platform's for an unknown id.
    pub counterparty: Counterparty,
}

impl Refusal {
    pub fn problem(&self) -> Problem {
        Problem::new(self.code, self.text.clone())
    }

    pub fn message(&self, id: String, app_id: &str) -> NewMessage {
        NewMessage {
            id,
            kind: "miniapp.unavailable".into(),
            text: self.text.clone(),
            data: json!({ "app_id": app_id, "reason": self.code.code() }),
        }
    }
}

/// Whether `app` (looked up by `id`) may be opened and used now.
pub fn check_available(id: &str, app: Option<&MiniApp>) -> Result<(), Refusal> {
    let Some(app) = app else {
        return Err(Refusal {
            code: catalogue::UNKNOWN_MINIAPP,
            text: format!("There is no mini-app {id:?}. Check the link or code you opened it from."),
            counterparty: Counterparty::platform(),
        });
    };
    let title = &app.interface.title;
    let (code, text) = match app.status {
        MiniAppStatus::Active => return Ok(()),
        MiniAppStatus::Suspended => (
            catalogue::MINIAPP_SUSPENDED,
            format!("{title} is unavailable for now: the platform suspended it. Nothing was shared with it."),
        ),
        MiniAppStatus::Revoked => {
            (catalogue::MINIAPP_REVOKED, format!("{title} was removed from the platform and can no longer be opened."))
        }
    };
    Err(Refusal { code, text, counterparty: Counterparty::mini_app(&app.id) })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A valid interface but for its entry page's surrounding spaces (`validate` trims them).
    pub(in crate::miniapp) fn interface() -> Interface {
        Interface {
            title: "Tea Corner".into(),
            entry_page: " https://tea.example/app/index.html ".into(),
            actions: vec![InterfaceAction { id: "buy".into(), title: "Buy".into() }],
            permissions: vec!["wallet.charge".into()],
        }
    }

    fn app(status: MiniAppStatus) -> MiniApp {
        MiniApp {
            id: "a_1".into(),
            owner_merchant_id: "m_1".into(),
            server_url: "https://tea.example".into(),
            status,
            key_id: "a_1.k1".into(),
            key_ciphertext: vec![],
            previous_key: None,
            interface: interface().validate(false).unwrap(),
            created_at: 0,
        }
    }

    #[test]
    fn interfaces_are_validated() {
        assert_eq!(interface().validate(false).unwrap().entry_page, "https://tea.example/app/index.html");
        type Change = fn(&mut Interface);
        let cases: [(Change, &str); 8] = [
            (|i| i.title = String::new(), "title"),
            (|i| i.entry_page = "tea.example".into(), "entry_page"),
            (|i| i.entry_page = "http://tea.example/app".into(), "entry_page"),
            (|i| i.actions.clear(), "actions"),
            (|i| i.actions[0].id = "Buy Now".into(), "actions[0].id"),
            (|i| i.actions.push(i.actions[0].clone()), "listed twice"),
            (|i| i.permissions.push("contacts".into()), "not one of"),
            (|i| i.actions[0].title = " Buy".into(), "actions[0].title"),
        ];
        for (change, says) in cases {
            let mut bad = interface();
            change(&mut bad);
            let InvalidInterface(detail) = bad.validate(false).unwrap_err();
            assert!(detail.contains(says), "{detail} should mention {says}");
        }
    }

    #[test]
    fn only_active_apps_verify_and_each_refusal_says_why() {
        assert_eq!(check_available("a_1", Some(&app(MiniAppStatus::Active))), Ok(()));
        let unknown = check_available("a_x", None).unwrap_err();
        assert_eq!(unknown.code, catalogue::UNKNOWN_MINIAPP);
        assert_eq!(unknown.counterparty, Counterparty::platform());
        let suspended = check_available("a_1", Some(&app(MiniAppStatus::Suspended))).unwrap_err();
        assert_eq!(suspended.code, catalogue::MINIAPP_SUSPENDED);
        let revoked = check_available("a_1", Some(&app(MiniAppStatus::Revoked))).unwrap_err();
        assert_eq!(revoked.code, catalogue::MINIAPP_REVOKED);
        assert_eq!(revoked.counterparty, Counterparty::mini_app("a_1"));
        assert!(revoked.message("m".into(), "a_1").text.starts_with("Tea Corner was removed"));
    }
}
