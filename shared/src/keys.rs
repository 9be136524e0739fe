//! The key service port: envelope encryption of party secrets with KMS. A party's master key is a
//! KMS data key: only its ciphertext is stored, bound by an encryption context to its owner, and
//! the plaintext exists only in memory (in a `Secret`). The server's own token secret is one too
//! (`TokenSecret`). Also a party's stored key and the working keys derived from it; issuing and
//! rotating a party's key is `crate::party_keys`.

use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::types::AttributeValue;

use crate::crypto::{Key, Purpose, derive};
use crate::dynamo::{Item, StoreError, get_n, n, s};

#[derive(Clone, Debug)]
pub struct KeyService {
    client: Client,
    /// The KMS key that wraps party keys (template.yaml `PartyKeysKey`).
    wrapping_key: String,
}

/// A new master key: the plaintext to use (and show once) and the ciphertext to store.
pub struct NewKey {
    pub key: Key,
    pub ciphertext: Vec<u8>,
}

impl KeyService {
    pub fn new(client: Client, wrapping_key: impl Into<String>) -> Self {
        KeyService { client, wrapping_key: wrapping_key.into() }
    }

    /// A fresh 256-bit master key for `owner` (e.g. `merchant/m_1`).
    pub async fn generate(&self, owner: &str) -> Result<NewKey, StoreError> {
        let output = self
            .client
            .generate_data_key()
            .key_id(&self.wrapping_key)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context("owner", owner)
            .send()
            .await
            .map_err(StoreError::from)?;
        let key = output.plaintext().and_then(|b| Key::from_slice(b.as_ref()));
        let ciphertext = output.ciphertext_blob().map(|b| b.as_ref().to_vec());
        match (key, ciphertext) {
            (Some(key), Some(ciphertext)) => Ok(NewKey { key, ciphertext }),
            _ => Err(StoreError::new("KMS GenerateDataKey returned no 32-byte key")),
        }
    }

    /// The master key of `owner` from its stored ciphertext.
    pub async fn decrypt(&self, owner: &str, ciphertext: &[u8]) -> Result<Key, StoreError> {
        let output = self
            .client
            .decrypt()
            .key_id(&self.wrapping_key)
            .ciphertext_blob(Blob::new(ciphertext))
            .encryption_context("owner", owner)
            .send()
            .await
            .map_err(StoreError::from)?;
        output
            .plaintext()
            .and_then(|b| Key::from_slice(b.as_ref()))
            .ok_or_else(|| StoreError::new("KMS Decrypt returned no 32-byte key"))
    }
}

/// A party's working keys, one per purpose, derived from its master key.
pub struct PartyKeys {
    pub key_id: String,
    pub signing: Key,
    pub encryption: Key,
    /// What a partner platform signs its link codes with.
    pub link_codes: Key,
}

impl PartyKeys {
    pub fn derive(key_id: &str, master: &Key) -> Self {
        PartyKeys {
            key_id: key_id.to_owned(),
            signing: derive(master, Purpose::RequestSigning),
            encryption: derive(master, Purpose::OrderEncryption),
            link_codes: derive(master, Purpose::LinkCode),
        }
    }
}

/// Parties' keys unwrapped by KMS once per function instance and kept in memory (only) for the
/// instance's life, by key id.
pub struct KeyRing {
    service: KeyService,
    cache: Mutex<HashMap<String, Arc<PartyKeys>>>,
}

impl KeyRing {
    pub fn new(service: KeyService) -> Self {
        KeyRing { service, cache: Mutex::new(HashMap::new()) }
    }

    /// The keys we sign our calls to a party with: its previous key while that is honoured (the
    /// party has until then to install the new one), else its current key.
    pub async fn signing_keys(
        &self,
        owner: &str,
        party: &StoredKey<'_>,
        now: i64,
    ) -> Result<Arc<PartyKeys>, StoreError> {
        match PreviousKey::honoured(party.previous, now) {
            Some(previous) => self.keys(&previous.key_id, owner, &previous.ciphertext).await,
            None => self.keys(party.key_id, owner, party.ciphertext).await,
        }
    }

    /// The keys a signature's key id names: the party's current key, or its previous one while
    /// that is honoured; `None` for any other key id.
    pub async fn named_keys(
        &self,
        key_id: &str,
        owner: &str,
        party: &StoredKey<'_>,
        now: i64,
    ) -> Result<Option<Arc<PartyKeys>>, StoreError> {
        if party.key_id == key_id {
            return self.keys(party.key_id, owner, party.ciphertext).await.map(Some);
        }
        match PreviousKey::honoured(party.previous, now).filter(|p| p.key_id == key_id) {
            Some(previous) => self.keys(&previous.key_id, owner, &previous.ciphertext).await.map(Some),
            None => Ok(None),
        }
    }

    pub async fn keys(&self, key_id: &str, owner: &str, ciphertext: &[u8]) -> Result<Arc<PartyKeys>, StoreError> {
        if let Some(keys) = self.cache.lock().ok().and_then(|c| c.get(key_id).cloned()) {
            return Ok(keys);
        }
        let master = self.service.decrypt(owner, ciphertext).await?;
        let keys = Arc::new(PartyKeys::derive(key_id, &master));
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(key_id.to_owned(), keys.clone());
        }
        Ok(keys)
    }
}

