//! The id rule: every id that comes from outside (path parameters, id fields of request bodies,
//! the key id of a signature) is checked before it is used in any read, so that no id can reach
//! DynamoDB's key limits (2048 bytes for a partition key) or smuggle separators into our keys.
//!
//! An id is 1 to `MAX_ID_CHARS` (128) characters, each an ASCII letter, a digit, `_`, `-`, `.` or
//! `:`. That covers every id we issue (`m_9f2c...`, key ids `m_9f2c....k2`, uuids, 64-hex top-up
//! tokens), the seed's (`m_demo`, `a_demo`) and conversation counterparties (`merchant:m_demo`).
//! Idempotency-Keys have their own rule (`crate::idempotency::IdempotencyKey`: up to 255 visible
//! ASCII characters, as Stripe's): clients choose them, and they are only ever stored hashed.

use crate::Problem;
use crate::problem::catalogue;

/// The longest id accepted, in characters (all ASCII, so also in bytes).
pub const MAX_ID_CHARS: usize = 128;

/// Whether `text` follows the id rule.
pub fn is_valid(text: &str) -> bool {
    (1..=MAX_ID_CHARS).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// `text` if it follows the id rule; else 400 `invalid_id` naming `field` (the value itself is not
/// echoed: it may be anything, of any length).
pub fn check<'a>(field: &str, text: &'a str) -> Result<&'a str, Problem> {
    if is_valid(text) {
        return Ok(text);
    }
    Err(Problem::new(catalogue::INVALID_ID,
        format!(
            "{field} is not a valid id (got {} characters): an id is 1 to {MAX_ID_CHARS} characters, each a letter, a digit, '_', '-', '.' or ':'",
            text.chars().count()
        ),
    )
    .with("field", field))
}

/// Whether `text` is a key id: an id `<owner>.<key>` (`m_1.k2`), naming its owner before the first
/// point (an empty owner would reach a read as an empty key, which DynamoDB refuses).
pub fn is_key_id(text: &str) -> bool {
    is_valid(text) && text.split_once('.').is_some_and(|(owner, key)| !owner.is_empty() && !key.is_empty())
}

/// `text` if it is a key id; else 400 `invalid_id` naming `field`.
pub fn check_key_id<'a>(field: &str, text: &'a str) -> Result<&'a str, Problem> {
    check(field, text)?;
    if is_key_id(text) {
        return Ok(text);
    }
    Err(Problem::new(catalogue::INVALID_ID, format!("{field} is not a key id: a key id is <owner>.<key>, e.g. m_1.k2"))
        .with("field", field))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_key_id_names_its_owner() {
        for good in ["m_1.k2", "d_1f3a.k1", "a_demo.k10"] {
            assert_eq!(check_key_id("key", good), Ok(good));
        }
        for bad in [".k1", ".", "m_1.", "m_1", "", "m 1.k1"] {
            assert!(check_key_id("key", bad).is_err(), "{bad:?}");
            assert!(!is_key_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn ids_we_issue_and_seed_are_valid() {
        for id in [
            "m_demo",
            "a_demo",
            "m_1f3a9c0b2d4e6f8a1b3c.k2",
            "0b0e5e0c-3f7a-4b8e-9d6c-2a1f0e9d8c7b",
            "merchant:m_demo",
            &"f".repeat(64),
            &"x".repeat(MAX_ID_CHARS),
        ] {
            assert_eq!(check("id", id), Ok(id), "{id}");
        }
    }

    #[test]
    fn other_text_is_refused_with_the_field_named() {
        for bad in ["", "a b", "m/1", "m%2F1", "é", "m_1\n", "o|1", "#", &"x".repeat(MAX_ID_CHARS + 1)] {
            let problem = check("merchant_id", bad).unwrap_err();
            assert_eq!((problem.status().as_u16(), problem.code), (400, "invalid_id"), "{bad:?}");
            assert_eq!(problem.extensions["field"], "merchant_id");
        }
        let long = check("{id}", &"o".repeat(10_000)).unwrap_err();
        assert!(long.detail.contains("10000 characters") && long.detail.len() < 200, "{}", long.detail);
    }

    proptest! {
        #[test]
        fn anything_accepted_is_within_the_limit_and_alphabet(
            text in prop_oneof!["\\PC{0,200}", "[A-Za-z0-9_.:/ %|é-]{0,140}"]
        ) {
            if is_valid(&text) {
                prop_assert!(!text.is_empty() && text.len() <= MAX_ID_CHARS);
                prop_assert!(text.chars().all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c)));
            }
        }

        #[test]
        fn everything_of_the_alphabet_within_the_limit_is_accepted(text in "[A-Za-z0-9_.:-]{1,128}") {
            prop_assert!(is_valid(&text));
        }

        #[test]
        fn longer_ids_are_refused(text in "[A-Za-z0-9_.:-]{129,300}") {
            prop_assert!(!is_valid(&text));
        }
    }
}
