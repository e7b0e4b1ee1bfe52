//! The validation pass: turns a [`RawConfig`] into the [`Config`] the program runs on
//! (compiled globs, resolved defaults, the resource), checking what a single field cannot:
//! unique names, which sink fields go with which `type`, and that pillion never tails its own
//! output. Nothing downstream re-validates.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde_saphyr::Spanned;

use super::ConfigIssue;
use super::raw::{
    BatchConfig, ContainerFormat, InputConfig, MtlsMode, ProxyConfig, RawConfig, ServiceConfig, SinkConfig, SinkKind,
    StartAt, TracingConfig, TransformConfig,
};
use super::units::GlobPattern;
use crate::frame::{MultilineRule, MultilineSettings};
use crate::parse::{ParseOptions, Parser, Registry};
use crate::record::Resource;

/// The checked configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it came from, for messages.
    pub origin: String,
    /// The effective config as YAML, secrets redacted (served at /config).
    pub effective_yaml: String,
    /// Things worth a warning at start-up (unset environment variables...).
    pub warnings: Vec<String>,
    /// Resource attributes for every record, span and metric.
    pub resource: Resource,
    pub admin_listen: SocketAddr,
    pub shutdown_timeout: std::time::Duration,
    pub worker_threads: usize,
    pub logs: LogsSettings,
    pub proxy: Option<ProxyConfig>,
    pub tracing: Option<TracingConfig>,
}

/// The log pipeline, checked.
#[derive(Debug)]
pub struct LogsSettings {
    pub data_dir: PathBuf,
    pub checkpoint_interval: std::time::Duration,
    pub checkpoint_ttl: std::time::Duration,
    pub inputs: Vec<Arc<InputSettings>>,
    /// Every parser an input can name: the built-ins and the `logs.parsers` files; empty when
    /// there are no inputs and no parser files (`pillion parse` then uses the built-ins).
    pub parsers: Registry,
    pub transforms: Vec<TransformConfig>,
    /// Never empty: with none configured, a `stdout` sink.
    pub sinks: Vec<SinkSettings>,
}

/// One input, checked, with its globs compiled.
#[derive(Debug)]
pub struct InputSettings {
    pub name: Arc<str>,
    /// The `paths` globs as written (discovery walks from their literal prefixes).
    pub paths: Vec<String>,
    pub include: GlobSet,
    /// Exclusions written with a `/`, matched against the whole path.
    pub exclude_paths: GlobSet,
    /// Exclusions without a `/`, matched against the file name.
    pub exclude_names: GlobSet,
    pub start_at: StartAt,
    pub container: ContainerFormat,
    /// The input's parser, with its time zone and trace pattern; clone it per tailer thread.
    pub parser: Parser,
    pub multiline: Option<MultilineSettings>,
    pub max_line_bytes: usize,
    pub poll_interval: std::time::Duration,
    pub max_open_files: usize,
    /// Follow symlinks leading out of the globs' fixed prefixes.
    pub follow_symlinks: bool,
    pub attributes: Vec<(String, String)>,
}

/// One sink, checked.
#[derive(Debug)]
pub struct SinkSettings {
    pub name: Arc<str>,
    pub batch: BatchConfig,
    pub target: SinkTarget,
}

/// What a sink writes to.
#[derive(Debug)]
pub enum SinkTarget {
    Stdout,
    File(FileSinkSettings),
    Loki(Box<SinkConfig>),
    Elasticsearch(Box<SinkConfig>),
    Otlp(Box<SinkConfig>),
}

/// `type: file`
#[derive(Debug, Clone)]
pub struct FileSinkSettings {
    pub path: PathBuf,
}

/// Collects issues so that one run reports every problem, not just the first.
struct Checker<'a> {
    origin: &'a str,
    issues: Vec<ConfigIssue>,
}

impl Checker<'_> {
    fn at<T>(&mut self, spanned: &Spanned<T>, field: String, message: String, hint: Option<&str>) {
        let position = Some((spanned.referenced.line() as usize, spanned.referenced.column() as usize));
        self.issues.push(ConfigIssue {
            origin: self.origin.to_owned(),
            position,
            field,
            message,
            hint: hint.map(str::to_owned),
        });
    }
}