/// A party's stored key: its current key and, after a rotation, the previous one.
pub struct StoredKey<'a> {
    pub key_id: &'a str,
    pub ciphertext: &'a [u8],
    pub previous: Option<&'a PreviousKey>,
}

/// A rotated-out key: until `until`, the party may still sign with it, and we still sign our calls
/// to the party with it, so the party has that long to install the new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousKey {
    pub key_id: String,
    pub ciphertext: Vec<u8>,
    pub until: i64,
}

impl PreviousKey {
    /// `previous`, if it is still honoured at `now`.
    pub fn honoured(previous: Option<&PreviousKey>, now: i64) -> Option<&PreviousKey> {
        previous.filter(|p| now < p.until)
    }

    /// The previous key a stored party item holds, if any.
    pub fn from_item(item: &Item) -> Result<Option<PreviousKey>, StoreError> {
        Ok(match (item.get("previous_key_id"), item.get("previous_key_ciphertext")) {
            (Some(AttributeValue::S(key_id)), Some(AttributeValue::B(blob))) => Some(PreviousKey {
                key_id: key_id.clone(),
                ciphertext: blob.as_ref().to_vec(),
                until: get_n(item, "previous_until")?,
            }),
            _ => None,
        })
    }
}

/// Whom KMS binds the token secret to (its encryption context), as `merchant/<id>` is a merchant's.
pub const TOKEN_SECRET_OWNER: &str = "platform/token-secret";
/// The token secret's item in `ServerSecretsTable` (partition `id`).
pub const TOKEN_SECRET_ID: &str = "token-secret";
/// The instruments' own token secret (capability 9), wrapped under `InstrumentsKey`: what keys a
/// card number's token and fingerprint is held by no function that talks to third parties.
pub const INSTRUMENT_SECRET_OWNER: &str = "instrument/token-secret";
pub const INSTRUMENT_SECRET_ID: &str = "instrument-token-secret";

/// The server's secret that keyed tokens are derived under (`crate::crypto::keyed_token`): a KMS
/// data key like a party's, its ciphertext kept in `ServerSecretsTable`. It is made once, by the
/// first function instance that needs it (a conditional put: a racing instance uses the winner's),
/// never replaced after, so the tokens it keys never change; no deploy step has to make it, and
/// no redeploy can change it by accident. Unwrapped once per instance and kept in memory only.
pub struct TokenSecret {
    dynamodb: aws_sdk_dynamodb::Client,
    table: String,
    keys: KeyService,
    /// Its item's id and its KMS owner.
    id: &'static str,
    owner: &'static str,
    secret: tokio::sync::OnceCell<Key>,
}

impl TokenSecret {
    pub fn new(dynamodb: aws_sdk_dynamodb::Client, table: impl Into<String>, keys: KeyService) -> Self {
        Self::named(dynamodb, table, keys, TOKEN_SECRET_ID, TOKEN_SECRET_OWNER)
    }

    /// The instruments' own secret (`INSTRUMENT_SECRET_ID`), under `keys` (of `InstrumentsKey`).
    pub fn instruments(dynamodb: aws_sdk_dynamodb::Client, table: impl Into<String>, keys: KeyService) -> Self {
        Self::named(dynamodb, table, keys, INSTRUMENT_SECRET_ID, INSTRUMENT_SECRET_OWNER)
    }

    fn named(
        dynamodb: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        keys: KeyService,
        id: &'static str,
        owner: &'static str,
    ) -> Self {
        TokenSecret { dynamodb, table: table.into(), keys, id, owner, secret: tokio::sync::OnceCell::new() }
    }

    pub async fn get(&self) -> Result<&Key, StoreError> {
        self.secret.get_or_try_init(|| self.load_or_make()).await
    }

    async fn load_or_make(&self) -> Result<Key, StoreError> {
        if let Some(ciphertext) = self.stored().await? {
            return self.keys.decrypt(self.owner, &ciphertext).await;
        }
        let made = self.keys.generate(self.owner).await?;
        let put = self
            .dynamodb
            .put_item()
            .table_name(&self.table)
            .item("id", s(self.id))
            .item("ciphertext", AttributeValue::B(Blob::new(made.ciphertext)))
            .item("created_at", n(crate::clock::now_epoch_seconds()))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await;
        match put {
            Ok(_) => Ok(made.key),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                let ciphertext =
                    self.stored().await?.ok_or_else(|| StoreError::new("the token secret vanished after its put"))?;
                self.keys.decrypt(self.owner, &ciphertext).await
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn stored(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let output =
            self.dynamodb.get_item().table_name(&self.table).key("id", s(self.id)).consistent_read(true).send().await?;
        match output.item().map(|item| item.get("ciphertext")) {
            None => Ok(None),
            Some(Some(AttributeValue::B(blob))) => Ok(Some(blob.as_ref().to_vec())),
            Some(_) => Err(StoreError::new("the stored token secret has no ciphertext")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_previous_key_is_honoured_until_its_time() {
        let previous = PreviousKey { key_id: "m_1.k1".into(), ciphertext: vec![], until: 100 };
        assert_eq!(PreviousKey::honoured(Some(&previous), 99), Some(&previous));
        assert_eq!(PreviousKey::honoured(Some(&previous), 100), None);
        assert_eq!(PreviousKey::honoured(None, 0), None);
    }
}
