//! Config diffing (capability 3): versioned parameter groups. A client sends the version it holds
//! and gets nothing when it is current, or the latest version with a JSON Merge Patch from its
//! version (or the full data when that is smaller or its version left the history).
//!
//! The rules here are pure; `store` persists versions and `api` maps HTTP to these rules.

pub mod api;
pub mod held;
pub mod merge_patch;
pub mod store;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::Problem;
use crate::problem::catalogue;

/// Versions kept per group. Publishing version N deletes version N - HISTORY in the same
/// transaction; a client older than that gets the full data instead of a patch.
pub const HISTORY: u64 = 50;
/// The largest parameter group, as compact JSON. Well under DynamoDB's 400 KB item limit, and a
/// size a phone can fetch on a poor network.
pub const MAX_PARAMETERS_BYTES: usize = 64 * 1024;

/// A group's name: 1 to 64 of `a-z`, `0-9` and `-`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct GroupName(#[cfg_attr(feature = "openapi", schemars(regex(pattern = r"^[a-z0-9][a-z0-9-]{0,63}$")))] String);

impl GroupName {
    pub fn parse(name: &str) -> Result<Self, ConfigError> {
        let valid = (1..=64).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-');
        if valid { Ok(GroupName(name.to_owned())) } else { Err(ConfigError::InvalidGroupName(name.to_owned())) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A group's parameters: a JSON object holding no `null` anywhere, at most `MAX_PARAMETERS_BYTES`.
/// Kept as the object's `Value`, lent to whoever reads it: a group is read whole on a cold
/// process's first problem (the error-flow table), where copying it costs CPU a 128 MB function has
/// little of.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Parameters(Value);

impl Parameters {
    pub fn parse(value: Value) -> Result<Self, ConfigError> {
        let Value::Object(map) = &value else {
            return Err(ConfigError::NotAnObject);
        };
        if let Some(pointer) = find_null(map, String::new()) {
            return Err(ConfigError::ContainsNull(pointer));
        }
        let size = value.to_string().len();
        if size > MAX_PARAMETERS_BYTES {
            return Err(ConfigError::TooLarge(size));
        }
        Ok(Parameters(value))
    }

    /// The parameters as the JSON object they are.
    pub fn as_value(&self) -> &Value {
        &self.0
    }
}

/// What `Parameters::parse` accepts, but for the size (JSON Schema cannot count a document's bytes).
#[cfg(feature = "openapi")]
impl schemars::JsonSchema for Parameters {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ConfigParameters".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let value = generator.subschema_for::<ParameterValue>();
        schemars::json_schema!({
            "description": format!("A JSON object holding no null anywhere, at most {MAX_PARAMETERS_BYTES} bytes as JSON."),
            "type": "object",
            "additionalProperties": value,
        })
    }
}

/// A value inside a group's parameters, for its schema only: any JSON but null, at any depth.
#[cfg(feature = "openapi")]
struct ParameterValue;

#[cfg(feature = "openapi")]
impl schemars::JsonSchema for ParameterValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ConfigValue".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let itself = generator.subschema_for::<Self>();
        schemars::json_schema!({
            "type": ["object", "array", "string", "number", "boolean"],
            "items": itself,
            "additionalProperties": itself,
        })
    }
}

/// The JSON Pointer (RFC 6901) of the first `null`, for an error message that shows where it is.
fn find_null(map: &Map<String, Value>, prefix: String) -> Option<String> {
    fn walk(value: &Value, path: String) -> Option<String> {
        match value {
            Value::Null => Some(path),
            Value::Object(map) => find_null(map, path),
            Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| walk(v, format!("{path}/{i}"))),
            _ => None,
        }
    }
    map.iter().find_map(|(key, value)| walk(value, format!("{prefix}/{}", key.replace('~', "~0").replace('/', "~1"))))
}

/// One published version of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupVersion {
    pub group: GroupName,
    pub version: u64,
    pub parameters: Parameters,
    pub published_at: i64,
    pub published_by: String,
}

