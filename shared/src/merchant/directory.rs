//! Merchants with their working keys, as the purchase relay needs them. A merchant's master key is
//! unwrapped by KMS once per function instance and kept (in memory only) for the instance's life.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::store::MerchantStore;
use super::{Merchant, MerchantStatus, inactive_merchant, unknown_merchant};
use crate::Problem;
use crate::crypto::{Key, Purpose, SignatureError, derive};
use crate::keys::KeyService;

/// A merchant's keys for each purpose, derived from its master key.
pub struct MerchantKeys {
    pub key_id: String,
    pub signing: Key,
    pub encryption: Key,
}

impl MerchantKeys {
    pub fn derive(key_id: &str, master: &Key) -> Self {
        MerchantKeys {
            key_id: key_id.to_owned(),
            signing: derive(master, Purpose::RequestSigning),
            encryption: derive(master, Purpose::OrderEncryption),
        }
    }
}

pub struct MerchantDirectory {
    store: MerchantStore,
    keys: KeyService,
    cache: Mutex<HashMap<String, Arc<MerchantKeys>>>,
}

impl MerchantDirectory {
    pub fn new(store: MerchantStore, keys: KeyService) -> Self {
        MerchantDirectory { store, keys, cache: Mutex::new(HashMap::new()) }
    }

    /// The merchant, whatever its status.
    pub async fn get(&self, id: &str) -> Result<Merchant, Problem> {
        self.store.get(id).await?.ok_or_else(|| unknown_merchant(id))
    }

    /// The merchant, if it exists and is active.
    pub async fn active(&self, id: &str) -> Result<Merchant, Problem> {
        let merchant = self.store.get(id).await?.ok_or_else(|| unknown_merchant(id))?;
        if merchant.status != MerchantStatus::Active {
            return Err(inactive_merchant(id));
        }
        Ok(merchant)
    }

    pub async fn keys(&self, merchant: &Merchant) -> Result<Arc<MerchantKeys>, Problem> {
        if let Some(keys) = self.cache.lock().ok().and_then(|c| c.get(&merchant.key_id).cloned()) {
            return Ok(keys);
        }
        let master = self.keys.decrypt(&Merchant::key_owner(&merchant.id), &merchant.key_ciphertext).await?;
        let keys = Arc::new(MerchantKeys::derive(&merchant.key_id, &master));
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(merchant.key_id.clone(), keys.clone());
        }
        Ok(keys)
    }

    /// The merchant a signature's key id names (`<merchant id>.k<n>`), with its keys.
    pub async fn by_key_id(&self, key_id: &str) -> Result<(Merchant, Arc<MerchantKeys>), Problem> {
        let merchant_id = key_id.split_once('.').map(|(m, _)| m).ok_or(SignatureError::UnknownKey)?;
        let merchant = self.store.get(merchant_id).await?.ok_or(SignatureError::UnknownKey)?;
        if merchant.key_id != key_id {
            return Err(SignatureError::UnknownKey.into());
        }
        let keys = self.keys(&merchant).await?;
        Ok((merchant, keys))
    }
}
