//! Writes flattened variables for people and shells: `NAME=value` lines, JSON, `export` lines safe to eval, or NUL-separated.

use std::fmt::Write as _;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("variable name '{0}' is not a shell identifier, so it cannot be exported")]
    NotAnIdentifier(String),
    #[error("cannot encode the variables as JSON")]
    Json(#[source] serde_json::Error),
}

/// How `operator flatten` prints variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// `NAME=value` per line, as operator-sh printed them (a value with a newline spans lines)
    #[default]
    Env,
    /// One JSON object, name → value
    Json,
    /// `export NAME='value'` per variable: safe to `eval` or `source`, whatever the values hold
    Shell,
    /// `NAME=value` followed by a NUL byte, like `env -0`
    Nul,
}

/// The variables in `format`, in the order given.
pub fn render(vars: &[(String, String)], format: Format) -> Result<Vec<u8>, FormatError> {
    match format {
        Format::Env => Ok(joined(vars, '\n').into_bytes()),
        Format::Nul => Ok(joined(vars, '\0').into_bytes()),
        Format::Json => json(vars),
        Format::Shell => shell(vars).map(String::into_bytes),
    }
}

fn joined(vars: &[(String, String)], end: char) -> String {
    let mut out = String::with_capacity(vars.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
    for (name, value) in vars {
        let _ = write!(out, "{name}={value}{end}");
    }
    out
}

fn json(vars: &[(String, String)]) -> Result<Vec<u8>, FormatError> {
    let map: serde_json::Map<String, serde_json::Value> =
        vars.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
    let mut out = serde_json::to_vec_pretty(&map).map_err(FormatError::Json)?;
    out.push(b'\n');
    Ok(out)
}

/// Inside single quotes a shell expands nothing; the only character that needs care is
/// the quote itself, written as `'\''` (end quote, escaped quote, quote again). Values
/// never hold NUL (flattening leaves such variables out), the one byte a shell string
/// cannot carry.
fn shell(vars: &[(String, String)]) -> Result<String, FormatError> {
    let mut out = String::new();
    for (name, value) in vars {
        if !is_identifier(name) {
            return Err(FormatError::NotAnIdentifier(name.clone()));
        }
        let _ = writeln!(out, "export {name}='{}'", value.replace('\'', r"'\''"));
    }
    Ok(out)
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn text(v: &[(String, String)], f: Format) -> String {
        String::from_utf8(render(v, f).unwrap()).unwrap()
    }

    #[test]
    fn env_is_name_equals_value_lines() {
        assert_eq!(text(&vars(&[("A", "1"), ("B", "x y")]), Format::Env), "A=1\nB=x y\n");
    }

    #[test]
    fn nul_ends_every_pair_with_a_nul_like_env_0() {
        assert_eq!(text(&vars(&[("A", "1\n2"), ("B", "")]), Format::Nul), "A=1\n2\0B=\0");
    }

    #[test]
    fn json_is_an_object_of_strings() {
        let out: serde_json::Value =
            serde_json::from_str(&text(&vars(&[("A", "1"), ("B", "\"q\"")]), Format::Json)).unwrap();
        assert_eq!(out, serde_json::json!({"A": "1", "B": "\"q\""}));
    }

    #[test]
    fn shell_quotes_single_quotes_and_nothing_else() {
        assert_eq!(text(&vars(&[("A", "it's $(x)")]), Format::Shell), "export A='it'\\''s $(x)'\n");
    }

    #[test]
    fn shell_refuses_a_name_that_is_not_an_identifier() {
        let err = render(&vars(&[("A-B", "1")]), Format::Shell).unwrap_err().to_string();
        assert!(err.contains("'A-B'"), "{err}");
    }
}
