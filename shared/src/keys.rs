//! The key service port: envelope encryption of party secrets with KMS. A party's master key is a
//! KMS data key: only its ciphertext is stored, bound by an encryption context to its owner, and
//! the plaintext exists only in memory (in a `Secret`).

use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;

use crate::crypto::Key;
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
