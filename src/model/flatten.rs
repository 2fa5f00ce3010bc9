//! Turns a watch event into EVENT_* variables: a pure function, no I/O.

use serde_json::Value;

/// Joins path components while flattening; a control character that no
/// Kubernetes field name contains, so the original path can be split again.
const SEP: char = '\u{1f}';

/// The kernel refuses a single environment string (`NAME=value` and its NUL) above this.
pub const MAX_VAR_BYTES: usize = 128 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    #[error("an event must be a JSON object")]
    NotAnObject,
    #[error("a field name contains the control character U+001F")]
    AmbiguousKey,
}

/// What to keep and how to name it.
#[derive(Debug, Clone)]
pub struct Options {
    pub prefix: String,
    pub filter_spec: bool,
    pub filter_status: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { prefix: "EVENT".into(), filter_spec: false, filter_status: false }
    }
}

/// A variable name two paths both gave; the later path (byte order) won.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collision {
    pub name: String,
    pub kept: String,
    pub dropped: String,
}

/// A variable that cannot be passed in an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub name: String,
    pub reason: &'static str,
}

/// The variables of one event, sorted by name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flattened {
    pub vars: Vec<(String, String)>,
    pub collisions: Vec<Collision>,
    pub rejected: Vec<Rejected>,
}

/// Flattens `event` (`{"type": T, "object": O}`, or any JSON object) into variables.
pub fn flatten(event: &Value, opts: &Options) -> Result<Flattened, FlattenError> {
    if !event.is_object() {
        return Err(FlattenError::NotAnObject);
    }
    let mut walk = Walk::new(opts, String::new());
    walk.value(event)?;
    Ok(walk.finish())
}

/// The variables of an event of type `kind` about `object`, without building the
/// `{"type", "object"}` wrapper: what the runner does for every event.
pub fn flatten_object(kind: &str, object: &Value, opts: &Options) -> Result<Flattened, FlattenError> {
    let mut walk = Walk::new(opts, "object".into());
    walk.name.push_str("_OBJECT");
    walk.value(object)?;
    walk.leaves.push((format!("{}_TYPE", opts.prefix), "type".into(), kind.into()));
    Ok(walk.finish())
}

/// One depth-first walk of the parsed value; `name` and `path` grow and shrink with it.
struct Walk<'a> {
    opts: &'a Options,
    name: String,
    path: String,
    /// (variable name, path joined with SEP, value)
    leaves: Vec<(String, String, String)>,
}

impl<'a> Walk<'a> {
    fn new(opts: &'a Options, path: String) -> Self {
        Walk { opts, name: opts.prefix.clone(), path, leaves: Vec::with_capacity(128) }
    }

    fn value(&mut self, v: &Value) -> Result<(), FlattenError> {
        match v {
            Value::Object(map) => {
                for (key, child) in map {
                    if key.contains(SEP) {
                        return Err(FlattenError::AmbiguousKey);
                    }
                    if !self.filtered(key) {
                        self.child(key, child)?;
                    }
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    self.child(&i.to_string(), child)?;
                }
            }
            leaf => self.leaves.push((self.name.clone(), self.path.clone(), scalar(leaf))),
        }
        Ok(())
    }

    fn child(&mut self, key: &str, child: &Value) -> Result<(), FlattenError> {
        let (name_len, path_len) = (self.name.len(), self.path.len());
        push_name(&mut self.name, key);
        if !self.path.is_empty() {
            self.path.push(SEP);
        }
        self.path.push_str(key);
        let result = self.value(child);
        self.name.truncate(name_len);
        self.path.truncate(path_len);
        result
    }

    /// -s and -S: the object's own spec and status only.
    fn filtered(&self, key: &str) -> bool {
        self.path == "object" && (self.opts.filter_spec && key == "spec" || self.opts.filter_status && key == "status")
    }

    fn finish(mut self) -> Flattened {
        self.leaves.sort_unstable_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        dedupe_and_check(self.leaves)
    }
}

