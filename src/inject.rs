//! `pillion inject`: adds pillion as a native sidecar to every Deployment, StatefulSet,
//! DaemonSet and Pod of a multi-document Kubernetes manifest, the way `linkerd inject` does for
//! its proxy.
//!
//! The manifest is split into documents as text, at `---` lines: documents that are not edited
//! (other kinds, workloads already injected) are copied byte for byte. An edited document is
//! parsed into an order-keeping tree ([`Node`]), changed, and written back as YAML (its leading
//! comment lines are kept; comments inside it are not). Per pod template it adds:
//!
//! - the `pillion` container first in `initContainers`, with `restartPolicy: Always` (a native
//!   sidecar, Kubernetes >= 1.29: it starts before the app and stops after it), the downward-API
//!   environment pillion reads (POD_NAME, POD_NAMESPACE, NODE_NAME, CONTAINER_NAME), probes on
//!   `/readyz` and `/healthz`, and its admin port named `pillion-admin`;
//! - the app's log directory (`--log-dir`): the volume the app container already mounts there,
//!   else a new `pillion-logs` emptyDir mounted in the app container;
//! - volumes for pillion's config (a ConfigMap `<name>-pillion`, appended to the output unless
//!   the manifest has it) and its data directory (checkpoints);
//! - Prometheus scrape annotations, unless the pod template already has its own.
//!
//! A workload that already has a container named `pillion` is left as it is, so injecting
//! twice gives the same output as injecting once.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// Where pillion's admin server listens inside the pod.
pub const ADMIN_PORT: u64 = 9901;
/// The sidecar's container name (also how an injected workload is recognized).
pub const CONTAINER_NAME: &str = "pillion";
/// The container port name the scrape job of deploy/prometheus/scrape.yaml keeps.
pub const ADMIN_PORT_NAME: &str = "pillion-admin";

const CONFIG_DIR: &str = "/etc/pillion";
const DATA_DIR: &str = "/var/lib/pillion";
const LOGS_VOLUME: &str = "pillion-logs";
const CONFIG_VOLUME: &str = "pillion-config";
const DATA_VOLUME: &str = "pillion-data";

/// What `pillion inject` was asked to add.
#[derive(Debug, Clone)]
pub struct InjectOptions {
    /// pillion's container image.
    pub image: String,
    /// The directory the app writes its log files to.
    pub log_dir: String,
}

/// Why a manifest could not be injected.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("document {document} (line {line}): invalid YAML: {message}")]
    Yaml { document: usize, line: usize, message: String },
    #[error("document {document} (line {line}): {kind} {name:?}: {message}")]
    Shape { document: usize, line: usize, kind: String, name: String, message: String },
    #[error("cannot write YAML: {0}")]
    Write(String),
}

/// A YAML value that keeps the order of mapping keys.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    fn str(text: &str) -> Node {
        Node::Str(text.to_owned())
    }

    fn map(entries: Vec<(&str, Node)>) -> Node {
        Node::Map(entries.into_iter().map(|(k, v)| (Node::str(k), v)).collect())
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(text) => Some(text),
            _ => None,
        }
    }

    fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        match self {
            Node::Map(entries) => entries.iter_mut().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value at `key` of this mapping, inserted as `default` when absent or null. `None`
    /// if this is not a mapping.
    fn entry(&mut self, key: &str, default: Node) -> Option<&mut Node> {
        let Node::Map(entries) = self else { return None };
        let index = match entries.iter().position(|(k, _)| k.as_str() == Some(key)) {
            Some(index) => {
                if entries[index].1 == Node::Null {
                    entries[index].1 = default;
                }
                index
            }
            None => {
                entries.push((Node::str(key), default));
                entries.len() - 1
            }
        };
        Some(&mut entries[index].1)
    }

    fn items(&self) -> &[Node] {
        match self {
            Node::Seq(items) => items,
            _ => &[],
        }
    }

    fn name(&self) -> Option<&str> {
        self.get("name").and_then(Node::as_str)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::UInt(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Node::Map(entries))
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => serializer.serialize_unit(),
            Node::Bool(v) => serializer.serialize_bool(*v),
            Node::Int(v) => serializer.serialize_i64(*v),
            Node::UInt(v) => serializer.serialize_u64(*v),
            Node::Float(v) => serializer.serialize_f64(*v),
            Node::Str(v) => serializer.serialize_str(v),
            Node::Seq(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Map(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

/// One document of the manifest, as text.
struct Document<'a> {
    /// The `---` line that opened it (empty for the first document without one).
    separator: &'a str,
    text: &'a str,
    /// 1-based line of its first line in the manifest.
    line: usize,
}

/// Splits a manifest at its `---` lines (a document marker, alone or followed by a space).
fn documents(manifest: &str) -> Vec<Document<'_>> {
    let mut documents = Vec::new();
    let mut separator = "";
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (index, line) in manifest.split_inclusive('\n').enumerate() {
        let body = line.trim_end_matches(['\n', '\r']);
        let is_marker = body == "---" || body.starts_with("--- ") || body.starts_with("---\t");
        if is_marker {
            if offset > 0 || !separator.is_empty() {
                documents.push(Document { separator, text: &manifest[start..offset], line: start_line });
            }
            separator = &manifest[offset..offset + line.len()];
            start = offset + line.len();
            start_line = index + 2;
        }
        offset += line.len();
    }
    documents.push(Document { separator, text: &manifest[start..], line: start_line });
    documents
}

/// Whether a document holds nothing but comments and blank lines.
fn is_empty(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "..."
    })
}

