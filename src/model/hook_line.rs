//! A hook's output line that hooks/lib/log.sh formatted: `YYYY-MM-DD HH:MM:SS LEVEL message`.
//!
//! The runner logs such a line at the hook's own level instead of INFO, so that a
//! hook's `log_error` shows as an ERROR of the runner's log.

use tracing::Level;

/// A hook's output line that hooks/lib/log.sh already formatted: its level and its message.
pub fn parse(line: &str) -> Option<(Level, &str)> {
    let rest = line.get(20..)?;
    let stamp = line.get(..20)?.as_bytes();
    let shape_ok = stamp.iter().enumerate().all(|(i, b)| match i {
        4 | 7 => *b == b'-',
        10 | 19 => *b == b' ',
        13 | 16 => *b == b':',
        _ => b.is_ascii_digit(),
    });
    if !shape_ok {
        return None;
    }
    let (name, message) = rest.split_once(' ').unwrap_or((rest, ""));
    let level = match name {
        "TRACE" => Level::TRACE,
        "DEBUG" => Level::DEBUG,
        "INFO" => Level::INFO,
        "WARNING" | "WARN" => Level::WARN,
        "ERROR" => Level::ERROR,
        _ => return None,
    };
    Some((level, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_sh_lines_keep_their_level() {
        let (level, msg) = parse("2026-01-02 03:04:05 WARNING disk almost full").unwrap();
        assert_eq!(level, Level::WARN);
        assert_eq!(msg, "disk almost full");
    }

    #[test]
    fn plain_lines_are_not_log_lines() {
        assert!(parse("hello world").is_none());
        assert!(parse("2026-01-02 03:04:05 LOUD x").is_none());
    }
}
