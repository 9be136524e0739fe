//! The key service port: envelope encryption of party secrets with KMS. A party's master key is a
//! KMS data key: only its ciphertext is stored, bound by an encryption context to its owner, and
//! the plaintext exists only in memory (in a `Secret`).

use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::crypto::{Key, Purpose, derive};
use crate::dynamo::StoreError;

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
            .map_err(|e| StoreError(aws_sdk_kms::error::DisplayErrorContext(e).to_string()))?;
        let key = output.plaintext().and_then(|b| Key::from_slice(b.as_ref()));
        let ciphertext = output.ciphertext_blob().map(|b| b.as_ref().to_vec());
        match (key, ciphertext) {
            (Some(key), Some(ciphertext)) => Ok(NewKey { key, ciphertext }),
            _ => Err(StoreError("KMS GenerateDataKey returned no 32-byte key".into())),
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
            .map_err(|e| StoreError(aws_sdk_kms::error::DisplayErrorContext(e).to_string()))?;
        output
            .plaintext()
            .and_then(|b| Key::from_slice(b.as_ref()))
            .ok_or_else(|| StoreError("KMS Decrypt returned no 32-byte key".into()))
    }
}

/// A party's working keys, one per purpose, derived from its master key.
pub struct PartyKeys {
    pub key_id: String,
    pub signing: Key,
    pub encryption: Key,
}

impl PartyKeys {
    pub fn derive(key_id: &str, master: &Key) -> Self {
        PartyKeys {
            key_id: key_id.to_owned(),
            signing: derive(master, Purpose::RequestSigning),
            encryption: derive(master, Purpose::OrderEncryption),
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
