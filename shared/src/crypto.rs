//! Keys, request signatures and sealed payloads (docs/design.md, "Security").
//!
//! - Every purpose derives its own key from a party's master key (HKDF-SHA256 with a label), so no
//!   key serves two purposes.
//! - Calls between us and merchants, devices and partners are signed: HMAC-SHA256 over a canonical
//!   request (method, path, timestamp, nonce, key id, body hash), accepted within a tolerance window,
//!   each nonce once (the nonce store lives with the caller, in DynamoDB).
//! - Orders travel sealed with AES-256-GCM; the associated data binds what the ciphertext is about.
//! - Tokens that must be stable yet unguessable (a user's pseudonym per mini-app; later, partner-
//!   scoped tokens) are one primitive, `keyed_token`: HMAC-SHA256 under a key derived from the
//!   server's token secret for the token's purpose.
//! - Key material lives in `Secret`, which cannot be printed or logged by accident.

use aws_lc_rs::{aead, digest, hkdf, hmac, rand};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::problem::{Code, catalogue};

/// How far a signed request's timestamp may be from our clock, either way.
pub const SIGNATURE_TOLERANCE_SECONDS: i64 = 300;

pub const HEADER_KEY_ID: &str = "x-superpay-key-id";
pub const HEADER_TIMESTAMP: &str = "x-superpay-timestamp";
pub const HEADER_NONCE: &str = "x-superpay-nonce";
pub const HEADER_SIGNATURE: &str = "x-superpay-signature";

/// Secret bytes: `Debug` shows nothing of them and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The secret itself, for the one call that needs it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

pub type Key = Secret<[u8; 32]>;

impl Key {
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        rand::fill(&mut key).expect("the system random source works");
        Secret(key)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Secret)
    }

    pub fn from_base64(text: &str) -> Option<Self> {
        BASE64.decode(text).ok().as_deref().and_then(Self::from_slice)
    }

    pub fn to_base64(&self) -> Secret<String> {
        Secret(BASE64.encode(self.0))
    }
}

/// What a derived key is for. The label is part of the derivation, so keys never cross purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    RequestSigning,
    OrderEncryption,
    /// A partner platform's link codes (`crate::instrument::link`).
    LinkCode,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::RequestSigning => b"superpay/v1/request-signing",
            Purpose::OrderEncryption => b"superpay/v1/order-encryption",
            Purpose::LinkCode => b"superpay/v1/link-code",
        }
    }
}

struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

pub fn derive(master: &Key, purpose: Purpose) -> Key {
    expand(master, purpose.label())
}

fn expand(master: &Key, label: &[u8]) -> Key {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"superpay").extract(master.expose());
    let info = [label];
    let mut key = [0u8; 32];
    prk.expand(&info, Len32).and_then(|okm| okm.fill(&mut key)).expect("32 bytes is a valid HKDF-SHA256 length");
    Secret(key)
}

/// What a keyed token names. Its own enum, not a `Purpose`: a token key is derived from the
/// server's token secret (`crate::keys::TokenSecret`), never from a party's key, and the label
/// keeps each kind of token apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    /// The user as one mini-app's server knows them (`crate::miniapp::app_user`).
    MiniAppPseudonym,
    /// The fingerprint of a request whose body carries a secret (`IdempotencyStore::run_request_keyed`).
    RequestFingerprint,
    /// One user's card or account number, to find it added twice without keeping it in the clear.
    InstrumentNumber,
}

impl TokenPurpose {
    fn label(self) -> &'static [u8] {
        match self {
            TokenPurpose::MiniAppPseudonym => b"superpay/v1/token/miniapp-pseudonym",
            TokenPurpose::RequestFingerprint => b"superpay/v1/token/request-fingerprint",
            TokenPurpose::InstrumentNumber => b"superpay/v1/token/instrument-number",
        }
    }
}

/// A stable token for `parts` that only the holder of `secret` can compute or check: HMAC-SHA256
/// under the key derived from `secret` for `purpose`, over the length-prefixed parts (so no
/// separator inside a part can make two inputs collide), 128 bits in hex.
pub fn keyed_token(secret: &Key, purpose: TokenPurpose, parts: &[&str]) -> String {
    let key = expand(secret, purpose.label());
    let mut context = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, key.expose()));
    for part in parts {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part.as_bytes());
    }
    hex::encode(&context.sign().as_ref()[..16])
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes))
}

/// The first 8 bytes of `text`'s SHA-256: a spread that every process and version computes alike
/// (std's hasher is seeded per process), for choosing a bucket or a shard.
pub fn stable_hash(text: &str) -> u64 {
    let digest = digest::digest(&digest::SHA256, text.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(head)
}

/// `N` random bytes from the system's source, hex: tokens and nonces nobody can guess.
pub fn random_hex<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    rand::fill(&mut bytes).expect("the system random source works");
    hex::encode(bytes)
}

