//! The user's payment PIN (capability 1): what confirms a payment in any loading process. Pure:
//! its format and what is too easy to guess, the stored hash, and the lockout rule. The shell is
//! `store` (the table and the KMS pepper).
//!
//! A six-digit PIN has a million values, so a dump of the table would fall to brute force whatever
//! the hash. What is stored is therefore a slow hash of a KMS HMAC of the PIN (the pepper: the key
//! never leaves KMS, so guessing needs a KMS call per guess, which IAM, quotas and CloudTrail
//! govern), and each user has 5 tries before a lockout.

pub mod store;

use std::num::NonZeroU32;

use aws_lc_rs::pbkdf2;
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as BASE64;
use serde_json::Value;

use crate::Problem;
use crate::problem::catalogue;

/// Wrong tries before the PIN is locked.
pub const MAX_TRIES: u32 = 5;
/// PBKDF2-HMAC-SHA256 iterations for a new hash (stored with it, so it can be raised). The pepper
/// carries the guessing cost: with it leaked as well, no iteration count saves a million-value PIN,
/// so the count is set for latency, about 5 ms on this machine and 70 ms on a 128 MB Lambda
/// (docs/decisions.md, "The payment PIN").
pub const ITERATIONS: u32 = 20_000;
const SCHEME: &str = "pbkdf2-sha256";

/// A PIN as entered: exactly six ASCII digits. Never printed (its `Debug` hides it).
pub struct Pin(String);

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin(******)")
    }
}

impl Pin {
    /// The PIN in a body's `field`, taken as raw JSON so that no refusal (serde's included) can
    /// quote it: a string of exactly six digits.
    pub fn parse(field: &str, json: &Value) -> Result<Pin, Problem> {
        match json.as_str() {
            Some(text) if text.len() == 6 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(Pin(text.to_owned())),
            _ => Err(Problem::new(
                catalogue::INVALID_PAYMENT_PIN,
                format!("{field} must be a string of exactly six digits"),
            )),
        }
    }

    /// A PIN to set: refused when it is one digit repeated or a run up or down (`123456`,
    /// `987654`), the first guesses of anyone.
    pub fn parse_new(field: &str, json: &Value) -> Result<Pin, Problem> {
        let pin = Pin::parse(field, json)?;
        let digits: Vec<i16> = pin.0.bytes().map(|b| i16::from(b - b'0')).collect();
        let steps: Vec<i16> = digits.windows(2).map(|w| w[1] - w[0]).collect();
        if [0, 1, -1].iter().any(|step| steps.iter().all(|s| s == step)) {
            return Err(Problem::new(
                catalogue::WEAK_PAYMENT_PIN,
                format!("{field} is one digit repeated or a run of digits: choose one that is harder to guess"),
            ));
        }
        Ok(pin)
    }

    /// What KMS MACs: the user is part of it, so one user's hash says nothing of another's.
    pub fn mac_message(&self, user: &str) -> Vec<u8> {
        format!("superpay-pin/v1\0{user}\0{}", self.0).into_bytes()
    }
}

/// The stored form of a peppered PIN: `pbkdf2-sha256$<iterations>$<salt>$<hash>`.
pub fn hash(peppered: &[u8], salt: &[u8]) -> String {
    let iterations = NonZeroU32::new(ITERATIONS).unwrap_or(NonZeroU32::MIN);
    let mut out = [0u8; 32];
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, salt, peppered, &mut out);
    format!("{SCHEME}${ITERATIONS}${}${}", BASE64.encode(salt), BASE64.encode(out))
}

/// Whether `peppered` is what `stored` was made from. A stored value that is not one of ours
/// matches nothing.
pub fn matches(peppered: &[u8], stored: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some(SCHEME), Some(iterations), Some(salt), Some(expected), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Some(iterations), Ok(salt), Ok(expected)) =
        (iterations.parse().ok().and_then(NonZeroU32::new), BASE64.decode(salt), BASE64.decode(expected))
    else {
        return false;
    };
    pbkdf2::verify(pbkdf2::PBKDF2_HMAC_SHA256, iterations, &salt, peppered, &expected).is_ok()
}

/// The longest a lockout lasts.
pub const MAX_LOCKOUT_SECONDS: i64 = 86_400;

/// How long a lockout lasts after `earlier` lockouts in a row (since the last right PIN): `base`
/// (template `PaymentPinLockoutSeconds`), doubled at each, at most a day; so a guesser who waits
/// out every lockout gets ever fewer tries a day, not 480 forever.
pub fn lockout_seconds(base: i64, earlier: u32) -> i64 {
    base.saturating_mul(1_i64 << earlier.min(30)).min(MAX_LOCKOUT_SECONDS.max(base))
}

