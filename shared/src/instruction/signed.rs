//! The transfer instruction: what the platform answers a client with, and what the transfer side
//! will move money on. It names the listing and the version it was priced at, the amount, the payee
//! and the payer, a single-use nonce, a lifetime of at most `MAX_LIFETIME_SECONDS`, and the exact
//! text the client must show with its SHA-256 (so what the user saw is part of what is signed).
//!
//! Its canonical form is one `name=value` line per field in a fixed order after a domain line
//! (`DOMAIN`), so its bytes can never be read as anything else that a key of ours signs (an offline
//! code, a request). A value holding a control character has no canonical form: no line can be
//! forged inside another. The platform signs the canonical form with a KMS ECC P-256 key only it may
//! use (ECDSA SHA-256, ASN.1 DER); whoever holds the public key verifies without calling KMS.
//! ECDSA signatures are malleable (another valid signature of the same bytes can be made from one),
//! so a signature is never a key of anything: what is spent once is the instruction's `id` and
//! `nonce`.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::crypto::sha256_hex;
use crate::dynamo::StoreError;
use crate::money::Money;

/// The first line of every instruction's canonical form.
pub const DOMAIN: &str = "superpay/transfer-instruction/v1";

/// The longest an instruction lives.
pub const MAX_LIFETIME_SECONDS: i64 = 300;

/// What the client must show the user before they confirm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema), schemars(rename = "InstructionDisplay"))]
#[serde(deny_unknown_fields)]
pub struct Display {
    /// Exactly this text is shown; its SHA-256 is the instruction's `display_hash`.
    pub text: String,
}

impl Display {
    /// What the user confirms paying `amount` to merchant `merchant_id`, named `name`, for
    /// `quantity` x `title`: the payee by name and by id (two shops may share a name), in text that
    /// shows as itself (names from before names were checked lose what would not). Both sides
    /// write it alike: the transfer side moves money only on the text its own terms give.
    pub fn of(amount: Money, name: &str, merchant_id: &str, quantity: u32, title: &str) -> Self {
        let name: String = name.chars().filter(|c| crate::text::shows_as_itself(*c)).collect();
        Display { text: format!("Pay {amount} to {name} ({merchant_id}) for {quantity} x {title}.") }
    }

    pub fn hash(&self) -> String {
        sha256_hex(self.text.as_bytes())
    }
}

/// A transfer instruction as the platform signs it: the transfer side refuses one that is not
/// signed as it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Instruction {
    /// `ti_...`: spent once, as is the nonce.
    pub id: String,
    pub listing_id: String,
    /// The version of the listing it was priced at.
    #[serde(deserialize_with = "crate::http::whole")]
    pub listing_version: u64,
    #[serde(deserialize_with = "crate::http::whole")]
    pub quantity: u32,
    pub amount: Money,
    /// The account the money goes to (`merchant:<id>`).
    pub payee: String,
    /// The user who may carry it out (their JWT subject).
    pub payer: String,
    pub nonce: String,
    /// Unix seconds.
    #[serde(deserialize_with = "crate::http::whole")]
    #[cfg_attr(feature = "openapi", schemars(range(min = 0)))]
    pub issued_at: i64,
    /// Unix seconds, at most `MAX_LIFETIME_SECONDS` (300) after `issued_at`.
    #[serde(deserialize_with = "crate::http::whole")]
    #[cfg_attr(feature = "openapi", schemars(range(min = 0)))]
    pub expires_at: i64,
    pub display: Display,
    /// The SHA-256 (hex) of `display.text`.
    pub display_hash: String,
    /// Which key signed it.
    pub kid: String,
}

impl Instruction {
    /// The bytes that are signed; `None` when a value holds a control character.
    pub fn canonical(&self) -> Option<Vec<u8>> {
        let fields: [(&str, String); 13] = [
            ("id", self.id.clone()),
            ("listing_id", self.listing_id.clone()),
            ("listing_version", self.listing_version.to_string()),
            ("quantity", self.quantity.to_string()),
            ("amount", self.amount.amount().to_string()),
            ("currency", self.amount.currency().code().to_owned()),
            ("payee", self.payee.clone()),
            ("payer", self.payer.clone()),
            ("nonce", self.nonce.clone()),
            ("issued_at", self.issued_at.to_string()),
            ("expires_at", self.expires_at.to_string()),
            ("display_hash", self.display_hash.clone()),
            ("kid", self.kid.clone()),
        ];
        if fields.iter().any(|(_, value)| value.chars().any(char::is_control)) {
            return None;
        }
        let mut text = String::from(DOMAIN);
        for (name, value) in fields {
            text.push('\n');
            text.push_str(name);
            text.push('=');
            text.push_str(&value);
        }
        Some(text.into_bytes())
    }
}

