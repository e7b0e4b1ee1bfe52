//! The `pillion` command line: parse arguments, load the config, hand over to the library.
//! Exit codes: 0 clean shutdown, 1 runtime failure, 2 bad config or usage.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser as ClapParser, Subcommand};
use tokio_util::sync::CancellationToken;

use pillion::config::{self, Config, ConfigError};
use pillion::frame::MultilinePreset;
use pillion::frame::{Assembler, FrameSettings, Framed, MultilineRule, MultilineSettings};
use pillion::parse::{ParseOptions, Parser, Registry};
use pillion::record::Source;
use pillion::redact;
use pillion::telemetry::logging::{self, LogFormat};

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;

/// pillion: tails, parses and ships an app's logs; proxies its port for RED metrics and traces.
#[derive(Debug, ClapParser)]
#[command(name = "pillion", version, about, long_about = None)]
struct Cli {
    /// Config file (YAML). Without it, the embedded quickstart config is used.
    #[arg(long, short = 'c', global = true, env = "PILLION_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// pillion's own log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sidecar (the default).
    Run,
    /// Check a config: print "ok" and exit 0, or print the errors and exit 2.
    Validate,
    /// Parse lines from FILE (or stdin) and print one normalized record per line as JSON.
    Parse(ParseArgs),
    /// Add pillion as a native sidecar to the workloads of a Kubernetes manifest (stdout).
    Inject(InjectArgs),
    /// Stream the records flowing through a running pillion as JSON lines (Ctrl-C to stop).
    Tap(TapArgs),
    /// Print the config's JSON Schema (draft 2020-12), for editors and CI.
    Schema,
}

#[derive(Debug, clap::Args)]
struct InjectArgs {
    /// The manifest (multi-document YAML); standard input when absent or `-`.
    file: Option<PathBuf>,
    /// pillion's container image.
    #[arg(long, value_name = "IMAGE", default_value = concat!("pillion:", env!("CARGO_PKG_VERSION")))]
    image: String,
    /// The directory the app writes its log files to (shared with pillion through a volume).
    #[arg(long, value_name = "DIR", default_value = "/var/log/app")]
    log_dir: String,
}

#[derive(Debug, clap::Args)]
struct TapArgs {
    /// pillion's admin address (host:port). Default: the config's admin.listen when --config is
    /// given, else 127.0.0.1:9901.
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
    /// Only the records read by this input.
    #[arg(long, value_name = "NAME")]
    input: Option<String>,
    /// The records this sink delivered (written, or accepted by its backend), instead of the
    /// records entering the sinks.
    #[arg(long, value_name = "NAME")]
    sink: Option<String>,
}

#[derive(Debug, clap::Args)]
struct ParseArgs {
    /// The parser: auto, json, logfmt, raw, a built-in definition (nginx_access, syslog_rfc5424,
    /// klog, ...) or one defined in the config's `logs.parsers` files.
    #[arg(long, value_name = "NAME")]
    parser: String,
    /// Time zone for timestamps without an offset (IANA name, UTC, local, +02:00).
    #[arg(long, value_name = "ZONE")]
    timezone: Option<String>,
    /// Joins continuation lines (stack traces) into one record: java, python, go, or none.
    /// Default: the parser's own (java for java and log4j, python for python), else none.
    #[arg(long, value_name = "PRESET", value_parser = ["java", "python", "go", "none"])]
    multiline: Option<String>,
    /// The file to read; standard input when absent or `-`.
    file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(cli.config),
        Command::Validate => validate(cli.config),
        Command::Parse(args) => parse(cli.config, args),
        Command::Inject(args) => inject(args),
        Command::Tap(args) => tap(cli.config, args),
        Command::Schema => {
            println!("{}", config::schema_json());
            ExitCode::SUCCESS
        }
    }
}

fn load(path: Option<&PathBuf>) -> Result<Config, ConfigError> {
    match path {
        Some(path) => config::load_file(path),
        None => config::load_quickstart(),
    }
}