/// The signed parts of a request, one per line.
pub fn canonical_request(method: &str, path: &str, timestamp: i64, nonce: &str, key_id: &str, body: &[u8]) -> String {
    format!("{}\n{path}\n{timestamp}\n{nonce}\n{key_id}\n{}", method.to_ascii_uppercase(), sha256_hex(body))
}

pub fn sign(key: &Key, canonical: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key.expose());
    hex::encode(hmac::sign(&key, canonical.as_bytes()))
}

/// Constant-time check of a hex signature.
pub fn verify(key: &Key, canonical: &str, signature: &str) -> bool {
    let Ok(signature) = hex::decode(signature) else { return false };
    hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, key.expose()), canonical.as_bytes(), &signature).is_ok()
}

/// The four signature headers of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub key_id: String,
    pub timestamp: i64,
    pub nonce: String,
    pub signature: String,
}

impl Signature {
    /// Signs a request we send: a fresh nonce, our clock.
    pub fn create(key_id: &str, key: &Key, method: &str, path: &str, body: &[u8], now: i64) -> Self {
        let mut nonce = [0u8; 16];
        rand::fill(&mut nonce).expect("the system random source works");
        let nonce = hex::encode(nonce);
        let signature = sign(key, &canonical_request(method, path, now, &nonce, key_id, body));
        Signature { key_id: key_id.to_owned(), timestamp: now, nonce, signature }
    }

    pub fn headers(&self) -> [(&'static str, String); 4] {
        [
            (HEADER_KEY_ID, self.key_id.clone()),
            (HEADER_TIMESTAMP, self.timestamp.to_string()),
            (HEADER_NONCE, self.nonce.clone()),
            (HEADER_SIGNATURE, self.signature.clone()),
        ]
    }

    /// Reads the headers of a request we received (`header` looks one up by lower-case name).
    pub fn from_headers<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Result<Self, SignatureError> {
        let get = |name: &'static str| header(name).filter(|v| !v.is_empty()).ok_or(SignatureError::Missing(name));
        let timestamp = get(HEADER_TIMESTAMP)?;
        let nonce = get(HEADER_NONCE)?;
        if nonce.len() < 16 || nonce.len() > 64 || !nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(SignatureError::Malformed("the nonce must be 16 to 64 letters, digits or '-'"));
        }
        Ok(Signature {
            key_id: get(HEADER_KEY_ID)?.to_owned(),
            timestamp: timestamp
                .parse()
                .map_err(|_| SignatureError::Malformed("the timestamp must be Unix seconds"))?,
            nonce: nonce.to_owned(),
            signature: get(HEADER_SIGNATURE)?.to_owned(),
        })
    }

    /// Checks the signature over this request and the timestamp window. The nonce's single use is
    /// the caller's next step (it needs the nonce store).
    pub fn check(&self, key: &Key, method: &str, path: &str, body: &[u8], now: i64) -> Result<(), SignatureError> {
        // abs_diff: an attacker's timestamp near i64::MIN must not overflow.
        if now.abs_diff(self.timestamp) > SIGNATURE_TOLERANCE_SECONDS as u64 {
            return Err(SignatureError::Stale);
        }
        let canonical = canonical_request(method, path, self.timestamp, &self.nonce, &self.key_id, body);
        if verify(key, &canonical, &self.signature) { Ok(()) } else { Err(SignatureError::Invalid) }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the request is not signed: header {0} is missing")]
    Missing(&'static str),
    #[error("the signature headers are malformed: {0}")]
    Malformed(&'static str),
    #[error("the key id is not known")]
    UnknownKey,
    #[error("the timestamp is more than {SIGNATURE_TOLERANCE_SECONDS} s from our clock")]
    Stale,
    #[error("the signature does not match the request")]
    Invalid,
    #[error("this nonce was already used")]
    Replayed,
}

impl SignatureError {
    pub fn code(&self) -> &'static Code {
        match self {
            SignatureError::Missing(_) | SignatureError::Malformed(_) => catalogue::SIGNATURE_MISSING,
            SignatureError::UnknownKey | SignatureError::Invalid => catalogue::SIGNATURE_INVALID,
            SignatureError::Stale => catalogue::SIGNATURE_STALE,
            SignatureError::Replayed => catalogue::SIGNATURE_REPLAYED,
        }
    }
}

impl From<SignatureError> for crate::Problem {
    fn from(e: SignatureError) -> Self {
        crate::Problem::new(e.code(), e.to_string())
    }
}

/// An AES-256-GCM ciphertext with its nonce, as JSON carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Sealed {
    /// Base64 (standard, padded): 12 bytes.
    pub nonce: String,
    /// Base64 (standard, padded): the ciphertext, then its 16-byte tag.
    pub ciphertext: String,
}

pub fn seal(key: &Key, plaintext: &[u8], associated: &[u8]) -> Sealed {
    let mut nonce = [0u8; aead::NONCE_LEN];
    rand::fill(&mut nonce).expect("the system random source works");
    let sealing =
        aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, key.expose()).expect("a 32-byte key"));
    let mut buffer = plaintext.to_vec();
    sealing
        .seal_in_place_append_tag(aead::Nonce::assume_unique_for_key(nonce), aead::Aad::from(associated), &mut buffer)
        .expect("sealing cannot fail for in-memory buffers");
    Sealed { nonce: BASE64.encode(nonce), ciphertext: BASE64.encode(buffer) }
}