/// Why an instruction's signature does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureFault {
    #[error("the instruction was signed by another key")]
    OtherKey,
    #[error("the instruction has no canonical form")]
    NotCanonical,
    #[error("the signature does not match the instruction")]
    Mismatch,
    #[error("the text to show is not the text whose hash was signed")]
    DisplayChanged,
}

/// Checks `signature` (base64 of ASN.1 DER) over `instruction` with the P-256 public key
/// `public_key` (DER SubjectPublicKeyInfo, as KMS `GetPublicKey` gives it) that `kid` names.
pub fn verify(instruction: &Instruction, signature: &str, kid: &str, public_key: &[u8]) -> Result<(), SignatureFault> {
    if instruction.kid != kid {
        return Err(SignatureFault::OtherKey);
    }
    // The hash is signed; the text the client shows must be the one hashed.
    if instruction.display.hash() != instruction.display_hash {
        return Err(SignatureFault::DisplayChanged);
    }
    let message = instruction.canonical().ok_or(SignatureFault::NotCanonical)?;
    let signature = STANDARD.decode(signature).map_err(|_| SignatureFault::Mismatch)?;
    // aws-lc-rs reads the SubjectPublicKeyInfo and checks that the key is on P-256.
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, public_key)
        .verify(&message, &signature)
        .map_err(|_| SignatureFault::Mismatch)
}

/// Signs instructions with the platform's KMS key.
#[derive(Clone, Debug)]
pub struct InstructionSigner {
    kms: aws_sdk_kms::Client,
    key_id: String,
}

impl InstructionSigner {
    pub fn new(kms: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        InstructionSigner { kms, key_id: key_id.into() }
    }

    /// The id instructions name as their `kid`.
    pub fn kid(&self) -> &str {
        &self.key_id
    }

    /// The signature (base64 of ASN.1 DER) of `instruction`'s canonical form.
    pub async fn sign(&self, instruction: &Instruction) -> Result<String, StoreError> {
        let message =
            instruction.canonical().ok_or_else(|| StoreError::new("an instruction holds a control character"))?;
        let signed = self
            .kms
            .sign()
            .key_id(&self.key_id)
            .message(Blob::new(message))
            .message_type(MessageType::Raw)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .send()
            .await
            .map_err(|e| StoreError::caused("KMS could not sign the instruction", e))?;
        let signature = signed.signature().ok_or_else(|| StoreError::new("KMS answered no signature"))?;
        Ok(STANDARD.encode(signature.as_ref()))
    }
}

/// The platform's public key (DER SubjectPublicKeyInfo), fetched from KMS on a process's first use
/// (`kms:GetPublicKey`): whoever holds it verifies instructions without calling KMS, and cannot sign.
#[derive(Debug)]
pub struct PlatformKey {
    kms: aws_sdk_kms::Client,
    kid: String,
    public_key: tokio::sync::OnceCell<Vec<u8>>,
}

