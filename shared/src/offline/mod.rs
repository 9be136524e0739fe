//! Offline payment codes (capability 6). While online, a payer's device enrolls a P-256 key pair:
//! the server keeps only the public key, under a key id. Offline, the device makes codes fit for a
//! QR code: who pays (account, device key id), a per-device counter that only goes up, the time,
//! signed with the device key. The server accepts each (device, counter) once, whatever the
//! device's clock says; the time only bounds how old a code may be (`OFFLINE_WINDOW_SECONDS`).
//!
//! Code format: `SP1.<base64url(payload)>.<base64url(signature)>`, payload
//! `<key id>|<account>|<counter>|<unix time>`, signature ECDSA P-256 SHA-256 (fixed 64 bytes).

pub mod api;
pub mod debit;
pub mod device;
pub mod notices;
pub mod payment;
pub mod payments_api;
pub mod settlement;
pub mod topup;
pub mod topup_api;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use rust_decimal::Decimal;

use crate::crypto::Secret;
use crate::money::Currency;
use crate::problem::{Code, catalogue};

pub const CODE_VERSION: &str = "SP1";
/// How old a code may be when a merchant presents it: long enough for a phone that was offline
/// for a weekend. (It bounds a code made offline, not a phone: what a phone's unsettled codes add
/// up to is bounded by its offline limit, `device::Device::admit`.)
pub const OFFLINE_WINDOW_SECONDS: i64 = 72 * 3600;
/// How far ahead of our clock a code's time may be (a device clock running fast).
pub const CLOCK_SKEW_SECONDS: i64 = 300;

/// A device's private key (PKCS#8), which never leaves the device.
pub struct DeviceKey {
    pair: EcdsaKeyPair,
    pkcs8: Secret<Vec<u8>>,
}

impl DeviceKey {
    pub fn generate() -> Self {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .expect("P-256 key generation works");
        Self::from_pkcs8(pkcs8.as_ref()).expect("a freshly generated key parses")
    }

    pub fn from_pkcs8(bytes: &[u8]) -> Option<Self> {
        let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, bytes).ok()?;
        Some(DeviceKey { pair, pkcs8: Secret::new(bytes.to_vec()) })
    }

    pub fn pkcs8(&self) -> &Secret<Vec<u8>> {
        &self.pkcs8
    }

    /// Its signature of `message` (64 bytes, r then s): what its own software asks it to sign, an
    /// offline code's payload or a transfer's co-signature (`crate::device_keys`).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(&SystemRandom::new(), message).expect("signing works").as_ref().to_vec()
    }

    /// The public key to enroll: the uncompressed SEC1 point, base64.
    pub fn public_key(&self) -> String {
        STANDARD.encode(self.pair.public_key().as_ref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineCode {
    pub key_id: String,
    pub account: String,
    pub counter: u64,
    pub issued_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("this is not a superpay offline code")]
    Malformed,
    #[error("the code's signature does not match its device")]
    BadSignature,
    #[error("the code is older than the {OFFLINE_WINDOW_SECONDS} s offline window")]
    Expired,
    #[error("the code's time is ahead of ours")]
    FromTheFuture,
    #[error("this code was already used")]
    Replayed,
}

impl CodeError {
    pub fn code(&self) -> &'static Code {
        match self {
            CodeError::Malformed => catalogue::OFFLINE_CODE_MALFORMED,
            CodeError::BadSignature => catalogue::OFFLINE_CODE_INVALID,
            CodeError::Expired => catalogue::OFFLINE_CODE_EXPIRED,
            CodeError::FromTheFuture => catalogue::OFFLINE_CODE_FROM_FUTURE,
            CodeError::Replayed => catalogue::OFFLINE_CODE_REPLAYED,
        }
    }
}

impl From<CodeError> for crate::Problem {
    fn from(e: CodeError) -> Self {
        crate::Problem::new(e.code(), e.to_string())
    }
}

fn valid_field(text: &str) -> bool {
    !text.is_empty() && text.len() <= 128 && !text.contains('|')
}

impl OfflineCode {
    fn payload(&self) -> String {
        format!("{}|{}|{}|{}", self.key_id, self.account, self.counter, self.issued_at)
    }

    /// The code a device shows as a QR code.
    pub fn sign(&self, device: &DeviceKey) -> String {
        let payload = self.payload();
        let signature = device.sign(payload.as_bytes());
        format!("{CODE_VERSION}.{}.{}", URL_SAFE_NO_PAD.encode(payload), URL_SAFE_NO_PAD.encode(signature))
    }

