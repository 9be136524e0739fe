//! Announcements on the home (config group `home-announcements`): what the operators want some
//! users to see, chosen by the one rules module over the client's platform and app version (sent as
//! request headers, `X-Superpay-Platform` and `X-Superpay-App-Version`) and a stable percentage of
//! users. First match wins; `"none"` (a rule's answer, or the default when it is left out, as a
//! config group holds no null) shows none. An announcement never outranks money at risk or
//! security (`super::Class`).
//!
//! ```json
//! {"announcements": [{"id": "update-9-1", "title": "Update the app", "body": "9.1 fixes sign-in.",
//!                     "url": "https://example.com/9.1", "expires_at": 1800000000}],
//!  "rules": [{"when": {"platform": "ios", "app_version": "9.0.0"}, "rollout": 50, "then": "update-9-1"}]}
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Action, Class, Element};
use crate::rules::RuleSet;

/// The config group that holds them.
pub const GROUP: &str = "home-announcements";
/// The answer that shows no announcement (no announcement may be called so).
pub const NONE: &str = "none";
/// What a title and a body may hold, in characters.
const MAX_TITLE: usize = 80;
const MAX_BODY: usize = 400;

/// One announcement as published.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announcement {
    pub id: String,
    pub title: String,
    pub body: String,
    /// Where its action leads (https).
    #[serde(default)]
    pub url: Option<String>,
    /// When it stops being shown.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupJson {
    announcements: Vec<Announcement>,
    rules: Value,
    #[serde(default)]
    default: Option<String>,
}

/// The published announcements and the rules that choose among them.
#[derive(Debug, Clone, PartialEq)]
pub struct Announcements {
    pub version: u64,
    by_id: BTreeMap<String, Announcement>,
    rules: RuleSet<String>,
}

/// Why a group is refused: what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnouncementsError {
    #[error("the home-announcements group is refused: {0}")]
    Invalid(String),
}

/// The facts a request gives: its platform and app version, as sent (unknown values match only
/// wildcards).
pub fn facts<'a>(platform: Option<&'a str>, app_version: Option<&'a str>) -> BTreeMap<&'static str, &'a str> {
    let mut facts = BTreeMap::new();
    if let Some(platform) = platform {
        facts.insert("platform", platform);
    }
    if let Some(version) = app_version {
        facts.insert("app_version", version);
    }
    facts
}

impl Announcements {
    /// None published: nobody sees one.
    pub fn none() -> Self {
        Announcements::parse(&json!({"announcements": [], "rules": []}), 0).expect("the empty group is valid (tests)")
    }

    /// A group's parameters, verified whole: each announcement's id follows the id rule and is
    /// named once, its title and body are short and show as themselves, its url is https; each rule
    /// and the default name a published announcement or none.
    pub fn parse(json: &Value, version: u64) -> Result<Self, AnnouncementsError> {
        let invalid = AnnouncementsError::Invalid;
        let group: GroupJson = serde_json::from_value(json.clone()).map_err(|e| invalid(e.to_string()))?;
        let mut by_id = BTreeMap::new();
        for announcement in group.announcements {
            let id = announcement.id.clone();
            if !crate::ids::is_valid(&id) || id == NONE {
                return Err(invalid(format!(
                    "announcement id {id:?} is not an id (letters, digits, - _ .; not \"none\")"
                )));
            }
            let shows = |text: &str| text.chars().all(crate::text::shows_as_itself);
            if announcement.title.is_empty()
                || announcement.title.chars().count() > MAX_TITLE
                || !shows(&announcement.title)
            {
                return Err(invalid(format!("announcement {id}: its title is 1 to {MAX_TITLE} visible characters")));
            }
            if announcement.body.chars().count() > MAX_BODY || !shows(&announcement.body) {
                return Err(invalid(format!("announcement {id}: its body is at most {MAX_BODY} visible characters")));
            }
            if announcement.url.as_ref().is_some_and(|url| !url.starts_with("https://")) {
                return Err(invalid(format!("announcement {id}: its url is https")));
            }
            if by_id.insert(id.clone(), announcement).is_some() {
                return Err(invalid(format!("announcement {id} is named twice")));
            }
        }
        let default = group.default.unwrap_or_else(|| NONE.to_owned());
        let rules: RuleSet<String> = RuleSet::parse(
            &json!({"facts": ["platform", "app_version"], "rules": group.rules, "default": default}),
            GROUP,
        )
        // The admin writes `rules` and `default` only: say what those may hold.
        .map_err(|e| {
            invalid(format!(
                "{e} (a rule's `when` may name `platform` and `app_version`; its `then`, and the default, is a published announcement's id or \"none\")"
            ))
        })?;
        let unknown = |id: &&String| *id != NONE && !by_id.contains_key(*id);
        if let Some(id) = rules.rules.iter().map(|r| &r.then).find(unknown) {
            return Err(invalid(format!("a rule names announcement {id:?}, which is not published")));
        }
        if unknown(&&rules.default) {
            return Err(invalid(format!("the default names announcement {:?}, which is not published", rules.default)));
        }
        Ok(Announcements { version, by_id, rules })
    }