/// The workload kinds whose pod template gets the sidecar.
const KINDS: [&str; 4] = ["Deployment", "StatefulSet", "DaemonSet", "Pod"];

/// Injects pillion into every workload of `manifest`; other documents pass through unchanged.
pub fn inject(manifest: &str, options: &InjectOptions) -> Result<String, InjectError> {
    let documents = documents(manifest);
    let mut parsed = Vec::with_capacity(documents.len());
    for (index, document) in documents.iter().enumerate() {
        if is_empty(document.text) {
            parsed.push(None);
            continue;
        }
        let node: Node = serde_saphyr::from_str(document.text).map_err(|error| InjectError::Yaml {
            document: index + 1,
            line: document.line,
            message: error.to_string(),
        })?;
        parsed.push(Some(node));
    }
    let existing_config_maps: Vec<(String, String)> = parsed
        .iter()
        .flatten()
        .filter(|node| node.get("kind").and_then(Node::as_str) == Some("ConfigMap"))
        .filter_map(|node| Some((namespace_of(node), node.get("metadata")?.name()?.to_owned())))
        .collect();

    let mut out = String::with_capacity(manifest.len() * 2);
    let mut config_maps: Vec<Node> = Vec::new();
    for (index, (document, node)) in documents.iter().zip(parsed).enumerate() {
        out.push_str(document.separator);
        let Some(mut node) = node else {
            out.push_str(document.text);
            continue;
        };
        let shape = |kind: &str, name: &str, message: &str| InjectError::Shape {
            document: index + 1,
            line: document.line,
            kind: kind.to_owned(),
            name: name.to_owned(),
            message: message.to_owned(),
        };
        match inject_workload(&mut node, options) {
            Ok(None) => out.push_str(document.text),
            Ok(Some(config_map)) => {
                out.push_str(leading_comments(document.text));
                out.push_str(&to_yaml(&node)?);
                let key = (namespace_of(&config_map), config_map_name(&config_map));
                let known = existing_config_maps.contains(&key)
                    || config_maps.iter().any(|c| (namespace_of(c), config_map_name(c)) == key);
                if !known {
                    config_maps.push(config_map);
                }
            }
            Err((kind, name, message)) => return Err(shape(&kind, &name, message)),
        }
    }
    for config_map in config_maps {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("---\n");
        out.push_str(&to_yaml(&config_map)?);
    }
    Ok(out)
}

fn to_yaml(node: &Node) -> Result<String, InjectError> {
    let mut text = serde_saphyr::to_string(node).map_err(|error| InjectError::Write(error.to_string()))?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// The comment and blank lines a document starts with.
fn leading_comments(text: &str) -> &str {
    let mut end = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if !(trimmed.is_empty() || trimmed.starts_with('#')) {
            break;
        }
        end += line.len();
    }
    &text[..end]
}

fn namespace_of(node: &Node) -> String {
    node.get("metadata").and_then(|m| m.get("namespace")).and_then(Node::as_str).unwrap_or("").to_owned()
}

fn config_map_name(node: &Node) -> String {
    node.get("metadata").and_then(Node::name).unwrap_or("").to_owned()
}