    /// Reads a code without trusting it: the key id says which device's public key to check it with.
    pub fn parse(code: &str) -> Result<(Self, Vec<u8>), CodeError> {
        let mut parts = code.trim().split('.');
        let (Some(CODE_VERSION), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CodeError::Malformed);
        };
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).map_err(|_| CodeError::Malformed)?)
            .map_err(|_| CodeError::Malformed)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| CodeError::Malformed)?;
        let fields: Vec<&str> = payload.split('|').collect();
        let [key_id, account, counter, issued_at] = fields[..] else { return Err(CodeError::Malformed) };
        if !crate::ids::is_key_id(key_id) || !valid_field(account) {
            return Err(CodeError::Malformed);
        }
        let code = OfflineCode {
            key_id: key_id.to_owned(),
            account: account.to_owned(),
            counter: counter.parse().map_err(|_| CodeError::Malformed)?,
            issued_at: issued_at.parse().map_err(|_| CodeError::Malformed)?,
        };
        Ok((code, signature))
    }

    /// Checks the signature with the enrolled public key (base64 SEC1) and the code's age.
    pub fn verify(&self, signature: &[u8], public_key: &str, now: i64) -> Result<(), CodeError> {
        let key = STANDARD.decode(public_key).map_err(|_| CodeError::BadSignature)?;
        UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, key)
            .verify(self.payload().as_bytes(), signature)
            .map_err(|_| CodeError::BadSignature)?;
        if self.issued_at > now + CLOCK_SKEW_SECONDS {
            return Err(CodeError::FromTheFuture);
        }
        if now.saturating_sub(self.issued_at) > OFFLINE_WINDOW_SECONDS {
            return Err(CodeError::Expired);
        }
        Ok(())
    }
}

/// Checks that `public_key` is a P-256 point this module can verify with.
pub fn valid_public_key(public_key: &str) -> bool {
    STANDARD.decode(public_key).is_ok_and(|k| k.len() == 65 && k[0] == 4)
}

/// The offline ceiling of a currency: 1% of its per-payment limit (1,000.00 USD). A device's
/// offline limit (what it may owe at once) is at most this, and a top-up link adds at most this
/// beyond what is due.
pub fn offline_ceiling(currency: Currency) -> Decimal {
    currency.rescale(currency.limit() / Decimal::from(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(counter: u64, issued_at: i64) -> OfflineCode {
        OfflineCode { key_id: "d_1.k1".into(), account: "alice".into(), counter, issued_at }
    }

    #[test]
    fn a_code_verifies_with_its_device_only_and_within_the_window() {
        let device = DeviceKey::generate();
        let now = 1_800_000_000;
        let text = code(7, now - 60).sign(&device);
        assert!(text.len() < 250, "fits a QR code comfortably: {} chars", text.len());
        let (parsed, signature) = OfflineCode::parse(&text).unwrap();
        assert_eq!(parsed, code(7, now - 60));
        assert_eq!(parsed.verify(&signature, &device.public_key(), now), Ok(()));
        let other = DeviceKey::generate();
        assert_eq!(parsed.verify(&signature, &other.public_key(), now), Err(CodeError::BadSignature));
        let old = code(8, now - OFFLINE_WINDOW_SECONDS - 1).sign(&device);
        let (old, sig) = OfflineCode::parse(&old).unwrap();
        assert_eq!(old.verify(&sig, &device.public_key(), now), Err(CodeError::Expired));
        let ahead = code(9, now + 3600).sign(&device);
        let (ahead, sig) = OfflineCode::parse(&ahead).unwrap();
        assert_eq!(ahead.verify(&sig, &device.public_key(), now), Err(CodeError::FromTheFuture));
        let restored = DeviceKey::from_pkcs8(device.pkcs8().expose()).unwrap();
        assert_eq!(restored.public_key(), device.public_key());
        assert!(valid_public_key(&device.public_key()));
        assert!(!valid_public_key("AAAA"));
    }

    #[test]
    fn a_tampered_code_is_refused() {
        let device = DeviceKey::generate();
        let text = code(1, 100).sign(&device);
        let (_, signature) = OfflineCode::parse(&text).unwrap();
        // The same signature on a higher counter (or another account) does not verify.
        let forged = OfflineCode { counter: 2, ..code(1, 100) };
        assert_eq!(forged.verify(&signature, &device.public_key(), 200), Err(CodeError::BadSignature));
        for bad in ["", "SP1", "SP2.a.b", "SP1.a.b.c", "SP1.!!.b", &text.replace("SP1.", "SP1..")] {
            assert_eq!(OfflineCode::parse(bad).unwrap_err(), CodeError::Malformed, "{bad:?}");
        }
    }
}
