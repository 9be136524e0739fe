//! The intrinsics `!Ref`, `!GetAtt`, `!Sub` (and their `Ref` / `Fn::GetAtt` / `Fn::Sub` long forms),
//! and what each resource's name, ARN and URL are locally.

use std::collections::{HashMap, HashSet};

use serde_yaml::Value;
use serde_yaml::value::TaggedValue;

use super::values::scalar;
use super::{TemplateError, invalid};

pub const REGION: &str = "us-east-1";
/// The account id moto uses; local ARNs and queue URLs carry it.
pub const ACCOUNT: &str = "123456789012";

/// What `!Ref` and `!GetAtt` of each resource stand for locally.
pub trait Naming {
    fn queue_url(&self, name: &str) -> String;
    fn key_id(&self, logical_id: &str) -> Option<String>;
}

/// Naming for reading the template's shape without a running stack (binaries, authorizers).
pub struct Unresolved;

impl Naming for Unresolved {
    fn queue_url(&self, name: &str) -> String {
        format!("unresolved:{name}")
    }

    fn key_id(&self, logical_id: &str) -> Option<String> {
        Some(format!("unresolved:{logical_id}"))
    }
}

pub(super) struct Resolver<'a> {
    pub(super) parameters: &'a HashMap<String, String>,
    pub(super) kinds: &'a HashMap<&'a str, &'a str>,
    pub(super) stack: &'a str,
    pub(super) naming: &'a dyn Naming,
    pub(super) fifo_queues: &'a HashSet<&'a str>,
}