/// What a client that holds `client_version` is told (`GET /config/{group}`'s 200 answer).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum FetchAnswer {
    /// The client holds the latest version (a request with If-None-Match is answered 304 instead).
    UpToDate {
        group: GroupName,
        version: u64,
        /// Always true: what tells this answer from the others.
        #[cfg_attr(feature = "openapi", schemars(extend("const" = true)))]
        up_to_date: bool,
    },
    /// The latest version as a JSON Merge Patch (RFC 7396) of the version it holds.
    Patch {
        group: GroupName,
        version: u64,
        /// The version the patch applies to: the one the client holds.
        base_version: u64,
        patch: Value,
    },
    /// The latest version whole: it holds none, or one no longer in the history, or a patch would
    /// be no smaller.
    Full { group: GroupName, version: u64, parameters: Parameters },
}

/// Which version a client says it holds: `?version=N`, or the ETag it got (`If-None-Match: "N"`).
/// Version 0 (or nothing) means "none yet".
pub fn client_version(query: Option<&str>, if_none_match: Option<&str>) -> Result<Option<u64>, ConfigError> {
    let from_query = query.map(parse_version).transpose()?;
    let from_etag = if_none_match.map(parse_etag).transpose()?;
    match (from_query, from_etag) {
        (Some(q), Some(e)) if q != e => Err(ConfigError::ConflictingVersions(q, e)),
        (q, e) => Ok(q.or(e).filter(|v| *v > 0)),
    }
}

fn parse_version(text: &str) -> Result<u64, ConfigError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConfigError::InvalidVersion(text.to_owned()));
    }
    text.parse().map_err(|_| ConfigError::InvalidVersion(text.to_owned()))
}

/// An entity tag as this API issues them: `"N"`; the weak form `W/"N"` is accepted too.
fn parse_etag(text: &str) -> Result<u64, ConfigError> {
    let trimmed = text.trim();
    let tag = trimmed.strip_prefix("W/").unwrap_or(trimmed);
    tag.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .ok_or_else(|| ConfigError::InvalidVersion(text.to_owned()))
        .and_then(parse_version)
}

pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// The answer for a client holding `client_version`, given the latest version and, when the store
/// still has it, the client's version (`base`).
pub fn answer(
    latest: &GroupVersion,
    client_version: Option<u64>,
    base: Option<&GroupVersion>,
) -> Result<FetchAnswer, ConfigError> {
    let full = || FetchAnswer::Full {
        group: latest.group.clone(),
        version: latest.version,
        parameters: latest.parameters.clone(),
    };
    let Some(held) = client_version else { return Ok(full()) };
    if held > latest.version {
        return Err(ConfigError::FutureVersion { held, latest: latest.version });
    }
    if held == latest.version {
        return Ok(FetchAnswer::UpToDate { group: latest.group.clone(), version: held, up_to_date: true });
    }
    let Some(base) = base.filter(|b| b.version == held) else { return Ok(full()) };
    let patch = merge_patch::diff(base.parameters.as_value(), latest.parameters.as_value());
    if patch.to_string().len() >= latest.parameters.as_value().to_string().len() {
        return Ok(full());
    }
    Ok(FetchAnswer::Patch { group: latest.group.clone(), version: latest.version, base_version: held, patch })
}

/// What a publish (or rollback) requires of the current version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// `If-Match: "N"`: replace version N, and only N.
    IfMatch(u64),
    /// `If-None-Match: *`: create the group; refuse if it exists.
    CreateOnly,
}