pub(super) fn validate(
    raw: RawConfig,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Vec<ConfigIssue>> {
    let effective_yaml = serde_saphyr::to_string(&raw)
        .unwrap_or_else(|error| format!("# the effective config could not be rendered: {error}\n"));
    let mut checker = Checker { origin, issues: Vec::new() };
    let mut warnings = Vec::new();
    // Compiling the built-in parsers costs start-up time and memory; a config with no inputs
    // and no parser files (a proxy-only sidecar) uses none of them.
    let registry = if raw.logs.inputs.is_empty() && raw.logs.parsers.is_empty() {
        Registry::default()
    } else {
        load_parsers(&mut checker, &raw.logs.parsers, &mut warnings)
    };
    let inputs = check_inputs(&mut checker, &raw.logs.inputs, &registry);
    let sinks = check_sinks(&mut checker, &raw.logs.sinks, &inputs);
    check_ports(&mut checker, &raw);
    check_mesh(&mut checker, &raw);
    if !checker.issues.is_empty() {
        return Err(checker.issues);
    }
    let worker_threads = raw
        .worker_threads
        .map(|n| n.get())
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    Ok(Config {
        origin: origin.to_owned(),
        effective_yaml,
        warnings,
        resource: build_resource(&raw.service, env),
        admin_listen: raw.admin.listen.0,
        shutdown_timeout: raw.shutdown_timeout.get(),
        worker_threads,
        logs: LogsSettings {
            data_dir: raw.logs.data_dir,
            checkpoint_interval: raw.logs.checkpoint_interval.get(),
            checkpoint_ttl: raw.logs.checkpoint_ttl.get(),
            inputs,
            parsers: registry,
            transforms: raw.logs.transforms,
            sinks,
        },
        proxy: raw.proxy,
        tracing: raw.tracing,
    })
}

fn check_inputs(
    checker: &mut Checker,
    inputs: &[Spanned<InputConfig>],
    registry: &Registry,
) -> Vec<Arc<InputSettings>> {
    let mut names = BTreeSet::new();
    let mut checked = Vec::new();
    for (index, spanned) in inputs.iter().enumerate() {
        let input = &spanned.value;
        let field = |name: &str| format!("logs.inputs[{index}].{name}");
        if input.name.trim().is_empty() {
            checker.at(spanned, field("name"), "an input needs a non-empty name".into(), None);
        } else if !names.insert(input.name.clone()) {
            let message = format!("duplicate input name {:?}", input.name);
            checker.at(spanned, field("name"), message, Some("input names must be unique"));
        }
        if input.paths.is_empty() {
            let hint = Some("e.g. paths: [\"/var/log/app/*.log\"]");
            checker.at(spanned, field("paths"), "an input needs at least one path glob".into(), hint);
        }
        let zone = match input.timezone.as_deref().map(crate::parse::timestamp::parse_zone) {
            None => jiff::tz::TimeZone::UTC,
            Some(Ok(zone)) => zone,
            Some(Err(message)) => {
                let hint = "an IANA name such as Europe/Paris, UTC, local, or an offset such as +02:00";
                checker.at(spanned, field("timezone"), message, Some(hint));
                continue;
            }
        };
        let trace_pattern = match &input.trace_pattern {
            Some(pattern) => Some(pattern.regex().clone()),
            None => crate::parse::default_trace_pattern(),
        };
        if let Some(pattern) = &trace_pattern {
            if !pattern.capture_names().flatten().any(|n| matches!(n, "trace_id" | "traceparent")) {
                let message =
                    format!("trace_pattern {:?} has no capture named trace_id or traceparent", pattern.as_str());
                checker.at(
                    spanned,
                    field("trace_pattern"),
                    message,
                    Some("e.g. 'trace_id=(?P<trace_id>[0-9a-f]{32})'"),
                );
            }
        }
        let Some(parser) = registry.parser(&input.format, ParseOptions { zone, trace_pattern }) else {
            let message = format!("unknown parser {:?}", input.format);
            let names: Vec<&str> = registry.names().collect();
            let hint = format!("available parsers: {}; add your own with logs.parsers", names.join(", "));
            checker.at(spanned, field("format"), message, Some(&hint));
            continue;
        };
        if input.max_line_bytes.bytes() < 64 {
            let message = format!("max_line_bytes {} is too small", input.max_line_bytes);
            checker.at(spanned, field("max_line_bytes"), message, Some("use at least 1KiB"));
        }
        if input.poll_interval.get() < std::time::Duration::from_millis(10) {
            let message = format!("poll_interval {} is too short", input.poll_interval);
            checker.at(spanned, field("poll_interval"), message, Some("use at least 10ms"));
        }
        let multiline = input.multiline.as_ref().and_then(|m| {
            let rule = match (&m.start, m.preset) {
                (Some(start), None) => MultilineRule::start(start.regex().clone()),
                (None, Some(preset)) => MultilineRule::preset(preset),
                (start, _) => {
                    let message =
                        if start.is_some() { "give either start or preset, not both" } else { "give start or preset" };
                    checker.at(
                        spanned,
                        field("multiline"),
                        message.into(),
                        Some("e.g. `preset: java` or `start: '^\\d{4}-'`"),
                    );
                    return None;
                }
            };
            Some(MultilineSettings { rule: Arc::new(rule), max_lines: m.max_lines.get(), timeout: m.timeout.get() })
        });
        let compiled = compile_globs(input);
        match compiled {
            Ok((include, exclude_paths, exclude_names)) => checked.push(Arc::new(InputSettings {
                name: Arc::from(input.name.as_str()),
                paths: input.paths.iter().map(|glob| glob.0.clone()).collect(),
                include,
                exclude_paths,
                exclude_names,
                start_at: input.start_at,
                container: input.container,
                parser,
                multiline,
                max_line_bytes: input.max_line_bytes.as_usize(),
                poll_interval: input.poll_interval.get(),
                max_open_files: input.max_open_files.get(),
                follow_symlinks: input.follow_symlinks,
                attributes: input.attributes.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect(),
            })),
            Err(message) => checker.at(spanned, field("paths"), message, None),
        }
    }
    checked
}

/// The built-in parsers plus the definitions in the `logs.parsers` files. Relative globs are
/// resolved from the config file's directory. A glob that matches nothing is a warning (the
/// directory may be filled later by a volume); a file that cannot be read or compiled is an
/// error naming the file, the position and the problem.
fn load_parsers(checker: &mut Checker, globs: &[GlobPattern], warnings: &mut Vec<String>) -> Registry {
    let mut registry = match Registry::builtin() {
        Ok(registry) => registry,
        Err(errors) => {
            checker.issues.extend(errors.into_iter().map(definition_issue));
            return Registry::default();
        }
    };
    let base = Path::new(checker.origin).parent().filter(|_| !checker.origin.starts_with('<'));
    for (index, pattern) in globs.iter().enumerate() {
        let files = match expand_glob(base, &pattern.0) {
            Ok(files) => files,
            Err(message) => {
                checker.issues.push(ConfigIssue {
                    origin: checker.origin.to_owned(),
                    position: None,
                    field: format!("logs.parsers[{index}]"),
                    message,
                    hint: None,
                });
                continue;
            }
        };
        if files.is_empty() {
            warnings.push(format!("{}: logs.parsers[{index}]: {:?} matches no file", checker.origin, pattern.0));
        }
        // `parsers: ["*.yaml"]` beside the config file would match the config itself.
        let config_file = std::fs::canonicalize(checker.origin).ok();
        for file in files.into_iter().filter(|f| std::fs::canonicalize(f).ok() != config_file || config_file.is_none())
        {
            let origin = file.display().to_string();
            let text = match std::fs::read_to_string(&file) {
                Ok(text) => text,
                Err(error) => {
                    let message = format!("cannot read parser definitions: {error}");
                    checker.issues.push(ConfigIssue {
                        origin,
                        position: None,
                        field: String::new(),
                        message,
                        hint: None,
                    });
                    continue;
                }
            };
            if let Err(errors) = registry.add_yaml(&text, &origin) {
                checker.issues.extend(errors.into_iter().map(definition_issue));
            }
        }
    }
    registry
}

fn definition_issue(error: crate::parse::DefinitionError) -> ConfigIssue {
    let hint =
        "parser definitions are described in parsers/README.md; `pillion parse --parser NAME --config FILE` tries one";
    ConfigIssue {
        origin: error.origin,
        position: error.position,
        field: error.field,
        message: error.message,
        hint: Some(hint.to_owned()),
    }
}

/// The files a glob matches, sorted; walks from the glob's literal directory prefix.
fn expand_glob(base: Option<&Path>, pattern: &str) -> Result<Vec<PathBuf>, String> {
    // A config named without a directory (`pillion.yaml`) has the empty path as its parent.
    let base = base.filter(|b| !b.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let full = if Path::new(pattern).is_relative() { base.join(pattern) } else { PathBuf::from(pattern) };
    let full_text = full.to_string_lossy().into_owned();
    let matcher = glob(&full_text)?.compile_matcher();
    let literal: PathBuf =
        full.components().take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[', '{'])).collect();
    if literal == full {
        return Ok(if full.is_file() { vec![full] } else { Vec::new() });
    }
    // Without `**`, a match is exactly as deep as the pattern: do not walk further.
    let depth =
        if full_text.contains("**") { usize::MAX } else { full.components().count() - literal.components().count() };
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(&literal)
        .max_depth(depth)
        .follow_links(true)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_file() && matcher.is_match(entry.path()))
        .map(walkdir::DirEntry::into_path)
        .collect();
    files.sort();
    Ok(files)
}

fn glob(pattern: &str) -> Result<globset::Glob, String> {
    GlobBuilder::new(pattern).literal_separator(true).build().map_err(|e| format!("invalid glob {pattern:?}: {e}"))
}

fn compile_globs(input: &InputConfig) -> Result<(GlobSet, GlobSet, GlobSet), String> {
    let mut include = GlobSetBuilder::new();
    for pattern in &input.paths {
        include.add(glob(&pattern.0)?);
    }
    let mut by_path = GlobSetBuilder::new();
    let mut by_name = GlobSetBuilder::new();
    for pattern in &input.exclude {
        if pattern.0.contains('/') {
            by_path.add(glob(&pattern.0)?);
        } else {
            by_name.add(glob(&pattern.0)?);
        }
    }
    let build = |builder: GlobSetBuilder| builder.build().map_err(|e| e.to_string());
    Ok((build(include)?, build(by_path)?, build(by_name)?))
}

/// Which optional sink fields are set, by their YAML names.
fn fields_set(sink: &SinkConfig) -> Vec<&'static str> {
    let candidates = [
        ("endpoint", sink.endpoint.is_some()),
        ("encoding", sink.encoding.is_some()),
        ("labels", !sink.labels.is_empty()),
        ("structured_metadata", !sink.structured_metadata.is_empty()),
        ("max_label_values", sink.max_label_values.is_some()),
        ("tenant", sink.tenant.is_some()),
        ("line_format", sink.line_format.is_some()),
        ("index", sink.index.is_some()),
        ("op", sink.op.is_some()),
        ("id", sink.id.is_some()),
        ("compression", sink.compression.is_some()),
        ("protocol", sink.protocol.is_some()),
        ("path", sink.path.is_some()),
        ("auth", sink.auth.is_some()),
        ("tls", sink.tls.is_some()),
        ("headers", !sink.headers.is_empty()),
        ("request_timeout", sink.request_timeout.is_some()),
        ("concurrency", sink.concurrency.is_some()),
    ];
    candidates.into_iter().filter_map(|(name, set)| set.then_some(name)).collect()
}

const HTTP_FIELDS: &[&str] = &["endpoint", "auth", "tls", "headers", "request_timeout", "concurrency"];

/// The optional fields each sink type accepts, and the ones it requires.
fn sink_fields(kind: SinkKind) -> (Vec<&'static str>, &'static [&'static str]) {
    let mut allowed: Vec<&'static str> = match kind {
        SinkKind::Loki => {
            vec![
                "encoding",
                "labels",
                "structured_metadata",
                "max_label_values",
                "tenant",
                "line_format",
                "compression",
            ]
        }
        SinkKind::Elasticsearch => vec!["index", "op", "id", "compression"],
        SinkKind::Otlp => vec!["protocol", "compression"],
        SinkKind::Stdout => return (Vec::new(), &[]),
        SinkKind::File => return (vec!["path"], &["path"]),
    };
    allowed.extend_from_slice(HTTP_FIELDS);
    (allowed, &["endpoint"])
}

fn check_sinks(
    checker: &mut Checker,
    sinks: &[Spanned<SinkConfig>],
    inputs: &[Arc<InputSettings>],
) -> Vec<SinkSettings> {
    if sinks.is_empty() {
        let batch = BatchConfig::default();
        return vec![SinkSettings { name: Arc::from("stdout"), batch, target: SinkTarget::Stdout }];
    }
    let mut names = BTreeSet::new();
    let mut checked = Vec::new();
    for (index, spanned) in sinks.iter().enumerate() {
        let sink = &spanned.value;
        let field = |name: &str| format!("logs.sinks[{index}].{name}");
        if sink.name.trim().is_empty() {
            checker.at(spanned, field("name"), "a sink needs a non-empty name".into(), None);
        } else if !names.insert(sink.name.clone()) {
            let message = format!("duplicate sink name {:?}", sink.name);
            checker.at(spanned, field("name"), message, Some("sink names must be unique"));
        }
        let kind = sink.kind.as_str();
        let (allowed, required) = sink_fields(sink.kind);
        let set = fields_set(sink);
        for name in set.iter().filter(|name| !allowed.contains(name)) {
            let message = format!("`{name}` does not apply to a {kind} sink");
            let hint = format!("a {kind} sink takes: name, type, batch{}", list_suffix(&allowed));
            checker.at(spanned, field(name), message, Some(&hint));
        }
        for name in required.iter().filter(|name| !set.contains(name)) {
            let message = format!("{} {kind} sink needs `{name}`", article(kind));
            checker.at(spanned, field(name), message, None);
        }
        if let Some(path) = &sink.path {
            for input in inputs.iter().filter(|input| input.include.is_match(path)) {
                let message = format!(
                    "file sink path {} is tailed by input {:?}: pillion would read its own output in a loop",
                    path.display(),
                    &*input.name
                );
                checker.at(spanned, field("path"), message, Some("write the sink file outside the input globs"));
            }
        }
        check_network_sink(checker, spanned, index);
        let target = match sink.kind {
            SinkKind::Stdout => SinkTarget::Stdout,
            SinkKind::File => SinkTarget::File(FileSinkSettings { path: sink.path.clone().unwrap_or_default() }),
            SinkKind::Loki => SinkTarget::Loki(Box::new(sink.clone())),
            SinkKind::Elasticsearch => SinkTarget::Elasticsearch(Box::new(sink.clone())),
            SinkKind::Otlp => SinkTarget::Otlp(Box::new(sink.clone())),
        };
        checked.push(SinkSettings { name: Arc::from(sink.name.as_str()), batch: sink.batch, target });
    }
    checked
}

/// Cross-field checks of the network sinks: one way of authenticating, certificate and key
/// together, compression only where it applies, index templates that close their braces.
fn check_network_sink(checker: &mut Checker, spanned: &Spanned<SinkConfig>, index: usize) {
    let sink = &spanned.value;
    let field = |name: &str| format!("logs.sinks[{index}].{name}");
    if let Some(auth) = &sink.auth {
        let methods = [
            auth.bearer_token.is_some(),
            auth.bearer_token_file.is_some(),
            auth.api_key.is_some(),
            auth.username.is_some(),
        ];
        if methods.iter().filter(|set| **set).count() > 1 {
            let hint = Some("choose one of bearer_token, bearer_token_file, api_key, username/password");
            checker.at(spanned, field("auth"), "more than one way of authenticating".into(), hint);
        }
        if (auth.password.is_some() || auth.password_file.is_some()) && auth.username.is_none() {
            checker.at(spanned, field("auth.username"), "a password needs a username".into(), None);
        }
        if auth.api_key.is_some() && sink.kind != SinkKind::Elasticsearch {
            checker.at(spanned, field("auth.api_key"), "api_key is for Elasticsearch sinks".into(), None);
        }
        let grpc = sink.kind == SinkKind::Otlp && sink.protocol.unwrap_or_default() == super::raw::OtlpProtocol::Grpc;
        if grpc && auth.username.is_some() {
            let hint = Some("use bearer_token or bearer_token_file, or protocol: http/protobuf");
            checker.at(spanned, field("auth.username"), "basic auth is not supported over gRPC".into(), hint);
        }
    }
    if sink.tls.as_ref().is_some_and(|tls| tls.cert_file.is_some() != tls.key_file.is_some()) {
        let hint = Some("mTLS needs both the client certificate and its key");
        checker.at(spanned, field("tls"), "cert_file and key_file go together".into(), hint);
    }
    if sink.kind == SinkKind::Loki
        && sink.encoding != Some(super::raw::LokiEncoding::Json)
        && sink.compression == Some(super::raw::Compression::Gzip)
    {
        let hint = Some("protobuf pushes are always snappy-compressed; gzip applies to `encoding: json`");
        checker.at(spanned, field("compression"), "gzip does not apply to protobuf pushes".into(), hint);
    }
    if let Some(Err(message)) = sink.index.as_deref().map(check_index_template) {
        checker.at(spanned, field("index"), message, Some("e.g. index: logs-{service_name}-default"));
    }
}

/// `{field}` placeholders must close and name something.
fn check_index_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| format!("unclosed `{{` in index {template:?}"))?;
        if after[..close].trim().is_empty() || after[..close].contains('{') {
            return Err(format!("invalid placeholder in index {template:?}"));
        }
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("unmatched `}}` in index {template:?}"));
    }
    if template.trim().is_empty() {
        return Err("an empty index name".into());
    }
    Ok(())
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" }
}

