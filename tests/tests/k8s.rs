//! The Kubernetes manifests (`deploy/k8s`, a kustomize base), proven two ways.
//!
//! 1. Rendered (`scripts/kustomize.sh`: kustomize, `kubectl kustomize`, or kustomize built
//!    from the Go module proxy), and what the README promises read back from the
//!    output: probes, resources, non-root pods with a read-only root filesystem, one
//!    replica and a volume per SQLite service, a Service and a disruption budget per
//!    Deployment, and network policies that let only the right pods in.
//! 2. Run for real with `podman kube play`, as far as Podman runs Kubernetes objects:
//!    the pods of every Deployment with their ConfigMap, Secret and volumes, on a network
//!    of the test's own, then a booking through the gateway's published port, then
//!    SIGTERM to the room service (`podman stop`, what the kubelet sends after the
//!    preStop wait): exit 0 within the grace period, gone from the registry. Every
//!    service must register its pod IP under its pod name (downward API), and every
//!    container must run as 65532 with a read-only root filesystem.
//!
//! What Podman (4.3 here) does not do, and what the test does about it, through a
//! kustomize overlay of the base in a temp directory (the manifests themselves are
//! played unchanged otherwise):
//! - Services: a pod finds another by its Service's name in Kubernetes; here each
//!   Deployment is played alone with `--network NET:alias=SERVICE`, so aardvark-dns
//!   answers the same name (`registry`) on the test's network.
//! - `containerPort`s: Podman 4 publishes every one on the host at the same port
//!   (Kubernetes publishes none): the overlay drops them and gives the gateway's one a
//!   free loopback `hostPort` (and one gateway replica, which that port allows).
//! - Secrets: Podman 4.3 stores a played `Secret` as YAML but reads it back as JSON, so
//!   the test creates the podman secret itself, in the form kube play reads (a JSON map
//!   of base64 values).
//! - `emptyDir`: Podman 4.3 makes one a named volume called by the pod's volume name
//!   (`data`, `tmp`), shared by every pod, and anyone's, that uses the name: the test
//!   prefixes each with its Deployment's (unique) name.
//! - Namespaces, Services, PodDisruptionBudgets and NetworkPolicies are not run; probes
//!   and preStop hooks neither (Podman turns probes into health checks that need curl).
//!
//! Names carry a unique suffix (`-hotelk8s<id>`) and a label (`hotel-k8s-test=<id>`);
//! everything created is removed by id at the end, even on failure, and the test checks
//! that nothing of it is left. Podman's own pause image (built once from catatonit) stays.
//!
//! Podman (and catatonit) come from `scripts/podman.sh install`. Without podman or a
//! renderer the tests say so and pass, except in CI (`CI=true`), where that fails.
//!
//! Run: `cargo build -p hotel && cargo test -p hotel-tests --test k8s -- --nocapture`

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

mod podman_support;

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use hotel_tests::{TempDir, day, free_port, repo_root};
use podman_support::{
    build_image, exactly_registered, podman, registered, run, script, unique, until,
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

/// The domain services (SQLite: one replica each, with a volume).
const SERVICES: [&str; 3] = ["customer", "room", "booking"];
/// Every Deployment, in the order they are played: the registry first, the gateway last.
const ROLES: [&str; 5] = ["registry", "customer", "room", "booking", "gateway"];
/// The label every Deployment, Service and pod carries with its role.
const NAME_LABEL: &str = "app.kubernetes.io/name";
/// What the services' shutdown drains for at most (`shutdown_grace`'s default).
const SHUTDOWN_GRACE_S: u64 = 10;

/// Renders the kustomization in `dir`: its documents, or `None` when there is no renderer
/// here (outside CI).
fn render(dir: &Path) -> Result<Option<Vec<Value>>> {
    let dir = dir.to_string_lossy();
    let Some(yaml) = script("kustomize.sh", &["build", &dir])? else {
        return Ok(None);
    };
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&yaml) {
        let v = Value::deserialize(doc).context("rendered YAML")?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(Some(docs))
}

fn kind<'a>(docs: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    docs.iter().filter(move |d| d["kind"] == kind)
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The Deployment of `role` (by its name label, so that a name suffix does not matter).
fn deployment<'a>(docs: &'a [Value], role: &str) -> Result<&'a Value> {
    kind(docs, "Deployment")
        .find(|d| d["metadata"]["labels"][NAME_LABEL] == role)
        .with_context(|| format!("no Deployment labelled {NAME_LABEL}={role}"))
}

