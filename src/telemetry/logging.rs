//! pillion's own log output: human-readable text on a terminal, JSON lines otherwise, always on
//! stderr (stdout belongs to the stdout sink), level from `PILLION_LOG` or `RUST_LOG`; secrets
//! redacted from every line.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// `--log-format`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    #[default]
    Auto,
    Text,
    Json,
}

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(format: LogFormat) {
    let directives =
        std::env::var("PILLION_LOG").or_else(|_| std::env::var("RUST_LOG")).unwrap_or_else(|_| "info".to_owned());
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|error| {
        eprintln!("pillion: ignoring invalid log filter {directives:?}: {error}");
        EnvFilter::new("info")
    });
    let json = match format {
        LogFormat::Auto => !std::io::stderr().is_terminal(),
        LogFormat::Text => false,
        LogFormat::Json => true,
    };
    // Every line goes through the one redaction function on its way out.
    let writer = || crate::redact::Redacting(std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    if json {
        builder.json().flatten_event(true).with_current_span(false).init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}
