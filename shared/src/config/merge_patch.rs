//! JSON Merge Patch (RFC 7396): `diff` makes the patch that takes one document to another, `apply`
//! is the RFC's algorithm. Parameter groups hold no `null` (it means "delete" in a patch), which is
//! what makes `apply(old, diff(old, new)) == new` hold for every pair (see the property test).

use serde_json::{Map, Value};

pub fn diff(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = Map::new();
            for key in old.keys().filter(|k| !new.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            for (key, new_value) in new {
                match old.get(key) {
                    Some(old_value) if old_value == new_value => {}
                    Some(old_value @ Value::Object(_)) if new_value.is_object() => {
                        patch.insert(key.clone(), diff(old_value, new_value));
                    }
                    _ => {
                        patch.insert(key.clone(), new_value.clone());
                    }
                }
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

pub fn apply(target: &Value, patch: &Value) -> Value {
    let Value::Object(patch) = patch else {
        return patch.clone();
    };
    let mut result = match target {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    for (key, value) in patch {
        if value.is_null() {
            result.remove(key);
        } else {
            let merged = apply(result.get(key).unwrap_or(&Value::Null), value);
            result.insert(key.clone(), merged);
        }
    }
    Value::Object(result)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn rfc7396_examples() {
        // Appendix A of RFC 7396, a selection.
        assert_eq!(apply(&json!({"a":"b"}), &json!({"a":"c"})), json!({"a":"c"}));
        assert_eq!(apply(&json!({"a":"b"}), &json!({"a":null})), json!({}));
        assert_eq!(apply(&json!({"a":{"b":"c"}}), &json!({"a":{"b":"d","c":null}})), json!({"a":{"b":"d"}}));
        assert_eq!(apply(&json!({"a":[{"b":"c"}]}), &json!({"a":[1]})), json!({"a":[1]}));
        assert_eq!(apply(&json!(["a", "b"]), &json!(["c", "d"])), json!(["c", "d"]));
        assert_eq!(apply(&json!({"e":null}), &json!({"a":1})), json!({"e":null,"a":1}));
    }

    #[test]
    fn diff_carries_only_what_changed() {
        let old = json!({"theme":"light","limits":{"daily":"500.00","single":"100.00"},"gone":1});
        let new = json!({"theme":"light","limits":{"daily":"800.00","single":"100.00"},"added":[1]});
        assert_eq!(diff(&old, &new), json!({"limits":{"daily":"800.00"},"gone":null,"added":[1]}));
    }

    /// JSON without nulls, as parameter groups are.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z0-9 ]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-d]{1,2}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A JSON object without nulls, as a parameter group is.
    pub(crate) fn object() -> impl Strategy<Value = Value> {
        prop::collection::btree_map("[a-d]{1,2}", value(), 0..6).prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    proptest! {
        #[test]
        fn applying_the_diff_yields_the_new_document(old in object(), new in object()) {
            prop_assert_eq!(apply(&old, &diff(&old, &new)), new);
        }

        #[test]
        fn the_diff_of_a_document_with_itself_is_empty(doc in object()) {
            prop_assert_eq!(diff(&doc, &doc), json!({}));
        }
    }
}