impl Precondition {
    pub fn parse(if_match: Option<&str>, if_none_match: Option<&str>) -> Result<Self, ConfigError> {
        match (if_match, if_none_match) {
            (Some(_), Some(_)) => Err(ConfigError::InvalidPrecondition("send If-Match or If-None-Match, not both")),
            (Some("*"), None) => Err(ConfigError::InvalidPrecondition(
                "If-Match: * would overwrite any version; name the version you read, e.g. If-Match: \"3\"",
            )),
            // If-Match compares strongly (RFC 9110): a weak tag never matches.
            (Some(tag), None) if tag.trim_start().starts_with("W/") => {
                Err(ConfigError::InvalidPrecondition("If-Match needs a strong ETag such as \"3\", not a weak W/ one"))
            }
            (Some(tag), None) => parse_etag(tag).map(Precondition::IfMatch),
            (None, Some("*")) => Ok(Precondition::CreateOnly),
            (None, Some(_)) => {
                Err(ConfigError::InvalidPrecondition("only If-None-Match: * is meaningful when publishing"))
            }
            (None, None) => Err(ConfigError::PreconditionRequired),
        }
    }
}

/// The version a publish creates, or why it may not.
pub fn next_version(group: &GroupName, current: Option<u64>, precondition: Precondition) -> Result<u64, ConfigError> {
    match (current, precondition) {
        (None, Precondition::CreateOnly) => Ok(1),
        (None, Precondition::IfMatch(_)) => Err(ConfigError::UnknownGroup(group.clone())),
        (Some(current), Precondition::CreateOnly) => Err(ConfigError::GroupExists { current }),
        (Some(current), Precondition::IfMatch(expected)) if expected == current => Ok(current + 1),
        (Some(current), Precondition::IfMatch(expected)) => Err(ConfigError::VersionConflict { expected, current }),
    }
}

/// The version that leaves the history when `new` is published.
pub fn pruned_by(new: u64) -> Option<u64> {
    new.checked_sub(HISTORY).filter(|v| *v > 0)
}

/// A rollback republishes an earlier version's parameters as a new version.
pub fn check_rollback(target: u64, current: u64) -> Result<(), ConfigError> {
    if target == 0 || target >= current {
        return Err(ConfigError::RollbackNotEarlier { target, current });
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("group name {0:?} is invalid: use 1 to 64 of a-z, 0-9 and '-'")]
    InvalidGroupName(String),
    #[error("no parameter group named {:?}", .0.as_str())]
    UnknownGroup(GroupName),
    #[error(
        "version {0:?} is not a version: versions are whole numbers from 0 up, sent as ?version=N or If-None-Match: \"N\""
    )]
    InvalidVersion(String),
    #[error("?version={0} and If-None-Match: \"{1}\" name different versions")]
    ConflictingVersions(u64, u64),
    #[error("version {held} does not exist yet: the latest is {latest}")]
    FutureVersion { held: u64, latest: u64 },
    #[error("parameters must be a JSON object")]
    NotAnObject,
    #[error("parameters may not hold null (at {0}): JSON Merge Patch uses null to delete; leave the key out instead")]
    ContainsNull(String),
    #[error("parameters are {0} bytes of JSON; the limit is {MAX_PARAMETERS_BYTES}")]
    TooLarge(usize),
    #[error(
        "publishing needs a precondition: If-Match: \"N\" with the version you read, or If-None-Match: * to create the group"
    )]
    PreconditionRequired,
    #[error("{0}")]
    InvalidPrecondition(&'static str),
    #[error("version {expected} is no longer current: version {current} was published since; fetch it and retry")]
    VersionConflict { expected: u64, current: u64 },
    #[error("the group already exists at version {current}; publish with If-Match: \"{current}\"")]
    GroupExists { current: u64 },
    #[error("cannot roll back to version {target}: it must be an earlier version than the current {current}")]
    RollbackNotEarlier { target: u64, current: u64 },
    #[error("version {0} is no longer in the history (the last {HISTORY} versions are kept)")]
    VersionNotInHistory(u64),
}