fn push_name(name: &mut String, key: &str) {
    name.push('_');
    for c in key.chars() {
        let c = c.to_ascii_uppercase();
        name.push(if c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' { c } else { '_' });
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "1".into(),
        Value::Bool(false) => "0".into(),
        Value::Null => String::new(),
        Value::Number(n) => n.to_string(),
        // Containers are walked into; an empty one gives no variable.
        Value::Array(_) | Value::Object(_) => String::new(),
    }
}

/// `named` is sorted by (name, path): the last entry of each name wins.
fn dedupe_and_check(named: Vec<(String, String, String)>) -> Flattened {
    let mut out = Flattened::default();
    let mut iter = named.into_iter().peekable();
    while let Some((name, path, value)) = iter.next() {
        if let Some((next_name, next_path, _)) = iter.peek()
            && *next_name == name
        {
            out.collisions.push(Collision { name, kept: readable(next_path), dropped: readable(&path) });
            continue;
        }
        match check_value(&name, &value) {
            Some(reason) => out.rejected.push(Rejected { name, reason }),
            None => out.vars.push((name, value)),
        }
    }
    out
}

fn check_value(name: &str, value: &str) -> Option<&'static str> {
    if value.contains('\0') {
        Some("it contains a NUL byte")
    } else if name.len() + value.len() + 2 > MAX_VAR_BYTES {
        Some("it is longer than 128 KiB")
    } else {
        None
    }
}

