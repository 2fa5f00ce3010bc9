//! Logging: operator-sh's line format (or JSON) to a file or stderr, through a non-blocking writer.

use crate::config::{LogConfig, LogFormat, LogLevel};
use std::fmt;
use std::fs::OpenOptions;
use std::path::PathBuf;
use tracing::{Event, Level, Subscriber};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("RUST_LOG is not a valid filter: {0}")]
    RustLog(String),
    #[error("cannot open log file '{path}'")]
    OpenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Lines waiting for the log writer thread. tracing-appender's default (128,000) is a
/// queue whose slots are all written when it is made: 3.7 MiB of resident memory from
/// the start, a fifth of an idle runner's 17 MiB. A writer that falls this far behind
/// makes the logging thread wait (lossless), which only a stalled disk does.
const QUEUED_LINES: usize = 8192;

/// Installs the global subscriber. Keep the guard until exit: dropping it flushes the log.
pub fn init(cfg: &LogConfig) -> Result<WorkerGuard, LogError> {
    let builder = || NonBlockingBuilder::default().lossy(false).buffered_lines_limit(QUEUED_LINES);
    let (writer, guard) = match &cfg.file {
        Some(path) => builder().finish(open(path, cfg.reset)?),
        None => builder().finish(std::io::stderr()),
    };
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = filter(cfg.level, rust_log.as_deref())?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(false);
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

/// The runner's own lines at the chosen level. The client libraries (hyper, rustls,
/// tower, kube-client) log every connection and retry: at DEBUG they would bury the
/// hook's story under the transport's, so they show only at TRACE (at their DEBUG),
/// or as RUST_LOG asks; RUST_LOG's directives come last, so they win.
pub fn filter(l: LogLevel, rust_log: Option<&str>) -> Result<tracing_subscriber::EnvFilter, LogError> {
    let own = level(l);
    let others = if own == Level::TRACE { "debug" } else { "off" };
    let mut directives = format!("{others},operator={own}");
    if let Some(extra) = rust_log.map(str::trim).filter(|r| !r.is_empty()) {
        directives.push(',');
        directives.push_str(extra);
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(&directives)
        .map_err(|e| LogError::RustLog(format!("'{}': {e}", rust_log.unwrap_or_default())))
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
        // Lines of the client libraries (TRACE, RUST_LOG) say whose they are.
        let target = event.metadata().target();
        if !target.starts_with("operator") {
            write!(w, "{target}: ")?;
        }
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines a subscriber with this filter writes for one runner line and one
    /// transport line at DEBUG.
    fn written(l: LogLevel, rust_log: Option<&str>) -> String {
        use std::sync::{Arc, Mutex};
        let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = buf.clone();
        let make = move || Sink(sink.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter(l, rust_log).unwrap())
            .with_writer(make)
            .event_format(TextFormat)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "operator::deliver", "hook added for ns/a started");
            tracing::debug!(target: "hyper_util::client::legacy::pool", "pooling idle connection");
            tracing::trace!(target: "rustls::client::hs", "Using ciphersuite TLS13_AES_128_GCM_SHA256");
        });
        String::from_utf8(buf.lock().unwrap().clone()).unwrap()
    }

    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn debug_shows_the_runner_and_not_the_transport() {
        let out = written(LogLevel::Debug, None);
        assert!(out.contains("hook added for ns/a started"), "{out}");
        assert!(!out.contains("pooling") && !out.contains("ciphersuite"), "{out}");
    }

    #[test]
    fn trace_shows_the_transport_at_its_debug_level_with_its_target() {
        let out = written(LogLevel::Trace, None);
        assert!(out.contains("DEBUG hyper_util::client::legacy::pool: pooling idle connection"), "{out}");
        assert!(!out.contains("ciphersuite"), "{out}");
    }

    #[test]
    fn rust_log_adds_library_lines_at_any_level() {
        let out = written(LogLevel::Info, Some("rustls=trace"));
        assert!(out.contains("ciphersuite") && !out.contains("pooling"), "{out}");
        assert!(!out.contains("ns/a started"), "INFO still hides the runner's DEBUG lines: {out}");
    }

    #[test]
    fn a_bad_rust_log_is_named() {
        let err = filter(LogLevel::Info, Some("hyper=loud")).unwrap_err().to_string();
        assert!(err.contains("RUST_LOG") && err.contains("hyper=loud"), "{err}");
    }

    #[test]
    fn warn_is_written_as_warning() {
        assert_eq!(level_name(&Level::WARN), "WARNING");
    }
}