/// The plaintext, or `None` when the key, the associated data or the ciphertext is not the one sealed.
pub fn open(key: &Key, sealed: &Sealed, associated: &[u8]) -> Option<Vec<u8>> {
    let nonce: [u8; aead::NONCE_LEN] = BASE64.decode(&sealed.nonce).ok()?.try_into().ok()?;
    let mut buffer = BASE64.decode(&sealed.ciphertext).ok()?;
    let opening = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, key.expose()).ok()?);
    let plaintext = opening
        .open_in_place(aead::Nonce::assume_unique_for_key(nonce), aead::Aad::from(associated), &mut buffer)
        .ok()?;
    Some(plaintext.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_derive_different_keys_deterministically() {
        let master = Key::random();
        let signing = derive(&master, Purpose::RequestSigning);
        assert_eq!(signing, derive(&master, Purpose::RequestSigning));
        assert_ne!(signing, derive(&master, Purpose::OrderEncryption));
        assert_ne!(signing.expose(), master.expose());
        assert_eq!(format!("{signing:?}"), "Secret([redacted])");
    }

    #[test]
    fn keyed_tokens_are_stable_per_input_and_need_the_secret() {
        let secret = Key::random();
        let token = keyed_token(&secret, TokenPurpose::MiniAppPseudonym, &["a_1", "alice"]);
        assert_eq!(token.len(), 32);
        assert_eq!(token, keyed_token(&secret, TokenPurpose::MiniAppPseudonym, &["a_1", "alice"]));
        assert_ne!(token, keyed_token(&secret, TokenPurpose::MiniAppPseudonym, &["a_2", "alice"]));
        assert_ne!(token, keyed_token(&Key::random(), TokenPurpose::MiniAppPseudonym, &["a_1", "alice"]));
        // Parts are length-prefixed: moving a boundary is another input.
        assert_ne!(token, keyed_token(&secret, TokenPurpose::MiniAppPseudonym, &["a_1a", "lice"]));
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn signatures_bind_every_part_of_the_request() {
        let key = Key::random();
        let now = 1_800_000_000;
        let signature = Signature::create("k1", &key, "POST", "/orders", b"{\"a\":1}", now);
        assert_eq!(signature.check(&key, "POST", "/orders", b"{\"a\":1}", now + 10), Ok(()));
        assert_eq!(signature.check(&key, "POST", "/orders", b"{\"a\":2}", now), Err(SignatureError::Invalid));
        assert_eq!(signature.check(&key, "POST", "/refunds", b"{\"a\":1}", now), Err(SignatureError::Invalid));
        assert_eq!(signature.check(&key, "PUT", "/orders", b"{\"a\":1}", now), Err(SignatureError::Invalid));
        assert_eq!(signature.check(&Key::random(), "POST", "/orders", b"{\"a\":1}", now), Err(SignatureError::Invalid));
        assert_eq!(signature.check(&key, "POST", "/orders", b"{\"a\":1}", now + 301), Err(SignatureError::Stale));
        let ancient = Signature { timestamp: i64::MIN, ..signature.clone() };
        assert_eq!(ancient.check(&key, "POST", "/orders", b"{\"a\":1}", now), Err(SignatureError::Stale));
        let mut other_key_id = signature.clone();
        other_key_id.key_id = "k2".into();
        assert_eq!(other_key_id.check(&key, "POST", "/orders", b"{\"a\":1}", now), Err(SignatureError::Invalid));
        let headers = signature.headers();
        let parsed =
            Signature::from_headers(|name| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())).unwrap();
        assert_eq!(parsed, signature);
        assert_eq!(Signature::from_headers(|_| None), Err(SignatureError::Missing(HEADER_TIMESTAMP)));
    }

    #[test]
    fn sealed_payloads_open_only_with_their_key_and_associated_data() {
        let key = Key::random();
        let sealed = seal(&key, b"order 42", b"order-42|k1|1800000000");
        assert_eq!(open(&key, &sealed, b"order-42|k1|1800000000").as_deref(), Some(&b"order 42"[..]));
        assert_eq!(open(&key, &sealed, b"order-43|k1|1800000000"), None);
        assert_eq!(open(&Key::random(), &sealed, b"order-42|k1|1800000000"), None);
        let mut tampered = sealed.clone();
        tampered.ciphertext = BASE64.encode([0u8; 24]);
        assert_eq!(open(&key, &tampered, b"order-42|k1|1800000000"), None);
    }
}
