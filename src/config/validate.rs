//! The validation pass: turns a [`RawConfig`] into the [`Config`] the program runs on. Each
//! section is checked by the component that owns it (`tail::settings`, `sink::settings`,
//! `proxy::settings`, `telemetry::settings`); this pass orders them, loads the parser
//! definitions they need, builds the resource, and checks what crosses sections: pillion
//! never tails its own output. Nothing downstream re-validates.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::raw::{RawConfig, ServiceConfig};
use super::units::GlobPattern;
use super::{Checker, ConfigIssue};
use crate::parse::Registry;
use crate::proxy::settings::ProxySettings;
use crate::record::Resource;
use crate::sink::settings::{SinkSettings, check_sinks};
use crate::tail::settings::{InputSettings, check_inputs, glob};
use crate::telemetry::settings::TracingSettings;
use crate::transform::Transforms;

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
    pub proxy: ProxySettings,
    /// Span export; `None` without a `tracing:` section.
    pub tracing: Option<TracingSettings>,
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
    /// The compiled transform chain.
    pub transforms: Arc<Transforms>,
    /// Never empty: with none configured, a `stdout` sink.
    pub sinks: Vec<SinkSettings>,
}

pub(super) fn validate(
    raw: RawConfig,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Vec<ConfigIssue>> {
    let effective_yaml = serde_saphyr::to_string(&raw)
        .unwrap_or_else(|error| format!("# the effective config could not be rendered: {error}\n"));
    let mut checker = Checker::new(origin);
    let mut warnings = Vec::new();
    // Compiling the built-in parsers costs start-up time and memory; a config with no inputs
    // and no parser files (a proxy-only sidecar) uses none of them.
    let registry = if raw.logs.inputs.is_empty() && raw.logs.parsers.is_empty() {
        Registry::default()
    } else {
        load_parsers(&mut checker, &raw.logs.parsers, &mut warnings)
    };
    let inputs = check_inputs(&mut checker, &raw.logs.inputs, &registry);
    let tailed_by = |path: &Path| -> Vec<String> {
        inputs.iter().filter(|input| input.include.is_match(path)).map(|input| input.name.to_string()).collect()
    };
    let sinks = check_sinks(&mut checker, &raw.logs.sinks, &tailed_by);
    let proxy = raw.proxy.as_ref().map(|proxy| proxy.check(&mut checker, raw.admin.listen.0)).unwrap_or_default();
    let transforms = match Transforms::new(&raw.logs.transforms) {
        Ok(transforms) => transforms,
        Err(error) => {
            checker.unplaced("logs.transforms".into(), error.to_string());
            Transforms::default()
        }
    };
    if !checker.is_clean() {
        return Err(checker.into_issues());
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
            transforms: Arc::new(transforms),
            sinks,
        },
        proxy,
        tracing: raw.tracing.as_ref().map(|tracing| tracing.check()),
    })
}

/// The built-in parsers plus the definitions in the `logs.parsers` files. Relative globs are
/// resolved from the config file's directory. A glob that matches nothing is a warning (the
/// directory may be filled later by a volume); a file that cannot be read or compiled is an
/// error naming the file, the position and the problem.
fn load_parsers(checker: &mut Checker, globs: &[GlobPattern], warnings: &mut Vec<String>) -> Registry {
    let mut registry = match Registry::builtin() {
        Ok(registry) => registry,
        Err(errors) => {
            errors.into_iter().for_each(|error| checker.push(definition_issue(error)));
            return Registry::default();
        }
    };
    let base = Path::new(checker.origin()).parent().filter(|_| !checker.origin().starts_with('<'));
    for (index, pattern) in globs.iter().enumerate() {
        let files = match expand_glob(base, &pattern.0) {
            Ok(files) => files,
            Err(message) => {
                checker.unplaced(format!("logs.parsers[{index}]"), message);
                continue;
            }
        };
        if files.is_empty() {
            warnings.push(format!("{}: logs.parsers[{index}]: {:?} matches no file", checker.origin(), pattern.0));
        }
        // `parsers: ["*.yaml"]` beside the config file would match the config itself.
        let config_file = std::fs::canonicalize(checker.origin()).ok();
        for file in files.into_iter().filter(|f| std::fs::canonicalize(f).ok() != config_file || config_file.is_none())
        {
            let origin = file.display().to_string();
            let text = match std::fs::read_to_string(&file) {
                Ok(text) => text,
                Err(error) => {
                    let message = format!("cannot read parser definitions: {error}");
                    checker.push(ConfigIssue { origin, position: None, field: String::new(), message, hint: None });
                    continue;
                }
            };
            if let Err(errors) = registry.add_yaml(&text, &origin) {
                errors.into_iter().for_each(|error| checker.push(definition_issue(error)));
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
    }

    #[test]
    fn names_are_unique_and_parsers_known() {
        let yaml = "logs:\n  inputs:\n    - { name: a, paths: [/x/*.log] }\n    - { name: a, paths: [/y/*.log], format: nginix }\n";
        let found = issues(yaml);
        assert!(found.iter().any(|m| m.contains("duplicate input name")), "{found:?}");
        assert!(found.iter().any(|m| m.contains("unknown parser \"nginix\"")), "{found:?}");
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