impl From<ConfigError> for Problem {
    fn from(e: ConfigError) -> Self {
        use ConfigError::*;
        let code = match &e {
            InvalidGroupName(_) => catalogue::INVALID_GROUP_NAME,
            UnknownGroup(_) => catalogue::UNKNOWN_GROUP,
            InvalidVersion(_) => catalogue::INVALID_VERSION,
            ConflictingVersions(..) => catalogue::CONFLICTING_VERSIONS,
            FutureVersion { .. } => catalogue::VERSION_FROM_FUTURE,
            NotAnObject => catalogue::PARAMETERS_NOT_OBJECT,
            ContainsNull(_) => catalogue::PARAMETERS_CONTAIN_NULL,
            TooLarge(_) => catalogue::PARAMETERS_TOO_LARGE,
            PreconditionRequired => catalogue::PRECONDITION_REQUIRED,
            InvalidPrecondition(_) => catalogue::INVALID_PRECONDITION,
            VersionConflict { .. } => catalogue::VERSION_CONFLICT,
            GroupExists { .. } => catalogue::GROUP_EXISTS,
            RollbackNotEarlier { .. } => catalogue::ROLLBACK_NOT_EARLIER,
            VersionNotInHistory(_) => catalogue::VERSION_NOT_IN_HISTORY,
        };
        let problem = Problem::new(code, e.to_string());
        match e {
            VersionConflict { current, .. } | GroupExists { current } => problem.with("current_version", current),
            FutureVersion { latest, .. } => problem.with("latest_version", latest),
            _ => problem,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn group(name: &str) -> GroupName {
        GroupName::parse(name).unwrap()
    }

    fn version(v: u64, params: Value) -> GroupVersion {
        GroupVersion {
            group: group("home"),
            version: v,
            parameters: Parameters::parse(params).unwrap(),
            published_at: 0,
            published_by: "admin".into(),
        }
    }

    #[test]
    fn group_names() {
        assert!(GroupName::parse("payment-ui").is_ok());
        for bad in ["", "-x", "Home", "a b", "a/b", &"a".repeat(65)] {
            assert!(matches!(GroupName::parse(bad), Err(ConfigError::InvalidGroupName(_))), "{bad:?}");
        }
    }

    #[test]
    fn parameters_must_be_a_null_free_object_of_bounded_size() {
        assert_eq!(Parameters::parse(json!([1])), Err(ConfigError::NotAnObject));
        assert_eq!(Parameters::parse(json!("x")), Err(ConfigError::NotAnObject));
        assert_eq!(
            Parameters::parse(json!({"a": {"b/c": [1, null]}})),
            Err(ConfigError::ContainsNull("/a/b~1c/1".into()))
        );
        let big = json!({"k": "x".repeat(MAX_PARAMETERS_BYTES)});
        assert!(matches!(Parameters::parse(big), Err(ConfigError::TooLarge(_))));
        assert!(Parameters::parse(json!({})).is_ok());
    }

    #[test]
    fn client_versions_from_query_or_etag() {
        assert_eq!(client_version(None, None), Ok(None));
        assert_eq!(client_version(Some("0"), None), Ok(None));
        assert_eq!(client_version(Some("7"), None), Ok(Some(7)));
        assert_eq!(client_version(None, Some("\"7\"")), Ok(Some(7)));
        assert_eq!(client_version(None, Some("W/\"7\"")), Ok(Some(7)));
        assert_eq!(client_version(Some("7"), Some("\"7\"")), Ok(Some(7)));
        assert_eq!(client_version(Some("7"), Some("\"6\"")), Err(ConfigError::ConflictingVersions(7, 6)));
        for bad in ["-1", "1.5", "x", "", "+3", "99999999999999999999999"] {
            assert_eq!(client_version(Some(bad), None), Err(ConfigError::InvalidVersion(bad.into())));
        }
        assert!(client_version(None, Some("7")).is_err());
    }

    #[test]
    fn answers() {
        let v1 = version(1, json!({"theme": "light", "limit": "100.00", "banner": "x".repeat(40)}));
        let v2 = version(2, json!({"theme": "dark", "limit": "100.00", "banner": "x".repeat(40)}));
        assert_eq!(
            answer(&v2, Some(2), None),
            Ok(FetchAnswer::UpToDate { group: group("home"), version: 2, up_to_date: true })
        );
        assert_eq!(answer(&v2, Some(3), None), Err(ConfigError::FutureVersion { held: 3, latest: 2 }));
        assert!(matches!(answer(&v2, None, None), Ok(FetchAnswer::Full { version: 2, .. })));
        assert_eq!(
            answer(&v2, Some(1), Some(&v1)),
            Ok(FetchAnswer::Patch {
                group: group("home"),
                version: 2,
                base_version: 1,
                patch: json!({"theme": "dark"})
            })
        );
        // The client's version left the history: full data.
        assert!(matches!(answer(&v2, Some(1), None), Ok(FetchAnswer::Full { .. })));
        // A patch no smaller than the data is not worth sending.
        let small1 = version(1, json!({"a": 1}));
        let small2 = version(2, json!({"b": 2}));
        assert!(matches!(answer(&small2, Some(1), Some(&small1)), Ok(FetchAnswer::Full { .. })));
    }

    #[test]
    fn an_up_to_date_answer_names_its_group_and_says_so() {
        let answer = answer(&version(2, json!({"theme": "dark"})), Some(2), None).unwrap();
        assert_eq!(serde_json::to_value(answer).unwrap(), json!({"group": "home", "version": 2, "up_to_date": true}));
    }

    #[test]
    fn publishing_is_compare_and_set() {
        let g = group("home");
        let p = |m: Option<&str>, n: Option<&str>| Precondition::parse(m, n);
        assert_eq!(p(None, None), Err(ConfigError::PreconditionRequired));
        assert!(p(Some("*"), None).is_err());
        assert!(p(Some("\"1\""), Some("*")).is_err());
        assert!(p(None, Some("\"1\"")).is_err());
        assert_eq!(p(Some("\"4\""), None), Ok(Precondition::IfMatch(4)));
        assert!(p(Some("W/\"4\""), None).is_err());
        assert_eq!(next_version(&g, None, Precondition::CreateOnly), Ok(1));
        assert_eq!(next_version(&g, None, Precondition::IfMatch(1)), Err(ConfigError::UnknownGroup(g.clone())));
        assert_eq!(next_version(&g, Some(3), Precondition::CreateOnly), Err(ConfigError::GroupExists { current: 3 }));
        assert_eq!(next_version(&g, Some(3), Precondition::IfMatch(3)), Ok(4));
        assert_eq!(
            next_version(&g, Some(4), Precondition::IfMatch(3)),
            Err(ConfigError::VersionConflict { expected: 3, current: 4 })
        );
        let problem = Problem::from(ConfigError::VersionConflict { expected: 3, current: 4 });
        assert_eq!((problem.status().as_u16(), problem.code), (412, "version_conflict"));
        assert_eq!(problem.extensions["current_version"], 4);
    }

    proptest::proptest! {
        /// Whatever the client holds, what it is served brings it exactly to the latest version.
        #[test]
        fn the_served_answer_always_yields_the_latest(
            old in merge_patch::tests::object(),
            new in merge_patch::tests::object(),
            held in 1u64..4,
            base_kept in proptest::bool::ANY,
        ) {
            let base = version(held, old.clone());
            let latest = version(4, new.clone());
            match answer(&latest, Some(held), base_kept.then_some(&base)).unwrap() {
                FetchAnswer::Patch { patch, base_version, version, .. } => {
                    proptest::prop_assert!(base_kept);
                    proptest::prop_assert_eq!((base_version, version), (held, 4));
                    proptest::prop_assert_eq!(merge_patch::apply(&old, &patch), new);
                }
                FetchAnswer::Full { parameters, version, .. } => {
                    proptest::prop_assert_eq!(version, 4);
                    proptest::prop_assert_eq!(parameters.as_value(), &new);
                }
                FetchAnswer::UpToDate { .. } => proptest::prop_assert!(false, "held {} of 4", held),
            }
        }
    }

    #[test]
    fn history_and_rollback_bounds() {
        assert_eq!(pruned_by(HISTORY), None);
        assert_eq!(pruned_by(HISTORY + 1), Some(1));
        assert!(check_rollback(2, 5).is_ok());
        assert!(check_rollback(5, 5).is_err());
        assert!(check_rollback(0, 5).is_err());
        assert!(check_rollback(6, 5).is_err());
    }
}
