//! What `cargo ops` reaches in AWS directly, where no route exists: the stack's tables and queues
//! by their template names (`LedgerTable`, `SettlementDeadLetterQueue`), and clients for them.
//!
//! The local stack's come from its description; a deployed stack's from their physical names,
//! which CloudFormation makes `<stack>-<LogicalId>-<suffix>` for the template's unnamed tables and
//! queues.

use std::collections::BTreeMap;

use aws_config::BehaviorVersion;
use superpay::audit::AuditEntry;
use superpay::dynamo::transact;

use crate::LocalStack;

pub struct Aws {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    /// Logical id -> table name.
    tables: BTreeMap<String, String>,
    /// Logical id -> queue URL.
    pub queues: BTreeMap<String, String>,
    /// Who the audit log says acted: the operator's login.
    actor: String,
}

impl Aws {
    /// The deployed `stack`'s resources with the default AWS credentials, or the local stack's.
    pub async fn connect(stack: Option<&str>, local: &LocalStack) -> Result<Self, String> {
        let login = std::env::var("USER").or_else(|_| std::env::var("LOGNAME"));
        let actor = format!("ops:{}", login.unwrap_or_else(|_| "unknown".into()));
        let Some(stack) = stack else {
            let info = local.read()?;
            // A stack stopped since it wrote its description: say so, not the SDK's dispatch error.
            let address = info.dynamodb_endpoint.trim_start_matches("http://").trim_end_matches('/').to_owned();
            if tokio::net::TcpStream::connect(&address).await.is_err() {
                return Err(format!(
                    "nothing answers at {} (is the stack running? `cargo stack up`)",
                    info.dynamodb_endpoint
                ));
            }
            let credentials =
                aws_sdk_dynamodb::config::Credentials::new("local", "local", None, None, "superpay-local");
            let config = aws_config::defaults(BehaviorVersion::latest())
                .region(aws_config::Region::new("us-east-1"))
                .credentials_provider(credentials)
                .load()
                .await;
            let dynamodb = aws_sdk_dynamodb::config::Builder::from(&config).endpoint_url(&info.dynamodb_endpoint);
            let sqs = aws_sdk_sqs::config::Builder::from(&config).endpoint_url(&info.moto_endpoint);
            return Ok(Aws {
                dynamodb: aws_sdk_dynamodb::Client::from_conf(dynamodb.build()),
                sqs: aws_sdk_sqs::Client::from_conf(sqs.build()),
                tables: info.tables,
                queues: info.queues,
                actor,
            });
        };
        let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
        let (dynamodb, sqs) = (aws_sdk_dynamodb::Client::new(&config), aws_sdk_sqs::Client::new(&config));
        let mut tables = BTreeMap::new();
        let mut start = None;
        loop {
            let page = dynamodb
                .list_tables()
                .set_exclusive_start_table_name(start)
                .send()
                .await
                .map_err(|e| format!("listing the tables: {}", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
            for name in page.table_names() {
                if let Some(logical) = logical_id(stack, name) {
                    tables.insert(logical.to_owned(), name.clone());
                }
            }
            start = page.last_evaluated_table_name;
            if start.is_none() {
                break;
            }
        }
        let mut queues = BTreeMap::new();
        let mut next = None;
        loop {
            let page = sqs
                .list_queues()
                .queue_name_prefix(format!("{stack}-"))
                .set_next_token(next)
                .send()
                .await
                .map_err(|e| format!("listing the queues: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
            for url in page.queue_urls() {
                if let Some(logical) = url.rsplit('/').next().and_then(|name| logical_id(stack, name)) {
                    queues.insert(logical.to_owned(), url.clone());
                }
            }
            next = page.next_token;
            if next.is_none() {
                break;
            }
        }
        if tables.is_empty() {
            return Err(format!("stack {stack} has no tables here (its region, its credentials?)"));
        }
        Ok(Aws { dynamodb, sqs, tables, queues, actor })
    }

    /// The name of the table the template calls `logical`.
    pub fn table(&self, logical: &str) -> Result<String, String> {
        self.tables.get(logical).cloned().ok_or_else(|| format!("the stack has no {logical}"))
    }

    /// Writes an operator's action into the audit log, as the admin routes do theirs.
    pub async fn audit(&self, resource: String, action: &'static str, detail: serde_json::Value) -> Result<(), String> {
        let entry = AuditEntry::now(resource, action, &self.actor, detail);
        let write =
            entry.put_item(&self.table("AuditTable")?, &uuid::Uuid::new_v4().to_string()).map_err(|e| e.to_string())?;
        transact(&self.dynamodb, vec![write]).await.map_err(|e| format!("writing the audit entry: {e}"))
    }
}

/// `LedgerTable` of `superpay-prod-LedgerTable-1X2Y3Z` in stack `superpay-prod`.
fn logical_id<'a>(stack: &str, name: &'a str) -> Option<&'a str> {
    let rest = name.strip_suffix(".fifo").unwrap_or(name).strip_prefix(stack)?.strip_prefix('-')?;
    let (logical, suffix) = rest.rsplit_once('-')?;
    (!logical.contains('-') && !suffix.is_empty()).then_some(logical)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stopped_local_stack_is_named_not_dumped() {
        let file = std::env::temp_dir().join(format!("ops-stopped-{}.json", std::process::id()));
        let info = serde_json::json!({"api_url": "http://127.0.0.1:1", "dynamodb_endpoint": "http://127.0.0.1:1",
                                      "moto_endpoint": "http://127.0.0.1:1", "tables": {}, "queues": {}});
        std::fs::write(&file, info.to_string()).unwrap();
        let refused = Aws::connect(None, &LocalStack(file)).await.err().unwrap();
        assert_eq!(refused, "nothing answers at http://127.0.0.1:1 (is the stack running? `cargo stack up`)");
    }

    #[test]
    fn a_physical_name_gives_its_logical_id_in_its_own_stack_only() {
        assert_eq!(logical_id("superpay", "superpay-LedgerTable-1X2Y3Z"), Some("LedgerTable"));
        assert_eq!(logical_id("superpay", "superpay-CashQueue-AB12.fifo"), Some("CashQueue"));
        // Another stack whose name starts with this one's.
        assert_eq!(logical_id("superpay", "superpay-prod-LedgerTable-1X2Y3Z"), None);
        assert_eq!(logical_id("superpay", "other-LedgerTable-1X2Y3Z"), None);
    }
}