/// The claims a Deployment's pods mount.
fn claims(dep: &Value) -> Vec<String> {
    dep.pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .map(str::to_owned)
        .collect()
}

/// The `matchLabels` app names a NetworkPolicy lets in (`None` for a rule without
/// `from`: anyone).
fn policy_sources(policy: &Value) -> Option<BTreeSet<String>> {
    let mut from = BTreeSet::new();
    for rule in policy["spec"]["ingress"].as_array()? {
        let peers = rule["from"].as_array()?;
        for peer in peers {
            let labels = peer["podSelector"]["matchLabels"].as_object()?;
            for (k, v) in labels {
                from.insert(format!("{k}={}", v.as_str().unwrap_or_default()));
            }
        }
    }
    Some(from)
}

#[tokio::test]
async fn kustomization_renders_what_the_deploy_section_promises() -> Result<()> {
    let root = repo_root();
    let started = Instant::now();
    let Some(docs) = render(&root.join("deploy/k8s"))? else {
        return Ok(());
    };
    eprintln!(
        "measured: rendered {} objects in {:.1?}",
        docs.len(),
        started.elapsed()
    );

    // One namespace for everything, every object part of the hotel.
    for d in &docs {
        let what = format!("{} {}", d["kind"], name(d));
        if d["kind"] == "Namespace" {
            ensure!(name(d) == "hotel", "{what}");
        } else {
            ensure!(d["metadata"]["namespace"] == "hotel", "{what}: namespace");
        }
        ensure!(
            d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "hotel",
            "{what}: part-of label"
        );
    }
    let deployments: BTreeSet<&str> = kind(&docs, "Deployment").map(name).collect();
    ensure!(
        deployments == ROLES.into_iter().collect::<BTreeSet<_>>(),
        "deployments {deployments:?}"
    );
    let config: BTreeSet<&str> = kind(&docs, "ConfigMap").map(name).collect();
    let secret = kind(&docs, "Secret").next().context("no Secret")?;

    for role in ROLES {
        let dep = deployment(&docs, role)?;
        let pod = &dep["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let what = format!("deployment {role}");
        ensure!(c["image"] == "hotel:latest", "{what}: image {}", c["image"]);
        ensure!(
            c["imagePullPolicy"] == "IfNotPresent",
            "{what}: pull policy"
        );
        // Non-root, read-only, nothing to escalate to.
        ensure!(
            pod["securityContext"]["runAsNonRoot"] == true,
            "{what}: runAsNonRoot"
        );
        ensure!(
            pod["securityContext"]["runAsUser"] == 65532,
            "{what}: runAsUser"
        );
        ensure!(
            pod["automountServiceAccountToken"] == false,
            "{what}: token"
        );
        let sc = &c["securityContext"];
        ensure!(
            sc["readOnlyRootFilesystem"] == true,
            "{what}: read-only root"
        );
        ensure!(
            sc["allowPrivilegeEscalation"] == false,
            "{what}: escalation"
        );
        ensure!(
            sc["capabilities"]["drop"] == json!(["ALL"]),
            "{what}: capabilities"
        );
        // Probes and resources.
        ensure!(
            str_at(c, "/readinessProbe/httpGet/path") == "/readyz",
            "{what}: readiness"
        );
        ensure!(
            str_at(c, "/livenessProbe/httpGet/path") == "/healthz",
            "{what}: liveness"
        );
        ensure!(
            c["startupProbe"]["httpGet"].is_object(),
            "{what}: startup probe"
        );
        ensure!(
            c["resources"]["requests"]["cpu"].is_string()
                && c["resources"]["requests"]["memory"].is_string()
                && c["resources"]["limits"]["memory"].is_string(),
            "{what}: resources {}",
            c["resources"]
        );
        // Settings from the ConfigMap, secrets from the Secret's keys.
        for from in c["envFrom"].as_array().into_iter().flatten() {
            let cm = str_at(from, "/configMapRef/name");
            ensure!(config.contains(cm), "{what}: no ConfigMap {cm:?}");
        }
        for env in c["env"].as_array().into_iter().flatten() {
            if let Some(r) = env.pointer("/valueFrom/secretKeyRef") {
                ensure!(
                    r["name"].as_str() == Some(name(secret)),
                    "{what}: secret {r}"
                );
                let key = r["key"].as_str().unwrap_or_default();
                ensure!(
                    secret["stringData"][key].is_string(),
                    "{what}: the Secret has no key {key:?}"
                );
            }
        }
        // A Service selecting exactly these pods, and a disruption budget for them.
        let selector = &dep["spec"]["selector"]["matchLabels"];
        for (k, v) in selector.as_object().context("selector")? {
            ensure!(
                dep["spec"]["template"]["metadata"]["labels"][k] == *v,
                "{what}: its pods lack the selector label {k}"
            );
        }
        let svc = kind(&docs, "Service")
            .find(|s| name(s) == role)
            .with_context(|| format!("no Service {role}"))?;
        ensure!(
            svc["spec"]["selector"] == *selector,
            "service {role}: selector"
        );
        let pdb = kind(&docs, "PodDisruptionBudget")
            .find(|p| p["spec"]["selector"]["matchLabels"] == *selector)
            .with_context(|| format!("no PodDisruptionBudget for {role}"))?;
        // Time to stop: the preStop wait, then deregistration and the drain.
        if role != "registry" {
            let wait = c
                .pointer("/lifecycle/preStop/sleep/seconds")
                .and_then(Value::as_u64)
                .with_context(|| format!("{what}: no preStop sleep"))?;
            let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
            ensure!(
                grace >= wait + SHUTDOWN_GRACE_S,
                "{what}: {grace} s grace for a {wait} s preStop and a {SHUTDOWN_GRACE_S} s drain"
            );
        }
        let replicas = dep["spec"]["replicas"].as_u64().unwrap_or(1);
        match role {
            "gateway" => {
                ensure!(replicas == 2, "{what}: {replicas} replicas");
                ensure!(
                    pdb["spec"]["minAvailable"] == 1,
                    "{what}: budget {}",
                    pdb["spec"]
                );
            }
            // One replica, replaced not rolled, its database on its own claim.
            _ => {
                ensure!(replicas == 1, "{what}: {replicas} replicas");
                ensure!(
                    dep["spec"]["strategy"]["type"] == "Recreate",
                    "{what}: strategy"
                );
                ensure!(
                    pdb["spec"]["maxUnavailable"] == 1,
                    "{what}: budget {}",
                    pdb["spec"]
                );
            }
        }
        if SERVICES.contains(&role) {
            let claim = format!("{role}-data");
            ensure!(
                claims(dep) == [claim.clone()],
                "{what}: claims {:?}",
                claims(dep)
            );
            ensure!(
                kind(&docs, "PersistentVolumeClaim").any(|p| name(p) == claim),
                "{what}: no PersistentVolumeClaim {claim}"
            );
            let data = c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["name"] == "data" && m["mountPath"] == "/data");
            ensure!(data, "{what}: the claim is not mounted on /data");
            let file = std::fs::read_to_string(root.join(format!("deploy/k8s/{role}.yaml")))?;
            ensure!(
                file.contains("PostgreSQL"),
                "deploy/k8s/{role}.yaml does not say what changes with PostgreSQL"
            );
        }
    }

    // Nothing gets in unless a policy lets it: the gateway from anywhere (its HTTP port
    // only), a service from its callers, the registry from the hotel's own pods.
    let policies: BTreeMap<&str, &Value> =
        kind(&docs, "NetworkPolicy").map(|p| (name(p), p)).collect();
    let deny = policies
        .get("default-deny-ingress")
        .context("no default deny")?;
    ensure!(
        deny["spec"]["podSelector"] == json!({}) && deny["spec"]["ingress"].is_null(),
        "default deny: {}",
        deny["spec"]
    );
    let app = |names: &[&str]| -> BTreeSet<String> {
        names.iter().map(|n| format!("{NAME_LABEL}={n}")).collect()
    };
    let expected = [
        ("customer", Some(app(&["gateway", "booking"]))),
        ("room", Some(app(&["gateway", "booking"]))),
        // Customer reads booking's event feed (GET /events).
        ("booking", Some(app(&["gateway", "customer"]))),
        (
            "registry",
            Some(BTreeSet::from([
                "app.kubernetes.io/part-of=hotel".to_owned()
            ])),
        ),
        ("gateway", None),
    ];
    for (role, from) in expected {
        let p = policies
            .get(role)
            .with_context(|| format!("no NetworkPolicy {role}"))?;
        ensure!(
            p["spec"]["podSelector"]["matchLabels"][NAME_LABEL] == role,
            "policy {role}: selects {}",
            p["spec"]["podSelector"]
        );
        ensure!(
            policy_sources(p) == from,
            "policy {role}: lets in {:?}, want {from:?}",
            policy_sources(p)
        );
        for rule in p["spec"]["ingress"].as_array().into_iter().flatten() {
            ensure!(
                rule["ports"] == json!([{"port": "http", "protocol": "TCP"}]),
                "policy {role}: ports {}",
                rule["ports"]
            );
        }
    }
    Ok(())
}

