//! Parameter group versions in DynamoDB: partition `group`, sort `version` (a number), so the
//! latest version is one Query (descending, limit 1) and any other one GetItem.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{Delete, Put};

use super::{GroupName, GroupVersion, Parameters};
use crate::dynamo::{Item, StoreError, TransactError, Write, get_n, get_s, n, s, transact};

/// The rule of a new version's write: its number is not taken.
const VERSION_FREE: &str = "config.version_free";

#[derive(Clone, Debug)]
pub struct ConfigStore {
    client: Client,
    table: String,
}

/// Why a publish transaction did not commit.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Another publish took this version number first.
    #[error("version already taken")]
    VersionTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ConfigStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        ConfigStore { client, table: table.into() }
    }

    /// The latest version.
    pub async fn latest(&self, group: &GroupName) -> Result<Option<GroupVersion>, StoreError> {
        // Consistent: a client that just saw version N must never be told N is from the future.
        self.latest_read(group, true).await
    }

    /// The latest version as an eventually consistent read (half the cost) shows it: for a reader
    /// that refreshes its copy anyway (the error-flow table's).
    pub async fn latest_eventually(&self, group: &GroupName) -> Result<Option<GroupVersion>, StoreError> {
        self.latest_read(group, false).await
    }

    async fn latest_read(&self, group: &GroupName, consistent: bool) -> Result<Option<GroupVersion>, StoreError> {
        let page = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#group = :group")
            .expression_attribute_names("#group", "group")
            .expression_attribute_values(":group", s(group.as_str()))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(consistent)
            .send()
            .await?;
        page.items().first().map(version_from_item).transpose()
    }

    pub async fn version(&self, group: &GroupName, version: u64) -> Result<Option<GroupVersion>, StoreError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("group", s(group.as_str()))
            .key("version", n(version))
            .send()
            .await?;
        item.item().map(version_from_item).transpose()
    }

    /// Writes `new` only if its version number is free, drops `prune` from the history, and commits
    /// `with` (the audit entry, the idempotency record) in the same transaction.
    pub async fn publish(&self, new: &GroupVersion, prune: Option<u64>, with: Vec<Write>) -> Result<(), PublishError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item_from_version(new)?))
            .condition_expression("attribute_not_exists(#version)")
            .expression_attribute_names("#version", "version")
            .build()
            .map_err(StoreError::from)?;
        let mut items = vec![Write::put(VERSION_FREE, put)];
        if let Some(old) = prune {
            let delete = Delete::builder()
                .table_name(&self.table)
                .key("group", s(new.group.as_str()))
                .key("version", n(old))
                .build()
                .map_err(StoreError::from)?;
            items.push(Write::delete("config.prune", delete));
        }
        items.extend(with);
        match transact(&self.client, items).await {
            Ok(()) => Ok(()),
            Err(e) if e.broke(VERSION_FREE) => Err(PublishError::VersionTaken),
            Err(TransactError::ConditionFailed(failed)) => {
                Err(StoreError::new(format!("publish refused by conditions {failed:?}")).into())
            }
            Err(TransactError::Store(e)) => Err(e.into()),
        }
    }
}

fn item_from_version(v: &GroupVersion) -> Result<Item, StoreError> {
    Ok(Item::from([
        ("group".to_owned(), s(v.group.as_str())),
        ("version".to_owned(), n(v.version)),
        // Kept as JSON text: exactly what was published, whatever its shape.
        ("parameters".to_owned(), s(v.parameters.as_value().to_string())),
        ("published_at".to_owned(), n(v.published_at)),
        ("published_by".to_owned(), s(&v.published_by)),
    ]))
}

fn version_from_item(item: &Item) -> Result<GroupVersion, StoreError> {
    let corrupt = |what: String| StoreError::new(format!("stored parameter group is corrupt: {what}"));
    let parameters: serde_json::Value =
        serde_json::from_str(get_s(item, "parameters")?).map_err(|e| corrupt(e.to_string()))?;
    Ok(GroupVersion {
        group: GroupName::parse(get_s(item, "group")?).map_err(|e| corrupt(e.to_string()))?,
        version: get_n(item, "version")?,
        parameters: Parameters::parse(parameters).map_err(|e| corrupt(e.to_string()))?,
        published_at: get_n(item, "published_at")?,
        published_by: get_s(item, "published_by")?.to_owned(),
    })
}
