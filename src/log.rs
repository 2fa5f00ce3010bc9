//! Logging: operator-sh's line format (or JSON) to a file or stderr, through a non-blocking writer.

use crate::config::{LogConfig, LogFormat, LogLevel};
use std::fmt;
use std::fs::OpenOptions;
use std::path::PathBuf;
use tracing::{Event, Level, Subscriber};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot open log file '{path}'")]
    OpenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Installs the global subscriber. Keep the guard until exit: dropping it flushes the log.
pub fn init(cfg: &LogConfig) -> Result<WorkerGuard, LogError> {
    let (writer, guard) = match &cfg.file {
        Some(path) => {
            tracing_appender::non_blocking::NonBlockingBuilder::default().lossy(false).finish(open(path, cfg.reset)?)
        }
        None => tracing_appender::non_blocking::NonBlockingBuilder::default().lossy(false).finish(std::io::stderr()),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter(cfg.level)).with_writer(writer).with_ansi(false);
    match cfg.format {
        LogFormat::Text => builder.event_format(TextFormat).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
    Ok(guard)
}

fn open(path: &PathBuf, reset: bool) -> Result<std::fs::File, LogError> {
    let mut opts = OpenOptions::new();
    opts.create(true);
    if reset {
        opts.write(true).truncate(true)
    } else {
        opts.append(true)
    };
    opts.open(path).map_err(|source| LogError::OpenFile { path: path.clone(), source })
}

/// The runner's own lines at the chosen level. The client libraries log every retry
/// of an outage; the runner reports outages itself, once, so theirs show only at DEBUG.
fn filter(l: LogLevel) -> tracing_subscriber::EnvFilter {
    let own = level(l);
    let others = if own >= Level::DEBUG { own.to_string() } else { "off".to_string() };
    tracing_subscriber::EnvFilter::new(format!("{others},operator={own}"))
}

fn level(l: LogLevel) -> Level {
    match l {
        LogLevel::Trace => Level::TRACE,
        LogLevel::Debug => Level::DEBUG,
        LogLevel::Info => Level::INFO,
        LogLevel::Warning => Level::WARN,
        LogLevel::Error => Level::ERROR,
    }
}

/// operator-sh's level names.
pub fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARNING",
        Level::ERROR => "ERROR",
    }
}

/// `YYYY-MM-DD HH:MM:SS LEVEL message key=value…`, the format hooks/lib/log.sh writes too.
struct TextFormat;

impl<S, N> FormatEvent<S, N> for TextFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let now = jiff::Zoned::now().strftime("%Y-%m-%d %H:%M:%S");
        write!(w, "{now} {} ", level_name(event.metadata().level()))?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// A hook's output line that hooks/lib/log.sh already formatted: its level and its message.
pub fn parse_hook_line(line: &str) -> Option<(Level, &str)> {
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
        let (level, msg) = parse_hook_line("2026-01-02 03:04:05 WARNING disk almost full").unwrap();
        assert_eq!(level, Level::WARN);
        assert_eq!(msg, "disk almost full");
    }

    #[test]
    fn plain_lines_are_not_log_lines() {
        assert!(parse_hook_line("hello world").is_none());
        assert!(parse_hook_line("2026-01-02 03:04:05 LOUD x").is_none());
    }

    #[test]
    fn warn_is_written_as_warning() {
        assert_eq!(level_name(&Level::WARN), "WARNING");
    }
}
