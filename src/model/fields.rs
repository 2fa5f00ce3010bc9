//! What changed between two versions of an object: field paths as hook file names, their
//! values old and new, and the digest that tells a status-only change from a real one.

use serde_json::Value;
use std::hash::Hasher;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldPathError {
    #[error("'{0}' is not a field path: {1}")]
    Invalid(String, &'static str),
}

/// One step of a path: an object key, or a key that may also index an array (digits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(String, usize),
}

/// A dotted path as written in a field hook's file name, e.g. `spec.replicas`,
/// `spec.containers.0.image` or `metadata.labels[app.kubernetes.io~1name]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    pub text: String,
    pub steps: Vec<Step>,
}

impl std::str::FromStr for FieldPath {
    type Err = FieldPathError;

    /// `a.b` separates keys; `[k]` is one key taken literally, with the JSON Pointer
    /// escapes `~1` for `/` and `~0` for `~` (a file name cannot hold `/`).
    fn from_str(text: &str) -> Result<FieldPath, FieldPathError> {
        let bad = |why| FieldPathError::Invalid(text.to_string(), why);
        let mut steps = Vec::new();
        let mut rest = text;
        let mut first = true;
        while !rest.is_empty() || first {
            if let Some(inner) = rest.strip_prefix('[') {
                let end = inner.find(']').ok_or(bad("a '[' is not closed"))?;
                steps.push(Step::Key(unescape(&inner[..end]).ok_or(bad("'~' must be followed by 0 or 1"))?));
                rest = &inner[end + 1..];
            } else {
                if !first {
                    rest = rest.strip_prefix('.').ok_or(bad("expected '.' or '[' after ']'"))?;
                }
                let end = rest.find(['.', '[']).unwrap_or(rest.len());
                let key = &rest[..end];
                if key.is_empty() {
                    return Err(bad("a key is empty"));
                }
                if key.contains(']') {
                    return Err(bad("a ']' without '['"));
                }
                steps.push(match key.parse::<usize>() {
                    Ok(i) if key.bytes().all(|b| b.is_ascii_digit()) => Step::Index(key.to_string(), i),
                    _ => Step::Key(key.to_string()),
                });
                rest = &rest[end..];
            }
            first = false;
        }
        Ok(FieldPath { text: text.to_string(), steps })
    }
}

fn unescape(key: &str) -> Option<String> {
    let mut out = String::with_capacity(key.len());
    let mut chars = key.chars();
    while let Some(c) = chars.next() {
        match c {
            '~' => out.push(match chars.next()? {
                '0' => '~',
                '1' => '/',
                _ => return None,
            }),
            c => out.push(c),
        }
    }
    Some(out)
}

impl FieldPath {
    /// The value at this path; None when any step is missing.
    pub fn lookup<'a>(&self, mut v: &'a Value) -> Option<&'a Value> {
        for step in &self.steps {
            v = match (step, v) {
                (Step::Index(_, i), Value::Array(items)) => items.get(*i)?,
                (Step::Index(key, _) | Step::Key(key), Value::Object(map)) => map.get(key)?,
                _ => return None,
            };
        }
        Some(v)
    }
}

/// A field's value before and after, as compact JSON (`null` when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    pub old: String,
    pub new: String,
}

/// The change of `path` from `old` (None: no previous object) to `new`, if it changed.
/// Absent and `null` count as the same value.
pub fn change(path: &FieldPath, old: Option<&Value>, new: &Value) -> Option<FieldChange> {
    let before = old.and_then(|o| path.lookup(o)).unwrap_or(&Value::Null);
    let after = path.lookup(new).unwrap_or(&Value::Null);
    (before != after).then(|| FieldChange { old: before.to_string(), new: after.to_string() })
}

/// What --ignore-status-changes leaves out of the comparison.
const BOOKKEEPING: [&str; 3] = ["resourceVersion", "managedFields", "generation"];

/// A digest of everything but `.status` and the bookkeeping fields of `.metadata`: two
/// versions with the same digest differ only in what --ignore-status-changes ignores.
pub fn digest(object: &Value) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    if let Value::Object(map) = object {
        for (key, v) in map {
            match (key.as_str(), v) {
                ("status", _) => continue,
                ("metadata", Value::Object(meta)) => {
                    h.write(b"metadata\xff");
                    for (k, v) in meta.iter().filter(|(k, _)| !BOOKKEEPING.contains(&k.as_str())) {
                        h.write(k.as_bytes());
                        h.write_u8(0xff);
                        hash_value(&mut h, v);
                    }
                }
                _ => {
                    h.write(key.as_bytes());
                    h.write_u8(0xff);
                    hash_value(&mut h, v);
                }
            }
        }
    }
    h.finish()
}

