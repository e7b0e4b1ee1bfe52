//! `pillion inject` through the real binary, against golden files: realistic manifests in
//! fixtures/inject/*.yaml and what injecting them must print, in *.injected.yaml next to them.
//! `PILLION_BLESS=1 cargo test --test inject` rewrites the golden files (review the diff).

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::BIN;

const IMAGE: &str = "ghcr.io/example/pillion:0.1.0";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/inject").join(name)
}

fn inject_stdin(input: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(["inject", "-", "--image", IMAGE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pillion inject");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write manifest");
    child.wait_with_output().expect("pillion inject")
}

fn inject_file(path: &Path) -> String {
    let output = Command::new(BIN).arg("inject").arg(path).args(["--image", IMAGE]).output().expect("pillion inject");
    assert!(output.status.success(), "inject {}: {}", path.display(), String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8")
}

fn check_golden(name: &str) -> String {
    let injected = inject_file(&fixture(&format!("{name}.yaml")));
    let golden = fixture(&format!("{name}.injected.yaml"));
    if std::env::var_os("PILLION_BLESS").is_some() {
        std::fs::write(&golden, &injected).expect("bless");
    }
    let expected = std::fs::read_to_string(&golden).expect("golden file (PILLION_BLESS=1 writes it)");
    assert_eq!(injected, expected, "inject {name}.yaml differs from {name}.injected.yaml");
    injected
}

/// The documents of a manifest, as text.
fn documents(manifest: &str) -> Vec<String> {
    let mut documents = vec![String::new()];
    for line in manifest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            documents.push(String::new());
        } else {
            documents.last_mut().expect("one").push_str(line);
        }
    }
    documents
}

/// Each generated ConfigMap holds a config `pillion validate` accepts.
fn validate_config_maps(manifest: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (index, document) in documents(manifest).iter().enumerate() {
        let Some(start) = document.find("  pillion.yaml: |\n") else { continue };
        let body: String = document[start..]
            .lines()
            .skip(1)
            .take_while(|line| line.starts_with("    ") || line.is_empty())
            .map(|line| format!("{}\n", line.get(4..).unwrap_or("")))
            .collect();
        let path = dir.path().join(format!("config-{index}.yaml"));
        std::fs::write(&path, &body).expect("write config");
        let output = Command::new(BIN).args(["validate", "--config"]).arg(&path).output().expect("validate");
        assert!(output.status.success(), "{body}\n{}", String::from_utf8_lossy(&output.stderr));
    }
}

#[test]
fn deployment_with_two_containers_init_containers_volumes_and_a_service() {
    let input = std::fs::read_to_string(fixture("shop.yaml")).expect("fixture");
    let injected = check_golden("shop");
    // The Service, comments and all, is copied byte for byte.
    let service = &input[..input.find("---\n").expect("two documents")];
    assert!(injected.starts_with(service), "{injected}");
    assert!(injected.contains("kind: ConfigMap\nmetadata:\n  name: checkout-pillion\n  namespace: shop\n"));
    validate_config_maps(&injected);
}

#[test]
fn statefulset_daemonset_and_pod_with_an_existing_config_map() {
    let injected = check_golden("workloads");
    // worker-pillion was in the manifest: not appended again; the others are.
    assert_eq!(injected.matches("name: worker-pillion\n").count(), 2, "the ConfigMap and the volume's reference");
    assert!(injected.contains("name: ledger-pillion") && injected.contains("name: node-agent-pillion"));
    validate_config_maps(&injected);
}

#[test]
fn injecting_twice_changes_nothing_more() {
    for name in ["shop", "workloads"] {
        let once = inject_file(&fixture(&format!("{name}.yaml")));
        let twice = inject_stdin(&once);
        assert!(twice.status.success(), "{}", String::from_utf8_lossy(&twice.stderr));
        assert_eq!(String::from_utf8_lossy(&twice.stdout), once, "{name}: second injection changed the output");
    }
}

#[test]
fn a_manifest_without_workloads_is_copied_unchanged() {
    let manifest =
        "# just a service\napiVersion: v1\nkind: Service\nmetadata: { name: web }\n---\n\n# trailing comment\n";
    let output = inject_stdin(manifest);
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout), manifest);
}

#[test]
fn invalid_yaml_exits_2_and_names_the_document() {
    let output = inject_stdin("kind: Service\n---\nkind: Deployment\nspec: { template: [\n");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("document 2 (line 3)"), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing printed on error");
}

#[test]
fn the_shipped_sidecar_example_counts_as_injected() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/sidecar.yaml");
    let manifest = std::fs::read_to_string(&example).expect("deploy/kubernetes/sidecar.yaml");
    assert_eq!(inject_file(&example), manifest);
}