/// Adds the sidecar to `node` if it is a workload without one; returns its ConfigMap.
/// Errors are (kind, name, message).
fn inject_workload(node: &mut Node, options: &InjectOptions) -> Result<Option<Node>, (String, String, &'static str)> {
    let Some(kind) = node.get("kind").and_then(Node::as_str).filter(|kind| KINDS.contains(kind)).map(str::to_owned)
    else {
        return Ok(None);
    };
    let name = node.get("metadata").and_then(Node::name).unwrap_or("pillion").to_owned();
    let namespace = namespace_of(node);
    let fail = |message| (kind.clone(), name.clone(), message);
    let template = if kind == "Pod" {
        node
    } else {
        node.get_mut("spec").and_then(|spec| spec.get_mut("template")).ok_or_else(|| fail("has no spec.template"))?
    };
    let spec = template.get("spec").ok_or_else(|| fail("has no pod spec"))?;
    let containers = spec.get("containers").map(Node::items).unwrap_or_default();
    if containers.is_empty() {
        return Err(fail("has no containers"));
    }
    let injected = |list: &str| {
        spec.get(list).map(Node::items).unwrap_or_default().iter().any(|c| c.name() == Some(CONTAINER_NAME))
    };
    if injected("initContainers") || injected("containers") {
        return Ok(None);
    }

    // The app container: the one kubectl defaults to, else the first.
    let metadata = template.get("metadata");
    let default_container =
        metadata.and_then(|m| m.get("annotations")).and_then(|a| a.get("kubectl.kubernetes.io/default-container"));
    let app_index = default_container
        .and_then(Node::as_str)
        .and_then(|wanted| containers.iter().position(|c| c.name() == Some(wanted)))
        .unwrap_or(0);
    let app_name = containers[app_index].name().ok_or_else(|| fail("has a container without a name"))?.to_owned();
    // The volume the app already mounts at the log directory, if any.
    let existing_logs = containers[app_index]
        .get("volumeMounts")
        .map(Node::items)
        .unwrap_or_default()
        .iter()
        .find(|mount| {
            mount.get("mountPath").and_then(Node::as_str).map(|p| p.trim_end_matches('/'))
                == Some(options.log_dir.trim_end_matches('/'))
        })
        .and_then(|mount| mount.get("name").and_then(Node::as_str))
        .map(str::to_owned);
    let logs_volume = existing_logs.clone().unwrap_or_else(|| LOGS_VOLUME.to_owned());
    let config_map = format!("{name}-pillion");

    let annotations = template
        .entry("metadata", Node::Map(Vec::new()))
        .and_then(|m| m.entry("annotations", Node::Map(Vec::new())))
        .ok_or_else(|| fail("has metadata that is not a mapping"))?;
    let has_scrape = matches!(annotations, Node::Map(entries) if entries.iter().any(|(k, _)| k.as_str().is_some_and(|k| k.starts_with("prometheus.io/"))));
    let mut added: Vec<(&str, String)> = vec![("kubectl.kubernetes.io/default-container", app_name.clone())];
    if !has_scrape {
        added.push(("prometheus.io/scrape", "true".to_owned()));
        added.push(("prometheus.io/port", ADMIN_PORT.to_string()));
        added.push(("prometheus.io/path", "/metrics".to_owned()));
    }
    for (key, value) in added {
        annotations.entry(key, Node::Str(value));
    }

    let spec = template.get_mut("spec").ok_or_else(|| fail("has no pod spec"))?;
    if existing_logs.is_none() {
        let containers = spec.get_mut("containers").ok_or_else(|| fail("has no containers"))?;
        let Node::Seq(containers) = containers else { return Err(fail("has containers that are not a list")) };
        let mounts = containers[app_index]
            .entry("volumeMounts", Node::Seq(Vec::new()))
            .ok_or_else(|| fail("has a container that is not a mapping"))?;
        let Node::Seq(mounts) = mounts else { return Err(fail("has volumeMounts that are not a list")) };
        mounts.push(Node::map(vec![("name", Node::str(LOGS_VOLUME)), ("mountPath", Node::str(&options.log_dir))]));
    }
    let init =
        spec.entry("initContainers", Node::Seq(Vec::new())).ok_or_else(|| fail("has a spec that is not a mapping"))?;
    let Node::Seq(init) = init else { return Err(fail("has initContainers that are not a list")) };
    init.insert(0, sidecar(options, &app_name, &logs_volume));
    let volumes =
        spec.entry("volumes", Node::Seq(Vec::new())).ok_or_else(|| fail("has a spec that is not a mapping"))?;
    let Node::Seq(volumes) = volumes else { return Err(fail("has volumes that are not a list")) };
    if existing_logs.is_none() {
        volumes.push(Node::map(vec![("name", Node::str(LOGS_VOLUME)), ("emptyDir", Node::Map(Vec::new()))]));
    }
    volumes.push(Node::map(vec![
        ("name", Node::str(CONFIG_VOLUME)),
        ("configMap", Node::map(vec![("name", Node::str(&config_map))])),
    ]));
    volumes.push(Node::map(vec![("name", Node::str(DATA_VOLUME)), ("emptyDir", Node::Map(Vec::new()))]));

    Ok(Some(config_map_for(&config_map, &namespace, &name, options)))
}