fn list_suffix(fields: &[&str]) -> String {
    fields.iter().map(|f| format!(", {f}")).collect()
}

fn check_ports(checker: &mut Checker, raw: &RawConfig) {
    let Some(inbound) = raw.proxy.as_ref().and_then(|proxy| proxy.inbound.as_ref()) else {
        return;
    };
    let listen = inbound.value.listen.0;
    if listen.port() != 0 && listen == raw.admin.listen.0 {
        let message = format!("proxy.inbound.listen {listen} is also admin.listen");
        checker.at(inbound, "proxy.inbound.listen".into(), message, Some("give the admin server its own port"));
    }
    let upstream = inbound.value.upstream.url();
    if upstream.scheme() != "http" {
        let message = format!("proxy.inbound.upstream {upstream}: only http:// is supported");
        checker.at(
            inbound,
            "proxy.inbound.upstream".into(),
            message,
            Some("the app is on the same host: use http://127.0.0.1:PORT"),
        );
    }
}

/// `mtls` needs an identity; destinations need endpoints; a split names known endpoints.
fn check_mesh(checker: &mut Checker, raw: &RawConfig) {
    let Some(proxy) = &raw.proxy else { return };
    let mut issue = |field: String, message: String, hint: Option<&str>| {
        checker.issues.push(ConfigIssue {
            origin: checker.origin.to_owned(),
            position: None,
            field,
            message,
            hint: hint.map(str::to_owned),
        })
    };
    let identity_hint = Some("add proxy.identity { cert_file, key_file, ca_file }");
    if let Some(inbound) = &proxy.inbound {
        if inbound.value.mtls != MtlsMode::Off && proxy.identity.is_none() {
            issue("proxy.inbound.mtls".into(), "mTLS needs proxy.identity".into(), identity_hint);
        }
    }
    let Some(outbound) = &proxy.outbound else { return };
    let mut hosts = std::collections::HashSet::new();
    for (index, destination) in outbound.destinations.iter().enumerate() {
        let field = |name: &str| format!("proxy.outbound.destinations[{index}].{name}");
        if !hosts.insert(destination.host.to_ascii_lowercase()) {
            issue(field("host"), format!("{} is named twice", destination.host), None);
        }
        if destination.host.is_empty() || destination.host.contains([':', '/', ' ']) {
            issue(
                field("host"),
                format!("{:?} is not a host name", destination.host),
                Some("the name the app calls, e.g. analytics"),
            );
        }
        if destination.mtls && proxy.identity.is_none() {
            issue(field("mtls"), "mTLS needs proxy.identity".into(), identity_hint);
        }
        if destination.server_identity.is_some() && !destination.mtls {
            issue(field("server_identity"), "only checked with mtls: true".into(), Some("set mtls: true"));
        }
        let has_split = !destination.split.is_empty();
        if destination.endpoints.is_empty() && destination.dns.is_none() && !has_split {
            issue(field("endpoints"), "no endpoints: give endpoints, dns or split".into(), None);
        }
        if destination.dns.is_some() && !destination.endpoints.is_empty() {
            issue(field("dns"), "give endpoints or dns, not both".into(), None);
        }
        if let Some(dns) = &destination.dns {
            if dns.refresh.get().is_zero() {
                issue(field("dns.refresh"), "must be more than 0s".into(), None);
            }
        }
        for (group, split) in destination.split.iter().enumerate() {
            if split.endpoints.is_empty() {
                issue(field(&format!("split[{group}].endpoints")), "empty".into(), None);
            }
            let unknown = split
                .endpoints
                .iter()
                .find(|e| !destination.endpoints.is_empty() && !destination.endpoints.contains(e));
            if let Some(unknown) = unknown {
                issue(
                    field(&format!("split[{group}].endpoints")),
                    format!("{unknown} is not in endpoints"),
                    Some("a split names a subset of endpoints"),
                );
            }
        }
        if has_split && destination.split.iter().all(|s| s.weight == 0) {
            issue(field("split"), "every weight is 0".into(), None);
        }
        if destination.outlier.consecutive_failures == 0 {
            issue(field("outlier.consecutive_failures"), "must be at least 1".into(), None);
        }
    }
}