fn readable(path: &str) -> String {
    path.replace(SEP, ".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(event: Value) -> Vec<(String, String)> {
        flatten(&event, &Options::default()).unwrap().vars
    }

    fn var(event: Value, name: &str) -> Option<String> {
        vars(event).into_iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    #[test]
    fn nested_keys_join_with_underscores() {
        let e = json!({"type": "ADDED", "object": {"metadata": {"name": "web"}}});
        assert_eq!(var(e, "EVENT_OBJECT_METADATA_NAME").as_deref(), Some("web"));
    }

    #[test]
    fn array_items_are_named_by_index() {
        let e = json!({"object": {"spec": {"containers": [{"image": "a"}, {"image": "b"}]}}});
        assert_eq!(var(e, "EVENT_OBJECT_SPEC_CONTAINERS_1_IMAGE").as_deref(), Some("b"));
    }

    #[test]
    fn dashes_dots_and_slashes_become_underscores() {
        let e = json!({"object": {"metadata": {"labels": {"app.kubernetes.io/pod-hash": "x"}}}});
        assert_eq!(var(e, "EVENT_OBJECT_METADATA_LABELS_APP_KUBERNETES_IO_POD_HASH").as_deref(), Some("x"));
    }

    #[test]
    fn non_ascii_characters_become_underscores() {
        let e = json!({"object": {"ä": "1"}});
        assert_eq!(var(e, "EVENT_OBJECT__").as_deref(), Some("1"));
    }

    #[test]
    fn bool_becomes_1_or_0() {
        let e = json!({"a": true, "b": false});
        assert_eq!(vars(e), vec![("EVENT_A".into(), "1".into()), ("EVENT_B".into(), "0".into())]);
    }

    #[test]
    fn null_becomes_empty_string() {
        assert_eq!(var(json!({"a": null}), "EVENT_A").as_deref(), Some(""));
    }

    #[test]
    fn integers_are_decimal_and_floats_shortest() {
        let e = json!({"i": -42, "big": 18446744073709551615u64, "f": 0.1, "g": 2.5e-7});
        let v = vars(e);
        assert!(v.contains(&("EVENT_I".into(), "-42".into())));
        assert!(v.contains(&("EVENT_BIG".into(), "18446744073709551615".into())));
        assert!(v.contains(&("EVENT_F".into(), "0.1".into())));
        assert!(v.contains(&("EVENT_G".into(), "2.5e-7".into())));
    }

    #[test]
    fn strings_are_kept_byte_for_byte() {
        let nasty = "$(touch /tmp/x) `id` 'q' \"d\" * trailing\\";
        assert_eq!(var(json!({"a": nasty}), "EVENT_A").as_deref(), Some(nasty));
    }

    #[test]
    fn empty_objects_and_arrays_give_nothing() {
        assert!(vars(json!({"a": {}, "b": [], "c": {"d": {}}})).is_empty());
    }

    #[test]
    fn filter_spec_drops_only_the_objects_spec() {
        let e = json!({"object": {"spec": {"a": 1}, "specialty": 2, "status": {"b": 3}}});
        let opts = Options { filter_spec: true, ..Options::default() };
        let names: Vec<_> = flatten(&e, &opts).unwrap().vars.into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["EVENT_OBJECT_SPECIALTY", "EVENT_OBJECT_STATUS_B"]);
    }

    #[test]
    fn filter_status_drops_the_objects_status() {
        let e = json!({"object": {"spec": {"a": 1}, "status": {"b": 3}}});
        let opts = Options { filter_status: true, ..Options::default() };
        let names: Vec<_> = flatten(&e, &opts).unwrap().vars.into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["EVENT_OBJECT_SPEC_A"]);
    }

    #[test]
    fn prefix_replaces_event() {
        let opts = Options { prefix: "X".into(), ..Options::default() };
        assert_eq!(flatten(&json!({"a": 1}), &opts).unwrap().vars, vec![("X_A".into(), "1".into())]);
    }

    #[test]
    fn colliding_names_keep_the_later_path_and_report_it() {
        let e = json!({"labels": {"a-b": "dash", "a.b": "dot"}});
        let f = flatten(&e, &Options::default()).unwrap();
        assert_eq!(f.vars, vec![("EVENT_LABELS_A_B".into(), "dot".into())]);
        assert_eq!(f.collisions[0].kept, "labels.a.b");
        assert_eq!(f.collisions[0].dropped, "labels.a-b");
    }

    #[test]
    fn nul_bytes_are_rejected_by_name() {
        let f = flatten(&json!({"a": "x\u{0}y", "b": "ok"}), &Options::default()).unwrap();
        assert_eq!(f.vars, vec![("EVENT_B".into(), "ok".into())]);
        assert_eq!(f.rejected[0].name, "EVENT_A");
    }

    #[test]
    fn values_over_128_kib_are_rejected() {
        let f = flatten(&json!({"a": "x".repeat(MAX_VAR_BYTES)}), &Options::default()).unwrap();
        assert!(f.vars.is_empty());
        assert_eq!(f.rejected[0].reason, "it is longer than 128 KiB");
    }

    #[test]
    fn flattening_the_object_alone_gives_what_the_wrapped_event_gives() {
        let object = json!({"metadata": {"name": "web", "labels": {"a-b": "x", "a.b": "y"}},
            "spec": {"containers": [{"image": "nginx", "ports": []}], "x": null}, "status": {"ok": true}});
        for (spec, status) in [(false, false), (true, false), (false, true)] {
            let opts = Options { filter_spec: spec, filter_status: status, ..Options::default() };
            let wrapped = flatten(&json!({"type": "MODIFIED", "object": object.clone()}), &opts).unwrap();
            assert_eq!(flatten_object("MODIFIED", &object, &opts).unwrap(), wrapped);
        }
    }

    #[test]
    fn a_key_holding_the_separator_is_an_error() {
        let e = json!({"object": {"a\u{1f}b": 1}});
        assert!(matches!(flatten(&e, &Options::default()), Err(FlattenError::AmbiguousKey)));
    }

    #[test]
    fn a_non_object_event_is_an_error() {
        assert!(matches!(flatten(&json!([1]), &Options::default()), Err(FlattenError::NotAnObject)));
    }

    #[test]
    fn operator_sh_pod_event_gives_the_same_74_variables() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
        let Ok(json) = std::fs::read_to_string(dir.join("operator-sh-pod-event.json")) else {
            eprintln!("skipped: {} is absent", dir.display());
            return;
        };
        let expected = std::fs::read_to_string(dir.join("operator-sh-pod-event.env")).unwrap();
        let event: Value = serde_json::from_str(&json).unwrap();
        let got: Vec<String> = vars(event).into_iter().map(|(n, v)| format!("{n}={v}")).collect();
        let mut want: Vec<&str> = expected.lines().collect();
        want.sort_unstable();
        assert_eq!(want.len(), 74);
        assert_eq!(got, want);
    }
}