fn field_env(name: &str, path: &str) -> Node {
    Node::map(vec![
        ("name", Node::str(name)),
        ("valueFrom", Node::map(vec![("fieldRef", Node::map(vec![("fieldPath", Node::str(path))]))])),
    ])
}

fn probe(path: &str, period: u64) -> Node {
    Node::map(vec![
        ("httpGet", Node::map(vec![("path", Node::str(path)), ("port", Node::str(ADMIN_PORT_NAME))])),
        ("periodSeconds", Node::UInt(period)),
    ])
}

fn mount(name: &str, path: &str, read_only: bool) -> Node {
    let mut entries = vec![("name", Node::str(name)), ("mountPath", Node::str(path))];
    if read_only {
        entries.push(("readOnly", Node::Bool(true)));
    }
    Node::map(entries)
}

/// The pillion container (see deploy/kubernetes/sidecar.yaml).
fn sidecar(options: &InjectOptions, app: &str, logs_volume: &str) -> Node {
    let config_file = format!("{CONFIG_DIR}/pillion.yaml");
    Node::map(vec![
        ("name", Node::str(CONTAINER_NAME)),
        ("image", Node::str(&options.image)),
        ("restartPolicy", Node::str("Always")),
        ("args", Node::Seq(vec![Node::str("run"), Node::str("--config"), Node::Str(config_file)])),
        (
            "env",
            Node::Seq(vec![
                field_env("POD_NAME", "metadata.name"),
                field_env("POD_NAMESPACE", "metadata.namespace"),
                field_env("NODE_NAME", "spec.nodeName"),
                Node::map(vec![("name", Node::str("CONTAINER_NAME")), ("value", Node::str(app))]),
            ]),
        ),
        (
            "ports",
            Node::Seq(vec![Node::map(vec![
                ("name", Node::str(ADMIN_PORT_NAME)),
                ("containerPort", Node::UInt(ADMIN_PORT)),
            ])]),
        ),
        ("readinessProbe", probe("/readyz", 5)),
        ("livenessProbe", probe("/healthz", 10)),
        (
            "resources",
            Node::map(vec![
                ("requests", Node::map(vec![("cpu", Node::str("20m")), ("memory", Node::str("32Mi"))])),
                ("limits", Node::map(vec![("memory", Node::str("64Mi"))])),
            ]),
        ),
        (
            "securityContext",
            Node::map(vec![
                ("runAsNonRoot", Node::Bool(true)),
                ("runAsUser", Node::UInt(65532)),
                ("readOnlyRootFilesystem", Node::Bool(true)),
                ("allowPrivilegeEscalation", Node::Bool(false)),
                ("capabilities", Node::map(vec![("drop", Node::Seq(vec![Node::str("ALL")]))])),
            ]),
        ),
        (
            "volumeMounts",
            Node::Seq(vec![
                mount(logs_volume, &options.log_dir, true),
                mount(CONFIG_VOLUME, CONFIG_DIR, true),
                mount(DATA_VOLUME, DATA_DIR, false),
            ]),
        ),
    ])
}

