//! Parses selectors written in label-selector syntax (`a=b,c in (d,e),!f`) into kube's
//! `Selector`, which matches them; used by --annotation-selector on annotations.

use kube::core::{Expression, Selector, SelectorExt};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("the selector is empty")]
    Empty,
    #[error("'{requirement}' is not a requirement: {reason}")]
    Invalid { requirement: String, reason: &'static str },
    #[error("a '(' is not closed")]
    Unclosed,
}

/// A parsed selector and its text (for logs).
#[derive(Debug, Clone)]
pub struct AnnotationSelector {
    pub text: String,
    selector: Selector,
}

impl AnnotationSelector {
    pub fn matches(&self, annotations: &BTreeMap<String, String>) -> bool {
        self.selector.matches(annotations)
    }
}

impl std::str::FromStr for AnnotationSelector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<Self, SelectorError> {
        let exprs = split(text)?.into_iter().map(requirement).collect::<Result<Vec<_>, _>>()?;
        if exprs.is_empty() {
            return Err(SelectorError::Empty);
        }
        Ok(AnnotationSelector { text: text.to_string(), selector: exprs.into_iter().collect() })
    }
}

/// The requirements: split at commas outside parentheses.
fn split(text: &str) -> Result<Vec<&str>, SelectorError> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth > 0 {
        return Err(SelectorError::Unclosed);
    }
    parts.push(text[start..].trim());
    if parts.len() == 1 && parts[0].is_empty() {
        return Ok(Vec::new());
    }
    Ok(parts)
}

fn requirement(req: &str) -> Result<Expression, SelectorError> {
    let bad = |reason| SelectorError::Invalid { requirement: req.to_string(), reason };
    if req.is_empty() {
        return Err(bad("it is empty"));
    }
    if let Some(key) = req.strip_prefix('!') {
        return Ok(Expression::DoesNotExist(word(key.trim()).ok_or(bad("expected a key after '!'"))?));
    }
    if let Some((key, value)) = req.split_once("!=") {
        return Ok(Expression::NotEqual(key_of(key).ok_or(bad("bad key"))?, value_of(value).ok_or(bad("bad value"))?));
    }
    if let Some((key, value)) = req.split_once("==").or_else(|| req.split_once('=')) {
        return Ok(Expression::Equal(key_of(key).ok_or(bad("bad key"))?, value_of(value).ok_or(bad("bad value"))?));
    }
    match req.split_once(char::is_whitespace) {
        None => Ok(Expression::Exists(word(req).ok_or(bad("bad key"))?)),
        Some((key, rest)) => set_requirement(key, rest.trim()).ok_or(bad("expected 'in (…)' or 'notin (…)'")),
    }
}

fn set_requirement(key: &str, rest: &str) -> Option<Expression> {
    let open = rest.find('(')?;
    let list = rest[open + 1..].trim_end().strip_suffix(')')?;
    let values: BTreeSet<String> = list.split(',').map(value_of).collect::<Option<_>>()?;
    match rest[..open].trim() {
        "in" => Some(Expression::In(word(key)?, values)),
        "notin" => Some(Expression::NotIn(word(key)?, values)),
        _ => None,
    }
}

/// A key or value: no spaces and none of the selector's own characters.
fn word(text: &str) -> Option<String> {
    let ok = !text.is_empty() && !text.contains(|c: char| c.is_whitespace() || "=!(),".contains(c));
    ok.then(|| text.to_string())
}

fn key_of(text: &str) -> Option<String> {
    word(text.trim())
}

/// Values may be empty (`a=` matches an empty value).
fn value_of(text: &str) -> Option<String> {
    let text = text.trim();
    if text.is_empty() { Some(String::new()) } else { word(text) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(text: &str) -> AnnotationSelector {
        text.parse().unwrap()
    }

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn equality_with_one_or_two_equals_signs() {
        assert!(sel("example.com/team=web").matches(&ann(&[("example.com/team", "web")])));
        assert!(sel("team == web").matches(&ann(&[("team", "web")])));
        assert!(!sel("team=web").matches(&ann(&[("team", "db")])));
    }

    #[test]
    fn inequality_also_matches_a_missing_key() {
        assert!(sel("team!=web").matches(&ann(&[])));
        assert!(!sel("team!=web").matches(&ann(&[("team", "web")])));
    }

    #[test]
    fn set_requirements_keep_their_commas() {
        let s = sel("tier in (a, b),env notin (prod)");
        assert!(s.matches(&ann(&[("tier", "b"), ("env", "dev")])));
        assert!(!s.matches(&ann(&[("tier", "b"), ("env", "prod")])));
        assert!(!s.matches(&ann(&[("tier", "c")])));
    }

    #[test]
    fn existence_and_absence() {
        assert!(sel("example.com/managed").matches(&ann(&[("example.com/managed", "")])));
        assert!(sel("!skip").matches(&ann(&[])));
        assert!(!sel("!skip,managed").matches(&ann(&[("skip", "1"), ("managed", "1")])));
    }

    #[test]
    fn bad_selectors_name_the_requirement() {
        for (text, part) in [("a=b,,c", "''"), ("a in b", "'a in b'"), ("a b", "'a b'"), ("!", "'!'")] {
            let err = text.parse::<AnnotationSelector>().unwrap_err().to_string();
            assert!(err.contains(part), "{text}: {err}");
        }
        assert_eq!("a in (b".parse::<AnnotationSelector>().unwrap_err(), SelectorError::Unclosed);
        assert_eq!(" ".parse::<AnnotationSelector>().unwrap_err(), SelectorError::Empty);
    }
}
