//! IAM as the local stack enforces it: each function's `Policies` from `template.yaml`, checked on
//! every AWS call the function makes (by its proxy, `crate::aws_proxy`), so a permission the code
//! needs and the template lacks fails a test here instead of failing on AWS. `sam local` does not
//! do this.
//!
//! Understood, and nothing else (anything outside it is refused by name when the template is read):
//! - `Policies` as a list of inline policy documents (`- Statement: [...]`, optional `Version`);
//!   not SAM policy templates (`DynamoDBCrudPolicy: ...`) nor managed policy names;
//! - statements with `Effect: Allow`, `Action`, `Resource` (a string or a list; `*` and `?`
//!   wildcards, actions case-insensitive) and an optional `Condition` of `StringEquals` or
//!   `StringLike` on `kms:EncryptionContext:<key>`, or `ForAllValues:StringEquals` on
//!   `dynamodb:LeadingKeys` in a statement of `dynamodb:Query` alone (a query names one partition
//!   key, read from its key condition); no `Deny`, `NotAction`, `NotResource`;
//! - what SAM adds on its own: a function with an `SQS` event gets the managed policy
//!   AWSLambdaSQSQueueExecutionRole (`sqs:ReceiveMessage`, `sqs:DeleteMessage`,
//!   `sqs:GetQueueAttributes` on `*`).
//!
//! What each call needs, as AWS authorizes it:
//! - DynamoDB: `dynamodb:<Operation>` on the table's ARN, or on `table/<name>/index/<index>` for a
//!   Query or Scan of an index; `BatchGetItem`/`BatchWriteItem` on each table they name; each item
//!   of a `TransactWriteItems` needs the action of its kind (`PutItem`, `UpdateItem`,
//!   `DeleteItem`, `ConditionCheckItem`) and each of a `TransactGetItems` needs `GetItem`.
//! - SQS: `sqs:<Operation>` on the queue's ARN; a batch call needs its single action
//!   (`SendMessageBatch` needs `sqs:SendMessage`).
//! - KMS: `kms:<Operation>` on the key's ARN, with the request's encryption context as the
//!   `kms:EncryptionContext:<key>` condition keys. Locally a `Decrypt` must name its `KeyId`
//!   (AWS recommends it; the key cannot be read from moto's ciphertext otherwise).

use std::collections::BTreeMap;

use serde_json::Value as Json;
use serde_yaml::Value;

use crate::template::{ACCOUNT, REGION, TemplateError};

const SUBSET: &str = "inline policy statements: Effect Allow, Action, Resource, Condition StringEquals/StringLike \
     on kms:EncryptionContext:*, ForAllValues:StringEquals on dynamodb:LeadingKeys for dynamodb:Query alone \
     (see infra/local/src/iam.rs)";

/// A function's permissions: what its role's policies allow.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policy {
    statements: Vec<Statement>,
}

#[derive(Debug, Clone, PartialEq)]
struct Statement {
    actions: Vec<String>,
    resources: Vec<String>,
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq)]
struct Condition {
    like: bool,
    /// `ForAllValues:`: every value the request has for the key is among `values` (none is, too).
    for_all: bool,
    key: String,
    values: Vec<String>,
}

/// The condition key of the partition key values a DynamoDB call names.
const LEADING_KEYS: &str = "dynamodb:LeadingKeys";

/// One permission a call needs: an action on a resource, with the request's condition keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub action: String,
    pub resource: String,
    pub context: BTreeMap<String, String>,
}

impl Need {
    fn new(action: String, resource: String) -> Self {
        Need { action, resource, context: BTreeMap::new() }
    }
}