impl PlatformKey {
    /// Key `kid`: the only one instructions may name.
    pub fn new(kms: aws_sdk_kms::Client, kid: impl Into<String>) -> Self {
        PlatformKey { kms, kid: kid.into(), public_key: tokio::sync::OnceCell::new() }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub async fn public_key(&self) -> Result<&[u8], StoreError> {
        let key =
            self.public_key
                .get_or_try_init(|| async {
                    let output =
                        self.kms.get_public_key().key_id(&self.kid).send().await.map_err(|e| {
                            StoreError::caused("KMS could not give the instruction key's public key", e)
                        })?;
                    let key = output.public_key().ok_or_else(|| StoreError::new("KMS answered no public key"))?;
                    Ok::<_, StoreError>(key.as_ref().to_vec())
                })
                .await?;
        Ok(key)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
    use proptest::prelude::*;

    use super::*;

    pub(crate) fn instruction() -> Instruction {
        let display = Display::of(Money::parse("85.00", "USD").unwrap(), "Sea Shop", "m_1", 1, "Sea view room");
        Instruction {
            id: "ti_1".into(),
            listing_id: "sea-view".into(),
            listing_version: 2,
            quantity: 1,
            amount: Money::parse("85.00", "USD").expect("an amount"),
            payee: "merchant:m_1".into(),
            payer: "alice".into(),
            nonce: "ab".repeat(16),
            issued_at: 1_000,
            expires_at: 1_300,
            display_hash: display.hash(),
            display,
            kid: "k-1".into(),
        }
    }

    /// A P-256 key as KMS holds one: the public key as DER SubjectPublicKeyInfo, signatures as DER.
    pub(crate) struct LocalKey(EcdsaKeyPair);

    impl LocalKey {
        pub(crate) fn new() -> Self {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new()).unwrap();
            LocalKey(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap())
        }

        pub(crate) fn spki(&self) -> Vec<u8> {
            // The fixed DER prefix of a P-256 SubjectPublicKeyInfo, then the point.
            let prefix = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
            [prefix, self.0.public_key().as_ref().to_vec()].concat()
        }

        pub(crate) fn sign(&self, instruction: &Instruction) -> String {
            let message = instruction.canonical().unwrap();
            STANDARD.encode(self.0.sign(&SystemRandom::new(), &message).unwrap().as_ref())
        }
    }

    #[test]
    fn the_canonical_form_starts_with_its_domain_and_names_every_field() {
        let text = String::from_utf8(instruction().canonical().unwrap()).unwrap();
        assert!(text.starts_with("superpay/transfer-instruction/v1\nid=ti_1\n"), "{text}");
        assert!(text.contains("\namount=85.00\ncurrency=USD\npayee=merchant:m_1\npayer=alice\n"), "{text}");
        assert!(text.ends_with(&format!("\ndisplay_hash={}\nkid=k-1", instruction().display_hash)), "{text}");
        let forged = Instruction { payer: "alice\npayee=merchant:m_2".into(), ..instruction() };
        assert_eq!(forged.canonical(), None, "no line can be forged inside another");
    }

    #[test]
    fn a_signature_holds_for_its_instruction_and_key_only() {
        let key = LocalKey::new();
        let signed = instruction();
        let signature = key.sign(&signed);
        assert_eq!(verify(&signed, &signature, "k-1", &key.spki()), Ok(()));
        assert_eq!(verify(&signed, &signature, "k-2", &key.spki()), Err(SignatureFault::OtherKey));
        assert_eq!(verify(&signed, &signature, "k-1", &LocalKey::new().spki()), Err(SignatureFault::Mismatch));
        assert_eq!(verify(&signed, "not base64!", "k-1", &key.spki()), Err(SignatureFault::Mismatch));
        assert_eq!(verify(&signed, &signature, "k-1", &[]), Err(SignatureFault::Mismatch));
        // Another text shown under the signed hash.
        let shown = Instruction { display: Display { text: "Pay 1.00 USD to Sea Shop.".into() }, ..signed.clone() };
        assert_eq!(verify(&shown, &signature, "k-1", &key.spki()), Err(SignatureFault::DisplayChanged));
    }

    /// Each field, changed: the changed instruction.
    fn changed(field: usize, to: &str) -> Instruction {
        let mut i = instruction();
        match field {
            0 => i.id = to.into(),
            1 => i.listing_id = to.into(),
            2 => i.listing_version += 1,
            3 => i.quantity += 1,
            4 => i.amount = Money::parse("85.01", "USD").unwrap(),
            5 => i.amount = Money::parse("85.00", "EUR").unwrap(),
            6 => i.payee = to.into(),
            7 => i.payer = to.into(),
            8 => i.nonce = to.into(),
            9 => i.issued_at += 1,
            10 => i.expires_at += 1,
            11 => i.display_hash = to.into(),
            _ => i.kid = to.into(),
        }
        i
    }

    proptest! {
        /// Any change to any field changes the signed bytes, so the signature no longer holds.
        #[test]
        fn every_field_is_signed(field in 0usize..13, to in "[a-z0-9:_]{1,12}") {
            let key = LocalKey::new();
            let original = instruction();
            let other = changed(field, &to);
            prop_assume!(other != original);
            prop_assert_ne!(other.canonical(), original.canonical());
            let signature = key.sign(&original);
            let kid = other.kid.clone();
            prop_assert!(verify(&other, &signature, &kid, &key.spki()).is_err());
        }
    }
}
