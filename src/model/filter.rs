//! Which objects get hooks: --annotation-selector and --filter (a jq expression run
//! in-process with jaq), applied to every object before the watch's tracker.

use crate::model::selector::AnnotationSelector;
use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, compile, data, load};
use jaq_json::Val;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("at position {position} (near '{near}'): {message}")]
    Invalid { position: usize, near: String, message: String },
}

type JaqFilter = jaq_core::compile::Filter<jaq_core::Native<data::JustLut<Val>>>;

/// A compiled jq expression; an object matches when its first output is `true`.
pub struct JqFilter {
    pub text: String,
    filter: JaqFilter,
}

impl std::fmt::Debug for JqFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JqFilter({:?})", self.text)
    }
}

impl std::str::FromStr for JqFilter {
    type Err = FilterError;

    /// Compiles with jq's standard library; an error names its position (in characters).
    fn from_str(code: &str) -> Result<JqFilter, FilterError> {
        let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs());
        let funs = jaq_core::funs().chain(jaq_std::funs()).chain(jaq_json::funs());
        let arena = Arena::default();
        let modules = Loader::new(defs).load(&arena, File { code, path: () }).map_err(|errs| load_error(code, errs))?;
        let filter = Compiler::default().with_funs(funs).compile(modules).map_err(|errs| compile_error(code, errs))?;
        Ok(JqFilter { text: code.to_string(), filter })
    }
}

impl JqFilter {
    /// Whether the object (compact JSON) passes; an object the expression fails on does not.
    pub fn matches(&self, json: &str) -> Result<bool, String> {
        let input = jaq_json::read::parse_single(json.as_bytes()).map_err(|e| e.to_string())?;
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        match self.filter.id.run((ctx, input)).map(jaq_core::unwrap_valr).next() {
            Some(Ok(v)) => Ok(v == Val::from(true)),
            Some(Err(e)) => Err(e.to_string()),
            None => Ok(false),
        }
    }
}

/// The character position of `part`, a slice of `code`, and the text there.
fn locate(code: &str, part: &str) -> (usize, String) {
    let offset = (part.as_ptr() as usize).saturating_sub(code.as_ptr() as usize).min(code.len());
    let position = code[..offset].chars().count() + 1;
    let near: String = code[offset..].chars().take(12).collect();
    (position, if near.is_empty() { "end of expression".into() } else { near })
}

fn invalid(code: &str, part: &str, message: String) -> FilterError {
    let (position, near) = locate(code, part);
    FilterError::Invalid { position, near, message }
}

fn load_error(code: &str, errs: load::Errors<&str, ()>) -> FilterError {
    let Some((_, err)) = errs.into_iter().next() else {
        return invalid(code, code, "cannot be parsed".into());
    };
    match err {
        load::Error::Lex(e) => match e.first() {
            Some((expect, found)) => invalid(code, found, format!("expected {}", expect.as_str())),
            None => invalid(code, code, "cannot be read".into()),
        },
        load::Error::Parse(e) => match e.first() {
            Some((expect, found)) => invalid(code, found, format!("expected {}", expected(expect.as_str()))),
            None => invalid(code, code, "cannot be parsed".into()),
        },
        load::Error::Io(e) => invalid(code, code, e.first().map(|(_, m)| m.clone()).unwrap_or_default()),
    }
}

/// jaq says "nothing" where the expression should have ended.
fn expected(what: &str) -> &str {
    if what == "nothing" { "the end of the expression" } else { what }
}

fn compile_error(code: &str, errs: compile::Errors<&str, ()>) -> FilterError {
    match errs.into_iter().next().and_then(|(_, e)| e.into_iter().next()) {
        Some((name, undefined)) => invalid(code, name, format!("undefined {} '{name}'", undefined.as_str())),
        None => invalid(code, code, "cannot be compiled".into()),
    }
}

/// Both filters; an object gets hooks only if it passes every one given.
#[derive(Debug, Default)]
pub struct ObjectFilter {
    pub annotations: Option<AnnotationSelector>,
    pub jq: Option<JqFilter>,
}

impl ObjectFilter {
    pub fn is_empty(&self) -> bool {
        self.annotations.is_none() && self.jq.is_none()
    }

    /// Err says why the object fails --annotation-selector (for DEBUG lines).
    pub fn check_annotations(&self, annotations: Option<&BTreeMap<String, String>>) -> Result<(), String> {
        match &self.annotations {
            Some(sel) if !sel.matches(annotations.unwrap_or(&BTreeMap::new())) => {
                Err(format!("its annotations do not match --annotation-selector '{}'", sel.text))
            }
            _ => Ok(()),
        }
    }

    /// Err says why the object (compact JSON) fails --filter.
    pub fn check_json(&self, json: &str) -> Result<(), String> {
        match self.jq.as_ref().map(|jq| jq.matches(json)) {
            None | Some(Ok(true)) => Ok(()),
            Some(Ok(false)) => Err("--filter does not give true".into()),
            Some(Err(e)) => Err(format!("--filter failed on it ({e})")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jq(code: &str) -> JqFilter {
        code.parse().unwrap()
    }

    #[test]
    fn an_object_matches_when_the_expression_gives_true() {
        let f = jq(r#".metadata.labels.tier == "web""#);
        assert_eq!(f.matches(r#"{"metadata":{"labels":{"tier":"web"}}}"#), Ok(true));
        assert_eq!(f.matches(r#"{"metadata":{"labels":{"tier":"db"}}}"#), Ok(false));
    }

    #[test]
    fn only_true_counts_not_any_truthy_value() {
        assert_eq!(jq(".spec").matches(r#"{"spec":{"a":1}}"#), Ok(false));
        assert_eq!(jq("empty").matches("{}"), Ok(false));
    }

    #[test]
    fn the_standard_library_is_available() {
        let f = jq(r#"(.data // {} | keys | any(startswith("x"))) and (.metadata.name | test("^a"))"#);
        assert_eq!(f.matches(r#"{"metadata":{"name":"ab"},"data":{"xy":"1"}}"#), Ok(true));
    }

    #[test]
    fn a_runtime_error_is_reported_not_a_match() {
        assert!(jq(".a | keys").matches(r#"{"a":1}"#).is_err());
    }

    #[test]
    fn a_syntax_error_names_its_position() {
        let err = ".spec | (.a ==".parse::<JqFilter>().unwrap_err().to_string();
        assert!(err.starts_with("at position "), "{err}");
        let err = ".a | nosuchfunction(1)".parse::<JqFilter>().unwrap_err().to_string();
        assert!(err.contains("position 6") && err.contains("nosuchfunction"), "{err}");
    }

    #[test]
    fn both_filters_must_pass() {
        let f = ObjectFilter { annotations: Some("team=web".parse().unwrap()), jq: Some(jq(".spec.x == 1")) };
        let ann: BTreeMap<String, String> = [("team".to_string(), "web".to_string())].into();
        let check = |a: Option<&BTreeMap<String, String>>, json: &str| {
            f.check_annotations(a).and_then(|()| f.check_json(json)).is_ok()
        };
        assert!(check(Some(&ann), r#"{"spec":{"x":1}}"#));
        assert!(!check(None, r#"{"spec":{"x":1}}"#));
        assert!(!check(Some(&ann), r#"{"spec":{"x":2}}"#));
    }
}
