//! Merchants with their working keys, as the purchase relay needs them.

use std::sync::Arc;

use super::store::MerchantStore;
use super::{Merchant, MerchantStatus, inactive_merchant, unknown_merchant};
use crate::Problem;
use crate::clock::now_epoch_seconds;
use crate::crypto::SignatureError;
use crate::keys::{KeyRing, KeyService, PartyKeys};

pub struct MerchantDirectory {
    store: MerchantStore,
    ring: KeyRing,
}

impl MerchantDirectory {
    pub fn new(store: MerchantStore, keys: KeyService) -> Self {
        MerchantDirectory { store, ring: KeyRing::new(keys) }
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

    /// The keys we sign our calls to `merchant` with: the previous key while it is honoured (the
    /// merchant has until then to install the new one), else the current one.
    pub async fn keys(&self, merchant: &Merchant) -> Result<Arc<PartyKeys>, Problem> {
        let owner = Merchant::key_owner(&merchant.id);
        match merchant.previous_key_at(now_epoch_seconds()) {
            Some(previous) => Ok(self.ring.keys(&previous.key_id, &owner, &previous.ciphertext).await?),
            None => Ok(self.ring.keys(&merchant.key_id, &owner, &merchant.key_ciphertext).await?),
        }
    }

    /// The merchant a signature's key id names (`<merchant id>.k<n>`), with that key: its current
    /// key, or the previous one while it is honoured.
    pub async fn by_key_id(&self, key_id: &str) -> Result<(Merchant, Arc<PartyKeys>), Problem> {
        let merchant_id = key_id.split_once('.').map(|(m, _)| m).ok_or(SignatureError::UnknownKey)?;
        let merchant = self.store.get(merchant_id).await?.ok_or(SignatureError::UnknownKey)?;
        let owner = Merchant::key_owner(&merchant.id);
        let keys = if merchant.key_id == key_id {
            self.ring.keys(&merchant.key_id, &owner, &merchant.key_ciphertext).await?
        } else {
            let previous = merchant
                .previous_key_at(now_epoch_seconds())
                .filter(|p| p.key_id == key_id)
                .ok_or(SignatureError::UnknownKey)?;
            self.ring.keys(&previous.key_id, &owner, &previous.ciphertext).await?
        };
        Ok((merchant, keys))
    }
}