fn validate(path: Option<PathBuf>) -> ExitCode {
    match load(path.as_ref()) {
        Ok(config) => {
            for warning in &config.warnings {
                eprintln!("warning: {warning}");
            }
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{}", redact::text(&error.to_string()));
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn run(path: Option<PathBuf>) -> ExitCode {
    let config = match load(path.as_ref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{}", redact::text(&error.to_string()));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match run_config(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn run_config(config: Config) -> anyhow::Result<()> {
    // One worker: a current-thread runtime runs every task on this thread. It has no worker
    // thread to wake and hand tasks to, and no work-stealing bookkeeping on every task switch
    // (measured on the proxy: see bench/proxy-results.md).
    let mut builder = if config.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(config.worker_threads);
        builder
    };
    let runtime =
        builder.thread_name("pillion-worker").enable_all().build().context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        watch_signals(shutdown.clone())?;
        pillion::app::run(config, shutdown).await.map_err(anyhow::Error::from)
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    result
}

/// The first SIGTERM or SIGINT starts a graceful shutdown; a second one exits at once
/// (checkpoints are then as of the last interval: records may be sent again, never lost).
fn watch_signals(shutdown: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::spawn(async move {
        let mut received = 0;
        loop {
            let name = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            received += 1;
            if received > 1 {
                tracing::warn!(signal = name, "second signal: exiting now");
                std::process::exit(i32::from(EXIT_RUNTIME));
            }
            tracing::info!(signal = name, "received signal");
            shutdown.cancel();
        }
    });
    Ok(())
}

fn parse(path: Option<PathBuf>, args: ParseArgs) -> ExitCode {
    let loaded = match path.as_ref() {
        Some(path) => config::load_file(path),
        None => config::load_str("", "<none>", &|name| std::env::var(name).ok()),
    };
    let config = match loaded {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{}", redact::text(&error.to_string()));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let zone = match args.timezone.as_deref().map(pillion::parse::timestamp::parse_zone) {
        None => jiff::tz::TimeZone::UTC,
        Some(Ok(zone)) => zone,
        Some(Err(message)) => {
            eprintln!("--timezone: {message}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let options = ParseOptions { zone, trace_pattern: pillion::parse::default_trace_pattern() };
    let registry =
        if config.logs.parsers.is_empty() { Registry::builtin().unwrap_or_default() } else { config.logs.parsers };
    let Some(parser) = registry.parser(&args.parser, options) else {
        let known: Vec<&str> = registry.names().collect();
        eprintln!("unknown parser {:?}; available parsers: {}", args.parser, known.join(", "));
        return ExitCode::from(EXIT_CONFIG);
    };
    let multiline = match args.multiline.as_deref() {
        None => parser.multiline(),
        Some("java") => Some(MultilinePreset::Java),
        Some("python") => Some(MultilinePreset::Python),
        Some("go") => Some(MultilinePreset::Go),
        Some(_) => None,
    };
    match parse_lines(parser, multiline, args.file, config.resource) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pillion parse: {}", redact::text(&format!("{error:#}")));
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// `pillion parse` frames records as an input does with the default `max_line_bytes` and
/// `multiline.max_lines`.
const PARSE_MAX_RECORD_BYTES: usize = 256 * 1024;
const PARSE_MAX_RECORD_LINES: usize = 500;

/// Frames the input as an input would (lines, and multiline records with `multiline`) and
/// prints each record's JSON.
fn parse_lines(
    parser: Parser,
    multiline: Option<MultilinePreset>,
    file: Option<PathBuf>,
    resource: pillion::record::Resource,
) -> anyhow::Result<()> {
    let (mut reader, path): (Box<dyn Read>, String) = match file.filter(|f| f.as_os_str() != "-") {
        Some(file) => {
            let opened = std::fs::File::open(&file).with_context(|| format!("cannot open {}", file.display()))?;
            (Box::new(opened), file.display().to_string())
        }
        None => (Box::new(std::io::stdin().lock()), "-".to_owned()),
    };
    let settings = FrameSettings {
        max_line_bytes: PARSE_MAX_RECORD_BYTES,
        container: pillion::frame::ContainerFormat::None,
        multiline: multiline.map(|preset| MultilineSettings {
            rule: Arc::new(MultilineRule::preset(preset)),
            max_lines: PARSE_MAX_RECORD_LINES,
            timeout: std::time::Duration::MAX,
        }),
    };
    let mut assembler = Assembler::new(&settings);
    let input: Arc<str> = Arc::from("parse");
    let path: Arc<str> = Arc::from(path.as_str());
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut failure = None;
    let mut emit = |framed: Framed<'_>| {
        if failure.is_some() {
            return;
        }
        let mut record = parser.parse(framed.bytes, jiff::Timestamp::now(), &resource).record;
        if framed.truncated {
            record.attributes.insert("truncated", pillion::record::Value::Bool(true));
        }
        record.source = Some(Source { input: Arc::clone(&input), path: Arc::clone(&path), offset: framed.start });
        let mut json = Vec::new();
        let written = record.write_json_line(&mut json).map_err(anyhow::Error::from);
        if let Err(error) = written.and_then(|()| out.write_all(&json).map_err(anyhow::Error::from)) {
            failure = Some(error);
        }
    };
    let mut chunk = vec![0u8; 64 * 1024];
    let mut offset = 0u64;
    loop {
        let read = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error).context("cannot read input"),
        };
        assembler.push(&chunk[..read], offset, &mut emit);
        offset += read as u64;
    }
    assembler.flush(offset, &mut emit);
    if let Some(error) = failure {
        return Err(error).context("cannot write output");
    }
    out.flush().context("cannot write output")?;
    Ok(())
}

fn inject(args: InjectArgs) -> ExitCode {
    let manifest = match args.file.filter(|f| f.as_os_str() != "-") {
        Some(file) => std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display())),
        None => std::io::read_to_string(std::io::stdin()).context("cannot read standard input"),
    };
    let manifest = match manifest {
        Ok(manifest) => manifest,
        Err(error) => {
            eprintln!("pillion inject: {error:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let options = pillion::inject::InjectOptions { image: args.image, log_dir: args.log_dir };
    match pillion::inject::inject(&manifest, &options) {
        Ok(out) => match std::io::stdout().lock().write_all(out.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("pillion inject: cannot write: {error}");
                ExitCode::from(EXIT_RUNTIME)
            }
        },
        Err(error) => {
            eprintln!("pillion inject: {error}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn tap(path: Option<PathBuf>, args: TapArgs) -> ExitCode {
    let address = match (args.admin, path) {
        (Some(address), _) => address,
        (None, Some(path)) => match config::load_file(&path) {
            Ok(config) => {
                let mut address = config.admin_listen;
                if address.ip().is_unspecified() {
                    address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                address.to_string()
            }
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        (None, None) => "127.0.0.1:9901".to_owned(),
    };
    let filter = pillion::tap::Filter { input: args.input, sink: args.sink };
    // Two workers: the stream writes to stdout synchronously, and Ctrl-C must end the process
    // even while such a write blocks (a pipe nobody reads).
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("pillion tap: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let result = runtime.block_on(async {
        runtime_exit_on_interrupt();
        let mut out = std::io::stdout();
        let mut notices = std::io::stderr();
        pillion::tap::stream(&address, &filter, &mut out, &mut notices).await
    });
    match result {
        Ok(()) => {
            eprintln!("pillion tap: the stream ended (pillion stopped)");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("pillion tap: {error}");
            match error {
                pillion::tap::ClientError::Refused { status: 400 | 404, .. } => ExitCode::from(EXIT_CONFIG),
                _ => ExitCode::from(EXIT_RUNTIME),
            }
        }
    }
}

/// Ctrl-C (SIGINT) or SIGTERM ends `pillion tap` with exit code 0, at once: there is nothing to
/// flush or checkpoint.
fn runtime_exit_on_interrupt() {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async {
        let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
        else {
            return;
        };
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        std::process::exit(0);
    });
}