fn strings(value: &Value, what: &str) -> Result<Vec<String>, TemplateError> {
    let one = |v: &Value| {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| TemplateError::Invalid(format!("{what} must be a string or a list of strings")))
    };
    match value {
        Value::Sequence(items) => items.iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

impl Policy {
    /// Reads a function's resolved `Policies`; `sqs_event` adds what SAM attaches for an SQS event.
    pub fn read(function: &str, policies: Option<&Value>, sqs_event: bool) -> Result<Self, TemplateError> {
        let mut statements = Vec::new();
        let documents = match policies {
            None => vec![],
            Some(Value::Sequence(documents)) => documents.iter().collect(),
            Some(other) => vec![other],
        };
        for (i, document) in documents.into_iter().enumerate() {
            let what = format!("{function}.Policies[{i}]");
            let Some(map) = document.as_mapping() else {
                return Err(TemplateError::Unsupported(format!("{what}: a managed policy by name"), SUBSET));
            };
            for key in map.keys().filter_map(Value::as_str) {
                if key != "Statement" && key != "Version" {
                    return Err(TemplateError::Unsupported(format!("{what}: {key}"), SUBSET));
                }
            }
            let list = match document.get("Statement") {
                Some(Value::Sequence(list)) => list.clone(),
                Some(one @ Value::Mapping(_)) => vec![one.clone()],
                _ => return Err(TemplateError::Invalid(format!("{what}.Statement must be a list of statements"))),
            };
            for (j, statement) in list.iter().enumerate() {
                statements.push(Statement::read(&format!("{what}.Statement[{j}]"), statement)?);
            }
        }
        if sqs_event {
            statements.push(Statement {
                actions: ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"].map(Into::into).into(),
                resources: vec!["*".into()],
                conditions: vec![],
            });
        }
        Ok(Policy { statements })
    }

    pub fn allows(&self, need: &Need) -> bool {
        self.statements.iter().any(|s| s.allows(need))
    }
}

impl Statement {
    fn read(what: &str, statement: &Value) -> Result<Self, TemplateError> {
        for key in statement.as_mapping().into_iter().flat_map(|m| m.keys()).filter_map(Value::as_str) {
            if !["Effect", "Action", "Resource", "Condition", "Sid"].contains(&key) {
                return Err(TemplateError::Unsupported(format!("{what}.{key}"), SUBSET));
            }
        }
        match statement.get("Effect").and_then(Value::as_str) {
            Some("Allow") => {}
            Some(effect) => return Err(TemplateError::Unsupported(format!("{what}: Effect {effect}"), SUBSET)),
            None => return Err(TemplateError::Invalid(format!("{what} has no Effect"))),
        }
        let field = |name: &str| {
            statement
                .get(name)
                .ok_or_else(|| TemplateError::Invalid(format!("{what} has no {name}")))
                .and_then(|v| strings(v, &format!("{what}.{name}")))
        };
        let mut conditions = Vec::new();
        for (operator, tests) in statement.get("Condition").and_then(Value::as_mapping).into_iter().flatten() {
            let operator = operator.as_str().unwrap_or_default();
            let (like, for_all) = match operator {
                "StringEquals" => (false, false),
                "StringLike" => (true, false),
                "ForAllValues:StringEquals" => (false, true),
                other => {
                    return Err(TemplateError::Unsupported(format!("{what}.Condition operator {other}"), SUBSET));
                }
            };
            for (key, values) in tests.as_mapping().into_iter().flatten() {
                let key = key.as_str().unwrap_or_default();
                let understood = if for_all {
                    // On AWS a call with no leading key (a Scan) passes ForAllValues; this proxy reads
                    // the leading key of queries alone, so only a query's statement may carry it.
                    key == LEADING_KEYS && field("Action")?.iter().all(|a| a.eq_ignore_ascii_case("dynamodb:Query"))
                } else {
                    key.starts_with("kms:EncryptionContext:")
                };
                if !understood {
                    return Err(TemplateError::Unsupported(format!("{what}.Condition {operator} {key}"), SUBSET));
                }
                let values = strings(values, &format!("{what}.Condition.{operator}.{key}"))?;
                conditions.push(Condition { like, for_all, key: key.to_owned(), values });
            }
        }
        Ok(Statement { actions: field("Action")?, resources: field("Resource")?, conditions })
    }

    fn allows(&self, need: &Need) -> bool {
        self.actions.iter().any(|a| matches(&a.to_ascii_lowercase(), &need.action.to_ascii_lowercase()))
            && self.resources.iter().any(|r| matches(r, &need.resource))
            && self.conditions.iter().all(|c| c.holds(&need.context))
    }
}

impl Condition {
    /// Condition keys are case-insensitive; an absent key never satisfies StringEquals/StringLike,
    /// and always satisfies ForAllValues (as on AWS).
    fn holds(&self, context: &BTreeMap<String, String>) -> bool {
        let value = context.iter().find(|(k, _)| k.eq_ignore_ascii_case(&self.key)).map(|(_, v)| v);
        let allowed = |v: &String| self.values.iter().any(|p| if self.like { matches(p, v) } else { p == v });
        match value {
            None => self.for_all,
            Some(v) => allowed(v),
        }
    }
}

/// IAM's wildcard match: `*` any run of characters, `?` any one character.
fn matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn table_arn(name: &str) -> String {
    if name.starts_with("arn:") { name.to_owned() } else { format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}") }
}

/// The partition key value a query names, from its key condition: the `<name> = :value` clause
/// on its table's partition key (`partition_keys`: table name to attribute). Empty, which no
/// policy names, when it cannot be read: a query of an index, of an unknown table, or a key
/// condition of another form (`OR`, a function, a comparison).
fn leading_key(query: &Json, partition_keys: &BTreeMap<String, String>) -> String {
    let table = query["TableName"].as_str().unwrap_or_default();
    let table = table.rsplit('/').next().unwrap_or(table);
    let key = partition_keys.get(table).filter(|_| query.get("IndexName").is_none());
    let condition = query["KeyConditionExpression"].as_str().unwrap_or_default().replace(['(', ')'], " ");
    let words: Vec<&str> = condition.split_whitespace().collect();
    let value = words.split(|w| w.eq_ignore_ascii_case("and")).find_map(|clause| {
        let (name, value) = clause.concat().split_once('=').map(|(n, v)| (n.to_owned(), v.to_owned()))?;
        let name =
            if name.starts_with('#') { query["ExpressionAttributeNames"][&name].as_str()?.to_owned() } else { name };
        let value = &query["ExpressionAttributeValues"][&value];
        (Some(&name) == key).then(|| value["S"].as_str().or(value["N"].as_str()).map(str::to_owned)).flatten()
    });
    value.unwrap_or_default()
}

/// The permissions one AWS call needs: its `X-Amz-Target` and JSON body (and the tables' partition
/// keys, by table name). An error says why the call is outside what the local stack can check; the
/// proxy refuses such calls.
pub fn needs(target: &str, body: &[u8], partition_keys: &BTreeMap<String, String>) -> Result<Vec<Need>, String> {
    let json: Json = serde_json::from_slice(body).unwrap_or(Json::Null);
    let text = |v: &Json| v.as_str().map(str::to_owned);
    if let Some(operation) = target.strip_prefix("DynamoDB_20120810.") {
        let action = |op: &str| format!("dynamodb:{op}");
        return Ok(match operation {
            "TransactWriteItems" | "TransactGetItems" => {
                let mut needs = Vec::new();
                for item in json["TransactItems"].as_array().into_iter().flatten() {
                    for (kind, op) in [
                        ("Put", "PutItem"),
                        ("Update", "UpdateItem"),
                        ("Delete", "DeleteItem"),
                        ("ConditionCheck", "ConditionCheckItem"),
                        ("Get", "GetItem"),
                    ] {
                        if let Some(table) = text(&item[kind]["TableName"]) {
                            needs.push(Need::new(action(op), table_arn(&table)));
                        }
                    }
                }
                needs
            }
            "BatchGetItem" | "BatchWriteItem" => json["RequestItems"]
                .as_object()
                .into_iter()
                .flat_map(|tables| tables.keys())
                .map(|table| Need::new(action(operation), table_arn(table)))
                .collect(),
            _ => {
                let resource = match (text(&json["TableName"]), text(&json["IndexName"])) {
                    (Some(table), Some(index)) => format!("{}/index/{index}", table_arn(&table)),
                    (Some(table), None) => table_arn(&table),
                    (None, _) => "*".to_owned(),
                };
                let mut need = Need::new(action(operation), resource);
                if operation == "Query" {
                    need.context.insert(LEADING_KEYS.to_owned(), leading_key(&json, partition_keys));
                }
                vec![need]
            }
        });
    }
    if let Some(operation) = target.strip_prefix("AmazonSQS.") {
        let single = operation.strip_suffix("Batch").unwrap_or(operation);
        let queue = text(&json["QueueUrl"])
            .and_then(|url| url.rsplit('/').next().map(str::to_owned))
            .or_else(|| text(&json["QueueName"]));
        let resource = queue.map_or_else(|| "*".to_owned(), |q| format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{q}"));
        return Ok(vec![Need::new(format!("sqs:{single}"), resource)]);
    }
    if let Some(operation) = target.strip_prefix("TrentService.") {
        let resource = match text(&json["KeyId"]) {
            Some(key) if key.starts_with("arn:") => key,
            Some(key) if key.starts_with("alias/") => {
                return Err(format!("kms:{operation} names the alias {key}: locally name keys by id or ARN"));
            }
            Some(key) => format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{key}"),
            None if operation == "Decrypt" => {
                return Err("kms:Decrypt without a KeyId: locally name the key, as AWS recommends".into());
            }
            None => "*".to_owned(),
        };
        let mut need = Need::new(format!("kms:{operation}"), resource);
        for (key, value) in json["EncryptionContext"].as_object().into_iter().flatten() {
            need.context.insert(format!("kms:EncryptionContext:{key}"), value.as_str().unwrap_or_default().to_owned());
        }
        return Ok(vec![need]);
    }
    Err(format!("a call with X-Amz-Target {target:?}: only DynamoDB, SQS (JSON protocol) and KMS are understood"))
}

/// The error AWS answers a call that no policy allows, in the shape of the service's JSON protocol.
pub fn access_denied(function: &str, need: &Need) -> (u16, String) {
    let message = format!(
        "User: arn:aws:sts::{ACCOUNT}:assumed-role/{function}Role/{function} is not authorized to perform: {} on resource: {} because no identity-based policy allows the {} action",
        need.action, need.resource, need.action
    );
    let kind = if need.action.starts_with("dynamodb:") {
        "com.amazonaws.dynamodb.v20120810#AccessDeniedException"
    } else {
        "AccessDeniedException"
    };
    (400, serde_json::json!({ "__type": kind, "message": message }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Result<Policy, TemplateError> {
        let value: Value = serde_yaml::from_str(yaml).expect("yaml");
        Policy::read("F", Some(&value), false)
    }

    const TABLE: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/s-Ledger";
    const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/k-1";

    fn need(action: &str, resource: &str) -> Need {
        Need::new(action.into(), resource.into())
    }

    #[test]
    fn wildcards_match_as_iam_does() {
        assert!(matches("dynamodb:*", "dynamodb:GetItem"));
        assert!(matches("arn:aws:sqs:*:*:s-*", "arn:aws:sqs:us-east-1:1:s-Q"));
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "ac"));
        assert!(!matches("dynamodb:Get*", "dynamodb:PutItem"));
        assert!(matches("*", ""));
        assert!(!matches("table/x", "table/x/index/y"));
    }

    #[test]
    fn a_statement_allows_its_actions_on_its_resources_only() {
        let p = policy(&format!(
            "- Statement:\n  - Effect: Allow\n    Action: [dynamodb:GetItem, 'dynamodb:Put*']\n    Resource: {TABLE}"
        ))
        .unwrap();
        assert!(p.allows(&need("dynamodb:GetItem", TABLE)));
        assert!(p.allows(&need("DynamoDB:putitem", TABLE)), "actions are case-insensitive");
        assert!(!p.allows(&need("dynamodb:UpdateItem", TABLE)));
        assert!(!p.allows(&need("dynamodb:GetItem", &format!("{TABLE}-Other"))));
        assert!(!p.allows(&need("dynamodb:GetItem", &format!("{TABLE}/index/byUser"))), "an index is its own resource");
        assert!(!Policy::default().allows(&need("dynamodb:GetItem", TABLE)), "no policy allows nothing");
    }

    #[test]
    fn encryption_context_conditions_are_checked() {
        let p = policy(&format!(
            "- Statement:\n  - Effect: Allow\n    Action: kms:Decrypt\n    Resource: {KEY}\n    Condition:\n      StringLike:\n        kms:EncryptionContext:party: ['merchant/*', 'terminal/*']"
        ))
        .unwrap();
        let mut decrypt = need("kms:Decrypt", KEY);
        assert!(!p.allows(&decrypt), "no context, no match");
        decrypt.context.insert("kms:EncryptionContext:party".into(), "merchant/m_1".into());
        assert!(p.allows(&decrypt));
        decrypt.context.insert("kms:EncryptionContext:party".into(), "miniapp/a_1".into());
        assert!(!p.allows(&decrypt));
    }

    #[test]
    fn a_query_is_held_to_its_leading_keys() {
        let table = "arn:aws:dynamodb:us-east-1:123456789012:table/s-Config";
        let p = policy(&format!(
            "- Statement:\n  - Effect: Allow\n    Action: [dynamodb:Query]\n    Resource: {table}\n    Condition:\n      ForAllValues:StringEquals:\n        dynamodb:LeadingKeys: [error-flows]"
        ))
        .unwrap();
        let keys = BTreeMap::from([("s-Config".to_owned(), "group".to_owned())]);
        let query = |group: &str, expression: &str| {
            let body = serde_json::json!({
                "TableName": "s-Config", "KeyConditionExpression": expression,
                "ExpressionAttributeNames": {"#group": "group"}, "ExpressionAttributeValues": {":group": {"S": group}},
            });
            needs("DynamoDB_20120810.Query", body.to_string().as_bytes(), &keys).unwrap().remove(0)
        };
        assert!(p.allows(&query("error-flows", "#group = :group")));
        assert!(!p.allows(&query("payment-ui", "#group = :group")));
        assert!(!p.allows(&query("error-flows", "#group > :group")), "a key condition it cannot read names nothing");
        assert!(!p.allows(&query("error-flows", "begins_with(#group, :group)")));
        assert!(p.allows(&query("error-flows", "(#group = :group)")), "as AWS reads it");
        assert!(!p.allows(&query("payment-ui", "(#group = :group) AND #version > :group")));
        assert!(!p.allows(&need("dynamodb:GetItem", table)));
        // On AWS a call with no leading key passes ForAllValues: only a query, which always has one, may carry it.
        for statement in ["Action: [dynamodb:Query, dynamodb:GetItem]", "Action: [dynamodb:Scan]"] {
            let refused = policy(&format!(
                "- Statement:\n  - Effect: Allow\n    {statement}\n    Resource: {table}\n    Condition:\n      ForAllValues:StringEquals:\n        dynamodb:LeadingKeys: [error-flows]"
            ));
            assert!(matches!(refused, Err(TemplateError::Unsupported(..))), "{statement}");
        }
    }

    #[test]
    fn sqs_event_sources_get_what_sam_attaches() {
        let p = Policy::read("F", None, true).unwrap();
        assert!(p.allows(&need("sqs:DeleteMessage", "arn:aws:sqs:us-east-1:123456789012:q")));
        assert!(!p.allows(&need("sqs:SendMessage", "arn:aws:sqs:us-east-1:123456789012:q")));
    }

    #[test]
    fn what_it_cannot_check_is_refused_by_name() {
        for (yaml, named) in [
            ("- DynamoDBCrudPolicy: {TableName: t}", "DynamoDBCrudPolicy"),
            ("- AWSLambdaExecute", "managed policy"),
            ("- Statement: [{Effect: Deny, Action: '*', Resource: '*'}]", "Deny"),
            ("- Statement: [{Effect: Allow, NotAction: 's3:*', Resource: '*'}]", "NotAction"),
            (
                "- Statement: [{Effect: Allow, Action: '*', Resource: '*', Condition: {IpAddress: {aws:SourceIp: x}}}]",
                "IpAddress",
            ),
            (
                "- Statement: [{Effect: Allow, Action: '*', Resource: '*', Condition: {StringEquals: {aws:username: x}}}]",
                "aws:username",
            ),
        ] {
            let error = policy(yaml).expect_err(yaml).to_string();
            assert!(error.contains(named), "{error}");
        }
    }

    #[test]
    fn each_call_needs_what_aws_authorizes() {
        let body = br#"{"TransactItems":[
            {"Put":{"TableName":"s-Ledger"}},{"Update":{"TableName":"s-Ledger"}},
            {"ConditionCheck":{"TableName":"s-Devices"}},{"Delete":{"TableName":"s-Outbox"}}]}"#;
        let actions: Vec<_> = needs("DynamoDB_20120810.TransactWriteItems", body, &BTreeMap::new())
            .unwrap()
            .into_iter()
            .map(|n| format!("{} {}", n.action, n.resource.rsplit('/').next().unwrap_or_default()))
            .collect();
        assert_eq!(
            actions,
            [
                "dynamodb:PutItem s-Ledger",
                "dynamodb:UpdateItem s-Ledger",
                "dynamodb:ConditionCheckItem s-Devices",
                "dynamodb:DeleteItem s-Outbox"
            ]
        );
        let query =
            needs("DynamoDB_20120810.Query", br#"{"TableName":"s-Ledger","IndexName":"byUser"}"#, &BTreeMap::new())
                .unwrap();
        assert_eq!(query[0].resource, format!("{TABLE}/index/byUser"));
        let batch =
            needs("DynamoDB_20120810.BatchGetItem", br#"{"RequestItems":{"s-Ledger":{"Keys":[]}}}"#, &BTreeMap::new())
                .unwrap();
        assert_eq!(batch, vec![need("dynamodb:BatchGetItem", TABLE)]);
        let send = needs(
            "AmazonSQS.SendMessageBatch",
            br#"{"QueueUrl":"http://127.0.0.1:5000/123456789012/s-Q"}"#,
            &BTreeMap::new(),
        );
        assert_eq!(send.unwrap(), vec![need("sqs:SendMessage", "arn:aws:sqs:us-east-1:123456789012:s-Q")]);
        let decrypt = needs(
            "TrentService.Decrypt",
            br#"{"KeyId":"k-1","EncryptionContext":{"party":"merchant/m_1"}}"#,
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(decrypt[0].resource, KEY);
        assert_eq!(decrypt[0].context["kms:EncryptionContext:party"], "merchant/m_1");
        assert!(needs("TrentService.Decrypt", b"{}", &BTreeMap::new()).is_err(), "the key must be named");
        assert!(needs("AmazonS3.PutObject", b"{}", &BTreeMap::new()).is_err());
    }
}