impl Resolver<'_> {
    /// Replaces every intrinsic in `value` by the string it stands for locally.
    pub(super) fn eval(&self, value: &Value) -> Result<Value, TemplateError> {
        Ok(match value {
            Value::Tagged(tagged) => Value::String(self.intrinsic(tagged)?),
            Value::Mapping(map)
                if map.len() == 1 && map.keys().next().and_then(Value::as_str).is_some_and(is_long_form) =>
            {
                let (name, argument) = map.iter().next().expect("one entry");
                let tag = name.as_str().unwrap_or_default().trim_start_matches("Fn::");
                let argument = match (tag, argument) {
                    ("GetAtt", Value::Sequence(parts)) => {
                        Value::String(parts.iter().map(scalar).collect::<Result<Vec<_>, _>>()?.join("."))
                    }
                    _ => argument.clone(),
                };
                Value::String(self.intrinsic(&TaggedValue { tag: serde_yaml::value::Tag::new(tag), value: argument })?)
            }
            Value::Mapping(map) => {
                let mut out = serde_yaml::Mapping::new();
                for (k, v) in map {
                    out.insert(k.clone(), self.eval(v)?);
                }
                Value::Mapping(out)
            }
            Value::Sequence(items) => Value::Sequence(items.iter().map(|v| self.eval(v)).collect::<Result<_, _>>()?),
            other => other.clone(),
        })
    }

    fn intrinsic(&self, tagged: &TaggedValue) -> Result<String, TemplateError> {
        let tag = tagged.tag.to_string();
        let tag = tag.trim_start_matches('!');
        match tag {
            "Ref" => self.reference(&scalar(&tagged.value)?),
            "GetAtt" => {
                let text = scalar(&tagged.value)?;
                let (id, attribute) =
                    text.split_once('.').ok_or_else(|| invalid(format!("!GetAtt {text} needs Resource.Attribute")))?;
                self.attribute(id, attribute)
            }
            "Sub" => {
                let text = tagged.value.as_str().ok_or_else(|| {
                    TemplateError::Unsupported("!Sub with a variable map".into(), "!Sub of a single string")
                })?;
                self.substitute(text)
            }
            other => Err(TemplateError::Unsupported(format!("intrinsic !{other}"), "!Ref, !GetAtt, !Sub")),
        }
    }

    fn substitute(&self, text: &str) -> Result<String, TemplateError> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').ok_or_else(|| invalid(format!("unclosed ${{ in !Sub {text:?}")))? + start;
            let name = &rest[start + 2..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some((id, attribute)) = name.split_once('.') {
                out.push_str(&self.attribute(id, attribute)?);
            } else {
                out.push_str(&self.reference(name)?);
            }
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn reference(&self, name: &str) -> Result<String, TemplateError> {
        match name {
            "AWS::Region" => return Ok(REGION.to_owned()),
            "AWS::AccountId" => return Ok(ACCOUNT.to_owned()),
            "AWS::StackName" => return Ok(self.stack.to_owned()),
            "AWS::Partition" => return Ok("aws".to_owned()),
            "AWS::URLSuffix" => return Ok("amazonaws.com".to_owned()),
            _ => {}
        }
        if let Some(value) = self.parameters.get(name) {
            return Ok(value.clone());
        }
        match self.kinds.get(name).copied() {
            Some("AWS::DynamoDB::Table") => Ok(physical_name(self.stack, name)),
            Some("AWS::SQS::Queue") => Ok(self.naming.queue_url(&self.queue_name(name))),
            Some("AWS::KMS::Key") => {
                self.naming.key_id(name).ok_or_else(|| invalid(format!("KMS key {name} was not created")))
            }
            Some("AWS::Serverless::HttpApi") => Ok(api_reference(name)),
            Some("AWS::Logs::LogGroup") => Ok(physical_name(self.stack, name)),
            Some(kind) => Err(TemplateError::Unsupported(
                format!("!Ref {name} (a {kind})"),
                "!Ref of tables, queues, keys, APIs, log groups",
            )),
            None => Err(invalid(format!("!Ref {name}: no such parameter or resource"))),
        }
    }

    fn attribute(&self, id: &str, attribute: &str) -> Result<String, TemplateError> {
        let kind = self
            .kinds
            .get(id)
            .copied()
            .ok_or_else(|| invalid(format!("!GetAtt {id}.{attribute}: no such resource")))?;
        match (kind, attribute) {
            ("AWS::DynamoDB::Table", "Arn") => {
                Ok(format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{}", physical_name(self.stack, id)))
            }
            ("AWS::SQS::Queue", "Arn") => Ok(format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{}", self.queue_name(id))),
            ("AWS::SQS::Queue", "QueueName") => Ok(self.queue_name(id)),
            ("AWS::SQS::Queue", "QueueUrl") => Ok(self.naming.queue_url(&self.queue_name(id))),
            ("AWS::KMS::Key", "Arn") => {
                let key = self.naming.key_id(id).ok_or_else(|| invalid(format!("KMS key {id} was not created")))?;
                Ok(format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{key}"))
            }
            ("AWS::KMS::Key", "KeyId") => {
                self.naming.key_id(id).ok_or_else(|| invalid(format!("KMS key {id} was not created")))
            }
            ("AWS::Logs::LogGroup", "Arn") => {
                Ok(format!("arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{}:*", physical_name(self.stack, id)))
            }
            _ => Err(TemplateError::Unsupported(
                format!("!GetAtt {id}.{attribute}"),
                "Arn of tables, queues, keys and log groups; QueueName, QueueUrl, KeyId",
            )),
        }
    }

    /// The queue whose `!GetAtt X.Arn` is `arn`: event sources and redrive policies name queues so.
    pub(super) fn queue_with_arn(&self, arn: &str, what: &str) -> Result<String, TemplateError> {
        self.kinds
            .iter()
            .filter(|(_, kind)| **kind == "AWS::SQS::Queue")
            .map(|(id, _)| *id)
            .find(|q| self.attribute(q, "Arn").ok().as_deref() == Some(arn))
            .map(str::to_owned)
            .ok_or_else(|| invalid(format!("{what} must be !GetAtt <a queue in this template>.Arn")))
    }

    pub(super) fn queue_name(&self, id: &str) -> String {
        // A FIFO queue's name must end in .fifo; the template says which queues are FIFO.
        let base = physical_name(self.stack, id);
        if self.fifo_queues.contains(id) { format!("{base}.fifo") } else { base }
    }
}

/// What `!Ref` of an HttpApi stands for locally (its id only appears in the deployed URL).
pub(super) fn api_reference(logical_id: &str) -> String {
    format!("local-{logical_id}")
}

fn is_long_form(key: &str) -> bool {
    key == "Ref" || key.starts_with("Fn::")
}

/// Local physical names: `<stack>-<LogicalId>`, as CloudFormation's generated names begin.
pub fn physical_name(stack: &str, logical_id: &str) -> String {
    format!("{stack}-{logical_id}")
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{base, refused};
    use super::{ACCOUNT, REGION};

    #[test]
    fn resolves_every_intrinsic_to_local_names() {
        let t = base();
        let env = &t.functions[0].environment;
        assert_eq!(env["TABLE"], "st-Things");
        assert_eq!(env["TABLE_ARN"], format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/st-Things"));
        assert_eq!(env["LONG"], env["TABLE_ARN"]);
        assert_eq!(env["QUEUE"], format!("http://sqs.test/{ACCOUNT}/st-Work.fifo"));
        assert_eq!(env["KEY"], "key-Secrets");
        assert_eq!(env["WHERE"], "us-east-1/st-Things/st-Work.fifo/${Literal}");
    }

    #[test]
    fn refuses_other_intrinsics_and_unknown_names() {
        assert!(refused("!Ref Level", "!Join [\"\", [a]]").contains("!Join"));
        assert!(refused("!Ref Things", "!Ref Nothing").contains("Nothing"));
    }
}