/// Resource attributes: `service.*` from config, else the standard environment variables;
/// `OTEL_RESOURCE_ATTRIBUTES`; `k8s.*` from the downward-API variables.
fn build_resource(service: &ServiceConfig, env: &dyn Fn(&str) -> Option<String>) -> Resource {
    let non_empty = |name: &str| env(name).filter(|value| !value.trim().is_empty());
    let mut otel: Vec<(String, String)> =
        non_empty("OTEL_RESOURCE_ATTRIBUTES").map(|text| parse_otel_resource_attributes(&text)).unwrap_or_default();
    let mut take_otel = |key: &str| otel.iter().position(|(k, _)| k == key).map(|index| otel.remove(index).1);
    let name = service
        .name
        .as_ref()
        .map(|n| n.0.clone())
        .or_else(|| non_empty("PILLION_SERVICE_NAME"))
        .or_else(|| non_empty("OTEL_SERVICE_NAME"))
        .or_else(|| take_otel("service.name"))
        .unwrap_or_else(|| "unknown_service".to_owned());
    let namespace = service.namespace.as_ref().map(|n| n.0.clone()).or_else(|| take_otel("service.namespace"));
    let version = service.version.as_ref().map(|n| n.0.clone()).or_else(|| take_otel("service.version"));
    let mut resource = vec![("service.name".to_owned(), name)];
    resource.extend(namespace.map(|v| ("service.namespace".to_owned(), v)));
    resource.extend(version.map(|v| ("service.version".to_owned(), v)));
    let downward = [
        ("k8s.pod.name", "POD_NAME"),
        ("k8s.namespace.name", "POD_NAMESPACE"),
        ("k8s.node.name", "NODE_NAME"),
        ("k8s.container.name", "CONTAINER_NAME"),
    ];
    let mut rest: Vec<(String, String)> = otel.into_iter().filter(|(k, _)| !k.starts_with("service.name")).collect();
    for (key, value) in &service.attributes {
        rest.retain(|(k, _)| k != key);
        rest.push((key.clone(), value.0.clone()));
    }
    for (key, variable) in downward {
        if let Some(value) = non_empty(variable) {
            rest.retain(|(k, _)| k != key);
            rest.push((key.to_owned(), value));
        }
    }
    rest.sort();
    resource.extend(rest);
    Arc::new(resource)
}