/// What the kube play test created, removed by id when it ends (also on panic): the
/// played pods (`podman kube down`, then any pod still labelled with the run), their
/// volumes (claims and anonymous ones), the podman secrets, the network, the image.
struct Played {
    /// The run's id: in every name the run gives.
    id: String,
    label: String,
    network: String,
    image: String,
    files: Vec<PathBuf>,
    secrets: Vec<String>,
    volumes: Vec<String>,
}

impl Played {
    fn pods(&self) -> Vec<String> {
        podman(&[
            "pod",
            "ps",
            "-q",
            "--filter",
            &format!("label={}", self.label),
        ])
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
    }

    /// The volumes the run's containers mount that are the run's own: named after it
    /// (claims, renamed `emptyDir`s) or anonymous (a 64-hex name, made for the container).
    fn mounted_volumes(&self) -> Vec<String> {
        let mut names = Vec::new();
        for pod in self.pods() {
            let ids = podman(&[
                "pod",
                "inspect",
                "--format",
                "{{range .Containers}}{{.ID}} {{end}}",
                &pod,
            ])
            .unwrap_or_default();
            for id in ids.split_whitespace() {
                let mounts = podman(&[
                    "inspect",
                    "--format",
                    "{{range .Mounts}}{{if eq .Type \"volume\"}}{{.Name}} {{end}}{{end}}",
                    id,
                ])
                .unwrap_or_default();
                names.extend(
                    mounts
                        .split_whitespace()
                        .filter(|n| {
                            n.contains(&self.id)
                                || (n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
                        })
                        .map(str::to_owned),
                );
            }
        }
        names
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        let filter = format!("label={}", self.label);
        let ids = podman(&["pod", "ps", "--filter", &filter, "--format", "{{.Name}}"])
            .unwrap_or_default();
        for pod in ids.lines() {
            let ctrs = podman(&[
                "ps",
                "-a",
                "--filter",
                &format!("pod={pod}"),
                "--format",
                "{{.ID}} {{.Names}}",
            ])
            .unwrap_or_default();
            for line in ctrs.lines().filter(|l| !l.ends_with("-infra")) {
                let (id, name) = line.split_once(' ').unwrap_or((line, ""));
                if let Ok(out) = run(Command::new("podman").args(["logs", "--tail", "30", id])) {
                    all.push_str(&format!(
                        "--- {name}\n{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
        }
        all
    }

    /// Removes everything; what could not be removed, named.
    fn tear_down(&mut self) -> Vec<String> {
        let mut left = Vec::new();
        let mut volumes = std::mem::take(&mut self.volumes);
        volumes.extend(self.mounted_volumes());
        for file in self.files.drain(..).rev() {
            let _ = podman(&["kube", "down", &file.to_string_lossy()]);
        }
        for pod in self.pods() {
            if let Err(e) = podman(&["pod", "rm", "--force", &pod]) {
                left.push(format!("pod {pod}: {e}"));
            }
        }
        for vol in volumes {
            let still = podman(&["volume", "exists", &vol]).is_ok();
            if still && let Err(e) = podman(&["volume", "rm", "--force", &vol]) {
                left.push(format!("volume {vol}: {e}"));
            }
        }
        for secret in self.secrets.drain(..) {
            if let Err(e) = podman(&["secret", "rm", &secret]) {
                left.push(format!("secret {secret}: {e}"));
            }
        }
        if !self.network.is_empty() {
            if let Err(e) = podman(&["network", "rm", &self.network]) {
                left.push(format!("network {}: {e}", self.network));
            }
            self.network.clear();
        }
        if !self.image.is_empty() {
            if let Err(e) = podman(&["rmi", &self.image]) {
                left.push(format!("image {}: {e}", self.image));
            }
            self.image.clear();
        }
        left
    }
}

impl Drop for Played {
    fn drop(&mut self) {
        for what in self.tear_down() {
            eprintln!("left behind: {what}");
        }
    }
}

/// The kustomization the test plays: the base, renamed and labelled for this run, on
/// the test's image, with the changes Podman needs (module docs).
fn overlay(dir: &Path, base: &Path, id: &str, image: &str, port: u16) -> Result<()> {
    // kustomize wants a relative path to the base.
    let up = "../".repeat(dir.components().count().saturating_sub(1));
    let base = format!("{up}{}", base.to_string_lossy().trim_start_matches('/'));
    let (image_name, tag) = image.rsplit_once(':').context("image tag")?;
    let text = format!(
        r#"apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {base}
nameSuffix: -hotelk8s{id}
labels:
  - pairs:
      hotel-k8s-test: "{id}"
    includeSelectors: false
    includeTemplates: true
images:
  - name: hotel
    newName: {image_name}
    newTag: "{tag}"
patches:
  # Podman 4 publishes every containerPort on the host.
  - target: {{kind: Deployment}}
    patch: |-
      - op: remove
        path: /spec/template/spec/containers/0/ports
  - target: {{kind: Deployment, name: gateway}}
    patch: |-
      - op: replace
        path: /spec/replicas
        value: 1
      - op: add
        path: /spec/template/spec/containers/0/ports
        value: [{{name: http, containerPort: 8080, hostPort: {port}, hostIP: 127.0.0.1}}]
"#
    );
    std::fs::write(dir.join("kustomization.yaml"), text)?;
    Ok(())
}

/// A Secret as the podman secret that `kube play` 4.x reads for `secretKeyRef`: a JSON
/// map of its keys to base64 values.
fn podman_secret(secret: &Value) -> Result<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut map = serde_json::Map::new();
    for (k, v) in secret["data"].as_object().into_iter().flatten() {
        map.insert(k.clone(), v.clone());
    }
    for (k, v) in secret["stringData"].as_object().into_iter().flatten() {
        let v = v.as_str().with_context(|| format!("stringData.{k}"))?;
        map.insert(k.clone(), Value::String(b64.encode(v)));
    }
    Ok(Value::Object(map).to_string())
}

/// Renames `dep`'s `emptyDir` volumes (and their mounts) `<deployment>-<volume>`, so
/// that Podman 4.3's named volumes for them are the run's own; their new names.
fn unshare_empty_dirs(dep: &mut Value) -> Vec<String> {
    let prefix = name(dep).to_owned();
    let spec = &mut dep["spec"]["template"]["spec"];
    let mut renamed = BTreeMap::new();
    for v in spec["volumes"].as_array_mut().into_iter().flatten() {
        if v.get("emptyDir").is_some() {
            let old = v["name"].as_str().unwrap_or_default().to_owned();
            let new = format!("{prefix}-{old}");
            v["name"] = Value::String(new.clone());
            renamed.insert(old, new);
        }
    }
    for c in spec["containers"].as_array_mut().into_iter().flatten() {
        for m in c["volumeMounts"].as_array_mut().into_iter().flatten() {
            if let Some(new) = m["name"].as_str().and_then(|n| renamed.get(n)) {
                m["name"] = Value::String(new.clone());
            }
        }
    }
    renamed.into_values().collect()
}

/// The address of `pod` on `network` (its infra container holds the pod's network).
fn pod_ip(pod: &str, network: &str) -> Result<String> {
    let infra = podman(&["pod", "inspect", "--format", "{{.InfraContainerID}}", pod])?;
    let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    let ip = podman(&["inspect", "--format", &format, &infra])?;
    ensure!(!ip.is_empty(), "pod {pod} has no address on {network}");
    Ok(ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_run_in_podman_kube_play_and_the_gateway_books_a_stay() -> Result<()> {
    // podman, runc and catatonit (scripts/podman.sh), and a renderer; skipped where they
    // cannot be had, except in CI.
    if script("podman.sh", &["install"])?.is_none() {
        return Ok(());
    }
    if script("kustomize.sh", &["which"])?.is_none() {
        return Ok(());
    }
    let root = repo_root();
    let id = unique();
    let image = format!("localhost/hotel-k8s-test:{id}");
    let label = format!("hotel-k8s-test={id}");
    let mut played = Played {
        id: id.clone(),
        label: label.clone(),
        network: String::new(),
        image: String::new(),
        files: Vec::new(),
        secrets: Vec::new(),
        volumes: Vec::new(),
    };
    build_image(&image)?;
    played.image = image.clone();

    let dir = TempDir::new("k8s");
    let port = free_port();
    overlay(&dir, &root.join("deploy/k8s"), &id, &image, port)?;
    let docs = render(&dir)?.context("the renderer went away")?;

    let network = format!("hotelk8s{id}");
    podman(&["network", "create", "--label", &label, &network])?;
    played.network = network.clone();

    let secret = kind(&docs, "Secret").next().context("no Secret")?;
    let secret_file = dir.join("secret.json");
    std::fs::write(&secret_file, podman_secret(secret)?)?;
    podman(&[
        "secret",
        "create",
        name(secret),
        &secret_file.to_string_lossy(),
    ])?;
    played.secrets.push(name(secret).to_owned());
    let token = str_at(secret, "/stringData/registry-token").to_owned();
    let key = str_at(secret, "/stringData/dev-api-key").to_owned();

    // Each Deployment alone, with the ConfigMaps and the claims it mounts, reachable by
    // its Service's name on the network.
    let started = Instant::now();
    let mut pods = BTreeMap::new();
    for role in ROLES {
        let mut dep = deployment(&docs, role)?.clone();
        played.volumes.extend(unshare_empty_dirs(&mut dep));
        let mut objects: Vec<&Value> = kind(&docs, "ConfigMap").collect();
        let claims = claims(&dep);
        objects.extend(
            kind(&docs, "PersistentVolumeClaim").filter(|p| claims.iter().any(|c| c == name(p))),
        );
        objects.push(&dep);
        let mut yaml = String::new();
        for o in objects {
            yaml.push_str("---\n");
            yaml.push_str(&serde_norway::to_string(o)?);
        }
        let file = dir.join(format!("{role}.yaml"));
        std::fs::write(&file, yaml)?;
        played.files.push(file.clone());
        played.volumes.extend(claims);
        let out = run(Command::new("podman").args([
            "kube",
            "play",
            "--network",
            &format!("{network}:alias={role}"),
            &file.to_string_lossy(),
        ]))?;
        ensure!(
            out.status.success(),
            "podman kube play {role} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            played.logs()
        );
        pods.insert(role, format!("{}-pod-0", name(&dep)));
    }
    eprintln!(
        "measured: 5 deployments played in {:.1?}",
        started.elapsed()
    );

    // Podman honoured the security context: user 65532, read-only root filesystem.
    for (role, pod) in &pods {
        let ctr = format!("{pod}-{role}");
        let seen = podman(&[
            "inspect",
            "--format",
            "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}",
            &ctr,
        ])?;
        ensure!(
            seen == "65532:65532 true",
            "{ctr}: user and read-only root: {seen}"
        );
    }

    // Every service registered under its pod's name (downward API) at its pod IP (the
    // advertise default), found the registry by the Service name `registry`.
    let registry = format!("http://{}:8761", pod_ip(&pods["registry"], &network)?);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()?;
    let mut expected = Vec::new();
    for role in SERVICES {
        let pod = &pods[role];
        expected.push((
            pod.clone(),
            format!("http://{}:7000", pod_ip(pod, &network)?),
        ));
    }
    let waited = until(
        Duration::from_secs(90),
        "every service registered at its pod IP",
        || {
            let (http, registry, token, expected) = (&http, &registry, &token, &expected);
            async move { exactly_registered(http, registry, token, expected).await }
        },
    )
    .await;
    if let Err(e) = waited {
        bail!("{e}\n{}", played.logs());
    }
    eprintln!(
        "measured: services registered {:.1?} after the first play",
        started.elapsed()
    );

    // The same smoke request as the compose test through the published port, then a
    // booking: the gateway routes, booking reaches customer and room by their pod IPs.
    let gateway = format!("http://127.0.0.1:{port}");
    let waited = until(
        Duration::from_secs(60),
        "the gateway routes to rooms",
        || {
            let (http, gateway, key) = (&http, &gateway, &key);
            async move {
                let res = http
                    .get(format!("{gateway}/api/rooms"))
                    .bearer_auth(key)
                    .send()
                    .await?;
                ensure!(res.status() == 200, "GET /api/rooms: {}", res.status());
                Ok(())
            }
        },
    )
    .await;
    if let Err(e) = waited {
        bail!("{e}\n{}", played.logs());
    }
    let post = |path: &'static str, body: Value| {
        let (http, gateway, key) = (&http, &gateway, &key);
        async move {
            let res = http
                .post(format!("{gateway}{path}"))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await?;
            let status = res.status();
            let body: Value = res.json().await.unwrap_or_default();
            ensure!(status == 201, "POST {path}: {status} {body}");
            anyhow::Ok(body)
        }
    };
    let room = post(
        "/api/rooms",
        json!({"number": "701", "kind": "double", "capacity": 2, "nightly_rate_cents": 12000}),
    )
    .await?;
    let customer = post(
        "/api/customers",
        json!({"name": "Kube Player", "email": format!("kube-{id}@example.com")}),
    )
    .await?;
    let booking = post(
        "/api/bookings",
        json!({
            "customer_id": customer["id"], "room_id": room["id"],
            "check_in": day(10), "check_out": day(12), "guests": 2
        }),
    )
    .await?;
    ensure!(
        booking["status"] == "confirmed" && booking["total_cents"] == 24000,
        "booking: {booking}"
    );
    eprintln!(
        "measured: booked through the gateway {:.1?} after the first play",
        started.elapsed()
    );

    // What the kubelet does after the preStop wait: SIGTERM. The service deregisters,
    // drains and exits 0, well inside its grace period, from a read-only root.
    let room_ctr = format!("{}-room", pods["room"]);
    let stopping = Instant::now();
    podman(&["stop", "--time", "15", &room_ctr])?;
    let stop_took = stopping.elapsed();
    let code = podman(&["inspect", "--format", "{{.State.ExitCode}}", &room_ctr])?;
    eprintln!(
        "measured: podman stop of the room pod's container took {stop_took:.1?}, exit code {code}"
    );
    ensure!(
        code == "0",
        "room exited {code} after SIGTERM\n{}",
        played.logs()
    );
    ensure!(
        stop_took < Duration::from_secs(10),
        "room took {stop_took:?} to stop"
    );
    until(Duration::from_secs(10), "room left the registry", || {
        let (http, registry, token) = (&http, &registry, &token);
        async move {
            let rooms = registered(http, registry, token, "room").await?;
            ensure!(rooms.is_empty(), "{rooms:?}");
            Ok(())
        }
    })
    .await?;

    // Down, and nothing of the run left.
    let left = played.tear_down();
    ensure!(left.is_empty(), "left behind: {left:?}");
    let pods_left = podman(&["pod", "ps", "-q", "--filter", &format!("label={label}")])?;
    ensure!(pods_left.is_empty(), "pods left: {pods_left}");
    ensure!(
        podman(&["network", "exists", &network]).is_err(),
        "network {network} left"
    );
    Ok(())
}