    /// Whether announcement `id` is published.
    pub fn publishes(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// The announcement for a request's `facts` and `user`, as a home element (none when the
    /// rules give none, or it expired).
    pub fn for_user(&self, facts: &BTreeMap<&'static str, &str>, user: &str, now: i64) -> Option<Element> {
        let (chosen, rule) = self.rules.decide(facts, user);
        let announcement = self.by_id.get(chosen)?;
        if announcement.expires_at.is_some_and(|at| now >= at) {
            return None;
        }
        let rule = match rule {
            Some(index) => format!("{GROUP} version {} rule {index}", self.version),
            None => format!("{GROUP} version {} default", self.version),
        };
        Some(Element {
            id: format!("announcement:{}", announcement.id),
            kind: "announcement".into(),
            class: Class::Announcement,
            reason: announcement.title.clone(),
            data: json!({"title": announcement.title, "body": announcement.body}),
            actions: announcement.url.iter().map(|url| Action::open("open", url.clone())).collect(),
            deadline: None,
            expires_at: announcement.expires_at,
            at: 0,
            critical: false,
            explain: json!({"rule": rule, "inputs": facts}),
        })
    }
}

/// Validates the parameters of the `home-announcements` group (the config function's publish check).
pub fn validate_group(parameters: &Value) -> Result<(), crate::Problem> {
    Announcements::parse(parameters, 0)
        .map(drop)
        .map_err(|e| crate::Problem::new(crate::problem::catalogue::HOME_ANNOUNCEMENTS_INVALID, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> Value {
        json!({
            "announcements": [
                {"id": "update-9-1", "title": "Update the app", "body": "9.1 fixes sign-in.",
                 "url": "https://example.com/9.1", "expires_at": 1000},
                {"id": "welcome", "title": "Welcome", "body": ""}],
            "rules": [{"when": {"platform": "ios", "app_version": "9.0.0"}, "then": "update-9-1"},
                      {"when": {"platform": "ios"}, "then": "none"},
                      {"when": {"platform": "android"}, "rollout": 0, "then": "welcome"}]})
    }

    #[test]
    fn the_platform_and_version_choose_and_another_platform_sees_none() {
        let set = Announcements::parse(&group(), 3).unwrap();
        let ios = set.for_user(&facts(Some("ios"), Some("9.0.0")), "u", 10).unwrap();
        assert_eq!((ios.id.as_str(), ios.class, ios.critical), ("announcement:update-9-1", Class::Announcement, false));
        assert_eq!(ios.actions, vec![Action::open("open", "https://example.com/9.1")]);
        assert_eq!(ios.explain["rule"], "home-announcements version 3 rule 0");
        assert_eq!(ios.explain["inputs"], json!({"app_version": "9.0.0", "platform": "ios"}));
        assert!(set.for_user(&facts(Some("ios"), Some("9.1.0")), "u", 10).is_none());
        assert!(set.for_user(&facts(Some("android"), Some("9.0.0")), "u", 10).is_none(), "staged at 0 %");
        assert!(set.for_user(&facts(None, None), "u", 10).is_none());
        assert!(set.for_user(&facts(Some("ios"), Some("9.0.0")), "u", 1000).is_none(), "expired");
        assert!(Announcements::none().for_user(&facts(Some("ios"), None), "u", 0).is_none());
    }

    #[test]
    fn a_group_that_names_what_is_not_published_or_shows_what_is_not_text_is_refused() {
        let mut unknown = group();
        unknown["default"] = json!("nothing");
        let mut invisible = group();
        invisible["announcements"][1]["title"] = json!("Wel\u{202e}come");
        let mut http = group();
        http["announcements"][0]["url"] = json!("http://example.com");
        let mut twice = group();
        twice["announcements"][1]["id"] = json!("update-9-1");
        let mut country = group();
        country["rules"][0]["when"] = json!({"country": "us"});
        let cases = [
            (unknown, "the default names announcement \"nothing\", which is not published"),
            (invisible, "visible"),
            (http, "https"),
            (twice, "twice"),
            (country, "may name `platform` and `app_version`"),
        ];
        for (bad, says) in cases {
            let error = Announcements::parse(&bad, 1).unwrap_err().to_string();
            assert!(error.contains(says), "{error}");
            assert!(validate_group(&bad).is_err());
        }
        assert!(validate_group(&group()).is_ok());
    }
}