/// The ConfigMap holding a starting config: tail `*.log` under the log directory, admin port
/// open to the pod's network for Prometheus; records go to stdout until sinks are added.
fn config_map_for(name: &str, namespace: &str, service: &str, options: &InjectOptions) -> Node {
    let log_dir = options.log_dir.trim_end_matches('/');
    let config = format!(
        "service:\n  name: {service}\nadmin:\n  listen: 0.0.0.0:{ADMIN_PORT}\nlogs:\n  data_dir: {DATA_DIR}\n  inputs:\n    - name: app\n      paths: [\"{log_dir}/*.log\"]\n      format: auto\n  # sinks: add Loki, Elasticsearch or OTLP here; without sinks records go to stdout\n"
    );
    let mut metadata = vec![("name", Node::str(name))];
    if !namespace.is_empty() {
        metadata.push(("namespace", Node::str(namespace)));
    }
    Node::map(vec![
        ("apiVersion", Node::str("v1")),
        ("kind", Node::str("ConfigMap")),
        ("metadata", Node::map(metadata)),
        ("data", Node::map(vec![("pillion.yaml", Node::Str(config))])),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> InjectOptions {
        InjectOptions { image: "pillion:test".into(), log_dir: "/var/log/app".into() }
    }

    #[test]
    fn documents_split_at_marker_lines_only() {
        let manifest = "a: 1\n---\nb: \"---\"\n--- # two\nc: 3\n";
        let docs = documents(manifest);
        let texts: Vec<&str> = docs.iter().map(|d| d.text).collect();
        assert_eq!(texts, ["a: 1\n", "b: \"---\"\n", "c: 3\n"]);
        assert_eq!(docs[2].separator, "--- # two\n");
        assert_eq!(docs[2].line, 5);
        let rebuilt: String = docs.iter().map(|d| format!("{}{}", d.separator, d.text)).collect();
        assert_eq!(rebuilt, manifest);
    }

    #[test]
    fn nodes_keep_key_order_and_string_types() {
        let text = "zeta: 1\nalpha: \"8080\"\nflag: \"true\"\nplain: true\nlist: [b, a]\n";
        let node: Node = serde_saphyr::from_str(text).expect("parse");
        let written = to_yaml(&node).expect("write");
        let again: Node = serde_saphyr::from_str(&written).expect("reparse");
        assert_eq!(node, again, "{written}");
        assert!(written.find("zeta").expect("zeta") < written.find("alpha").expect("alpha"), "{written}");
        assert_eq!(again.get("alpha"), Some(&Node::str("8080")));
        assert_eq!(again.get("plain"), Some(&Node::Bool(true)));
    }

    #[test]
    fn non_workloads_and_injected_workloads_pass_through_byte_for_byte() {
        let manifest = "# svc\napiVersion: v1\nkind: Service\nmetadata: {name: web}   # odd spacing kept\nspec:\n  ports: [{port: 80}]\n";
        assert_eq!(inject(manifest, &options()).expect("inject"), manifest);
        let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n    - name: app\n      image: app\n";
        let once = inject(pod, &options()).expect("inject");
        assert_ne!(once, pod);
        assert_eq!(inject(&once, &options()).expect("inject again"), once);
    }

    #[test]
    fn invalid_yaml_names_the_document_and_line() {
        let manifest = "kind: Service\n---\nkind: Pod\nspec: [unclosed\n";
        let error = inject(manifest, &options()).expect_err("invalid");
        assert!(matches!(error, InjectError::Yaml { document: 2, line: 3, .. }), "{error}");
    }

    #[test]
    fn an_existing_mount_of_the_log_directory_is_shared_not_duplicated() {
        let pod = "kind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n    - name: app\n      volumeMounts: [{name: logs, mountPath: /var/log/app/}]\n  volumes: [{name: logs, emptyDir: {}}]\n";
        let out = inject(pod, &options()).expect("inject");
        let node: Node = serde_saphyr::from_str(out.split("\n---\n").next().expect("pod")).expect("parse");
        let spec = node.get("spec").expect("spec");
        let volumes: Vec<&str> = spec.get("volumes").expect("volumes").items().iter().filter_map(Node::name).collect();
        assert_eq!(volumes, ["logs", "pillion-config", "pillion-data"]);
        let sidecar = &spec.get("initContainers").expect("init").items()[0];
        assert_eq!(sidecar.get("volumeMounts").expect("mounts").items()[0].name(), Some("logs"));
        let app = &spec.get("containers").expect("containers").items()[0];
        assert_eq!(app.get("volumeMounts").expect("mounts").items().len(), 1);
    }
}