fn hash_value(h: &mut impl Hasher, v: &Value) {
    match v {
        Value::Null => h.write_u8(0),
        Value::Bool(b) => h.write_u8(1 + u8::from(*b)),
        Value::Number(n) => {
            h.write_u8(3);
            h.write(n.to_string().as_bytes());
        }
        Value::String(s) => {
            h.write_u8(4);
            h.write(s.as_bytes());
            h.write_u8(0xff);
        }
        Value::Array(items) => {
            h.write_u8(5);
            h.write_usize(items.len());
            items.iter().for_each(|i| hash_value(h, i));
        }
        Value::Object(map) => {
            h.write_u8(6);
            h.write_usize(map.len());
            for (k, v) in map {
                h.write(k.as_bytes());
                h.write_u8(0xff);
                hash_value(h, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(text: &str) -> FieldPath {
        text.parse().unwrap()
    }

    #[test]
    fn dots_separate_keys() {
        assert_eq!(path("spec.replicas").steps, vec![Step::Key("spec".into()), Step::Key("replicas".into())]);
    }

    #[test]
    fn a_bracketed_key_keeps_its_dots_and_unescapes_slashes() {
        let p = path("metadata.labels[app.kubernetes.io~1name]");
        assert_eq!(p.steps[2], Step::Key("app.kubernetes.io/name".into()));
        assert_eq!(path("a[x~0y]").steps[1], Step::Key("x~y".into()));
    }

    #[test]
    fn brackets_may_follow_each_other_and_be_followed_by_dots() {
        let p = path("[a.b][c].d");
        assert_eq!(p.steps, vec![Step::Key("a.b".into()), Step::Key("c".into()), Step::Key("d".into())]);
    }

    #[test]
    fn bad_paths_are_errors_naming_the_path() {
        for bad in ["", ".a", "a.", "a..b", "a[b", "a]b", "a[b]c", "a[x~2]"] {
            let err = bad.parse::<FieldPath>().unwrap_err().to_string();
            assert!(err.contains(&format!("'{bad}'")), "{bad}: {err}");
        }
    }

    #[test]
    fn digits_index_arrays_and_are_keys_in_objects() {
        let v = json!({"spec": {"containers": [{"image": "a"}, {"image": "b"}], "m": {"1": "one"}}});
        assert_eq!(path("spec.containers.1.image").lookup(&v), Some(&json!("b")));
        assert_eq!(path("spec.m.1").lookup(&v), Some(&json!("one")));
        assert_eq!(path("spec.containers.7.image").lookup(&v), None);
    }

    #[test]
    fn a_changed_value_gives_old_and_new_as_compact_json() {
        let c =
            change(&path("spec.replicas"), Some(&json!({"spec": {"replicas": 1}})), &json!({"spec": {"replicas": 3}}));
        assert_eq!(c, Some(FieldChange { old: "1".into(), new: "3".into() }));
    }

    #[test]
    fn an_unchanged_value_is_no_change_even_if_other_fields_changed() {
        let old = json!({"spec": {"replicas": 1, "x": 1}});
        assert_eq!(change(&path("spec.replicas"), Some(&old), &json!({"spec": {"replicas": 1, "x": 2}})), None);
    }

    #[test]
    fn without_an_old_object_a_present_field_changed_from_null() {
        let c = change(&path("spec.selector"), None, &json!({"spec": {"selector": {"a": "b"}}}));
        assert_eq!(c, Some(FieldChange { old: "null".into(), new: "{\"a\":\"b\"}".into() }));
    }

    #[test]
    fn a_field_absent_on_both_sides_or_null_and_absent_is_no_change() {
        assert_eq!(change(&path("spec.x"), None, &json!({"spec": {}})), None);
        assert_eq!(change(&path("spec.x"), Some(&json!({"spec": {"x": null}})), &json!({})), None);
    }

    #[test]
    fn a_removed_field_changes_to_null() {
        let c =
            change(&path("metadata.labels.tier"), Some(&json!({"metadata": {"labels": {"tier": "web"}}})), &json!({}));
        assert_eq!(c, Some(FieldChange { old: "\"web\"".into(), new: "null".into() }));
    }

    #[test]
    fn status_and_bookkeeping_do_not_change_the_digest() {
        let a = json!({"metadata": {"name": "x", "resourceVersion": "1", "generation": 1}, "spec": {"a": 1}, "status": {"p": 1}});
        let b = json!({"metadata": {"name": "x", "resourceVersion": "2", "generation": 2, "managedFields": []}, "spec": {"a": 1}, "status": {"p": 2}});
        assert_eq!(digest(&a), digest(&b));
    }

    #[test]
    fn spec_labels_and_annotations_change_the_digest() {
        let base = json!({"metadata": {"name": "x", "labels": {"a": "1"}}, "spec": {"a": 1}});
        for other in [
            json!({"metadata": {"name": "x", "labels": {"a": "1"}}, "spec": {"a": 2}}),
            json!({"metadata": {"name": "x", "labels": {"a": "2"}}, "spec": {"a": 1}}),
            json!({"metadata": {"name": "x", "labels": {"a": "1"}, "annotations": {"b": ""}}, "spec": {"a": 1}}),
            json!({"metadata": {"name": "x", "labels": {"a": "1"}}, "spec": {"a": 1}, "data": {}}),
        ] {
            assert_ne!(digest(&base), digest(&other), "{other}");
        }
    }

    #[test]
    fn a_string_split_differently_across_keys_changes_the_digest() {
        assert_ne!(digest(&json!({"spec": {"ab": "c"}})), digest(&json!({"spec": {"a": "bc"}})));
    }
}