/// When a PIN with `tries` wrong tries, the last at `last_try_at`, locked until `until` by its
/// fifth (when that was recorded), opens again (`None`: it is not locked at `now`). At least
/// `base` after the last try, whatever was recorded. The store's conditions are this rule written
/// for DynamoDB.
pub fn locked_until(tries: u32, last_try_at: i64, until: Option<i64>, base: i64, now: i64) -> Option<i64> {
    let until = (last_try_at + base).max(until.unwrap_or(i64::MIN));
    (tries >= MAX_TRIES && now < until).then_some(until)
}

pub fn locked(until: i64) -> Problem {
    Problem::new(
        catalogue::PAYMENT_PIN_LOCKED,
        format!("the payment PIN is locked after {MAX_TRIES} wrong tries; try again after {until} (epoch seconds)"),
    )
    .with("locked_until", until)
}

pub fn wrong(tries: u32) -> Problem {
    let left = MAX_TRIES.saturating_sub(tries);
    Problem::new(catalogue::PAYMENT_PIN_WRONG, format!("the payment PIN is wrong; {left} tries left before it locks"))
        .with("tries_left", left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn a_pin_is_six_digits_and_never_printed() {
        for bad in [
            json!("12345"),
            json!("1234567"),
            json!("12345a"),
            json!("١٢٣٤٥٦"),
            json!(""),
            json!(" 12345"),
            json!(482913),
            json!(null),
            json!(["482913"]),
        ] {
            let refused = Pin::parse("pin", &bad).unwrap_err();
            assert_eq!(refused.code, catalogue::INVALID_PAYMENT_PIN.code(), "{bad:?}");
            assert!(!refused.detail.contains("482913"), "the refusal never quotes it: {}", refused.detail);
        }
        let pin = Pin::parse("pin", &json!("482913")).unwrap();
        assert_eq!(format!("{pin:?}"), "Pin(******)");
    }

    #[test]
    fn a_new_pin_may_not_be_a_repeat_or_a_run() {
        for weak in ["000000", "777777", "123456", "456789", "987654", "543210"] {
            assert_eq!(
                Pin::parse_new("pin", &json!(weak)).unwrap_err().code,
                catalogue::WEAK_PAYMENT_PIN.code(),
                "{weak:?}"
            );
        }
        for fine in ["482913", "123457", "112233", "135790"] {
            assert!(Pin::parse_new("pin", &json!(fine)).is_ok(), "{fine:?}");
        }
    }

    #[test]
    fn the_lockout_starts_at_the_fifth_wrong_try_and_ends_after_its_time() {
        assert_eq!(locked_until(4, 100, None, 900, 101), None);
        assert_eq!(locked_until(5, 100, None, 900, 101), Some(1000));
        assert_eq!(locked_until(5, 100, None, 900, 999), Some(1000));
        assert_eq!(locked_until(5, 100, None, 900, 1000), None);
        // A longer lockout recorded by the fifth try holds; an old one does not shorten it.
        assert_eq!(locked_until(5, 100, Some(1900), 900, 1000), Some(1900));
        assert_eq!(locked_until(5, 100, Some(50), 900, 101), Some(1000));
    }

    #[test]
    fn each_lockout_in_a_row_lasts_twice_the_one_before_up_to_a_day() {
        assert_eq!((0..4).map(|n| lockout_seconds(900, n)).collect::<Vec<_>>(), [900, 1800, 3600, 7200]);
        assert_eq!(lockout_seconds(900, 7), MAX_LOCKOUT_SECONDS);
        assert_eq!(lockout_seconds(900, u32::MAX), MAX_LOCKOUT_SECONDS);
        assert_eq!(lockout_seconds(3, 1), 6);
    }

    #[test]
    fn foreign_stored_values_match_nothing() {
        for stored in ["", "plain", "pbkdf2-sha256$0$AA$AA", "md5$1$AA$AA", "pbkdf2-sha256$1$!!$AA$extra"] {
            assert!(!matches(b"anything", stored), "{stored:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// A hash matches its own peppered PIN and no other, and two hashes of one PIN differ by salt.
        #[test]
        fn a_hash_matches_its_own_pin_alone(a in proptest::collection::vec(any::<u8>(), 32),
                                            b in proptest::collection::vec(any::<u8>(), 32)) {
            let stored = hash(&a, b"salt-one-16bytes");
            prop_assert!(matches(&a, &stored));
            prop_assert_eq!(matches(&b, &stored), a == b);
            prop_assert_ne!(stored, hash(&a, b"salt-two-16bytes"));
        }
    }
}