/// `key1=value1,key2=value2`, values percent-decoded, as the OpenTelemetry spec defines it.
fn parse_otel_resource_attributes(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.trim().to_owned(), percent_decode(value.trim())))
        .filter(|(key, _)| !key.is_empty())
        .collect()
}

fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_else(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::super::{ConfigError, load_str};
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    fn issues(yaml: &str) -> Vec<String> {
        match load_str(yaml, "x.yaml", &|_| None) {
            Ok(_) => panic!("expected errors for:\n{yaml}"),
            Err(ConfigError::Invalid(issues)) => issues.iter().map(ToString::to_string).collect(),
            Err(other) => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn resource_prefers_config_then_environment() {
        let env = env_of(&[
            ("OTEL_SERVICE_NAME", "from-otel"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,service.version=9,team=a%20b"),
            ("POD_NAME", "checkout-7d9f"),
        ]);
        let service = ServiceConfig::default();
        let resource = build_resource(&service, &env);
        assert_eq!(resource[0], ("service.name".into(), "from-otel".into()));
        assert!(resource.contains(&("service.version".into(), "9".into())));
        assert!(resource.contains(&("k8s.pod.name".into(), "checkout-7d9f".into())));
        assert!(resource.contains(&("team".into(), "a b".into())));
        let nothing = build_resource(&service, &|_| None);
        assert_eq!(nothing[0].1, "unknown_service");
    }

    #[test]
    fn sink_fields_must_match_the_type() {
        let found = issues("logs:\n  sinks:\n    - name: l\n      type: loki\n      index: x\n");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("x.yaml:3:7: logs.sinks[0].index: `index` does not apply to a loki sink"));
        assert!(found[1].contains("logs.sinks[0].endpoint: a loki sink needs `endpoint`"));
    }

    #[test]
    fn network_sink_cross_field_checks() {
        let yaml = "logs:\n  sinks:\n    - name: l\n      type: loki\n      endpoint: http://l\n      compression: gzip\n      auth: { bearer_token: a, username: u }\n      tls: { cert_file: /c.pem }\n    - name: e\n      type: elasticsearch\n      endpoint: http://e\n      index: 'logs-{service_name'\n      id: deterministic\n";
        let found = issues(yaml);
        assert!(found.iter().any(|m| m.contains("more than one way of authenticating")), "{found:?}");
        assert!(found.iter().any(|m| m.contains("cert_file and key_file go together")), "{found:?}");
        assert!(found.iter().any(|m| m.contains("gzip does not apply to protobuf")), "{found:?}");
        assert!(found.iter().any(|m| m.contains("unclosed `{` in index")), "{found:?}");
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(check_index_template("logs-{service_name}-%Y.%m.%d").is_ok());
    }

    #[test]
    fn names_are_unique_and_parsers_known() {
        let yaml = "logs:\n  inputs:\n    - { name: a, paths: [/x/*.log] }\n    - { name: a, paths: [/y/*.log], format: nginx }\n";
        let found = issues(yaml);
        assert!(found.iter().any(|m| m.contains("duplicate input name")), "{found:?}");
        assert!(found.iter().any(|m| m.contains("unknown parser \"nginx\"")), "{found:?}");
    }

    #[test]
    fn proxy_upstream_must_be_plain_http() {
        let yaml = "proxy:\n  inbound: { listen: \"127.0.0.1:0\", upstream: \"https://app:8443\" }\n";
        let found = issues(yaml);
        assert!(found.iter().any(|m| m.contains("proxy.inbound.upstream") && m.contains("only http://")), "{found:?}");
    }

    #[test]
    fn a_file_sink_inside_an_input_glob_is_refused() {
        let yaml = "logs:\n  inputs:\n    - { name: a, paths: [/logs/*.ndjson] }\n  sinks:\n    - { name: f, type: file, path: /logs/out.ndjson }\n";
        let found = issues(yaml);
        assert!(found.iter().any(|m| m.contains("read its own output")), "{found:?}");
    }

    #[test]
    fn excludes_by_name_and_by_path() {
        let yaml = "logs:\n  inputs:\n    - name: a\n      paths: [\"/v/**/*.log\"]\n      exclude: [\"*.tmp.log\", \"/v/skip/*\"]\n";
        let config = load_str(yaml, "x.yaml", &|_| None).expect("valid");
        let input = &config.logs.inputs[0];
        assert!(input.include.is_match("/v/a/b.log"));
        assert!(input.exclude_names.is_match("b.tmp.log"));
        assert!(input.exclude_paths.is_match("/v/skip/x.log"));
        assert_eq!(config.logs.sinks.len(), 1, "default stdout sink");
    }
}
