//! The install manifests of `deploy/` on the shared cluster: the Helm chart (watching one
//! namespace, a Role) and the kustomize base (cluster-wide, a ClusterRole), each rendered,
//! applied into its own namespace, and then used by a local `fledge operator` that
//! authenticates as the ServiceAccount the rendered Deployment runs as (a TokenRequest token).
//! The guide's promotion and rollback under that identity show the RBAC is enough; `can-i`
//! for verbs Fledge does not use shows it grants no more. The rendered Deployment itself only
//! gets kwok's pretend pods.
//!
//! ClusterRoles carry the namespace in their names (chart release name, kustomize nameSuffix), so
//! the installs do not collide; the chart's shipped ClusterRolloutPolicies keep their names (each
//! install applies the same objects), kustomize's get the suffix.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use fledge_e2e::cluster::{cache_dir, crate_dir, create_namespace, read_manifest};
use fledge_e2e::Cluster;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::{json, Value};

use super::{
    apply, canary_status, fledge_binary, free_port, image_of, install_fledge_crds, live_weights,
    manifest, replicas_of, set_image, ssa, test_canary, wait_phase, world, Operator, Receiver,
};

const VERSIONS_ENV: &str = include_str!("../../cluster/versions.env");

fn repo() -> PathBuf {
    crate_dir().join("..")
}

/// Helm from the cache `tests/cluster/build-helm.sh` fills (run here when it is missing).
fn helm() -> Result<PathBuf> {
    let version = VERSIONS_ENV
        .lines()
        .find_map(|l| l.trim().strip_prefix("HELM_VERSION="))
        .context("tests/cluster/versions.env lacks HELM_VERSION")?;
    let bin = cache_dir().join(format!("helm-{version}")).join("bin/helm");
    if !bin.exists() {
        let script = crate_dir().join("cluster/build-helm.sh");
        let status = Command::new(&script)
            .status()
            .with_context(|| format!("running {}", script.display()))?;
        ensure!(status.success(), "{} failed ({status})", script.display());
    }
    Ok(bin)
}

/// Runs `cmd` off the async threads; its stdout, or an error with its stderr.
async fn output(mut cmd: Command) -> Result<String> {
    let what = format!("{cmd:?}");
    let out = tokio::task::spawn_blocking(move || cmd.stdin(Stdio::null()).output())
        .await?
        .with_context(|| format!("starting {what}"))?;
    ensure!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Via {
    /// `helm template` of deploy/charts/fledge with `namespace=<ns>` (a Role).
    Chart,
    /// `kubectl kustomize` of deploy/kustomize/base with the namespace and a nameSuffix.
    Kustomize,
}

/// An applied install: where, and the names its objects got.
struct Install {
    ns: String,
    service_account: String,
    /// The shipped ClusterRolloutPolicy `flagger`, as named by this install.
    policy: String,
}

/// Renders the install into `ns`.
async fn render(cluster: &Cluster, via: Via, ns: &str) -> Result<String> {
    match via {
        Via::Chart => {
            let mut cmd = Command::new(helm()?);
            cmd.arg("template")
                .arg(format!("fledge-{ns}"))
                .arg(repo().join("deploy/charts/fledge"))
                .args(["--namespace", ns])
                .arg(format!("--set=namespace={ns}"));
            output(cmd).await
        }
        Via::Kustomize => {
            // kustomize takes only relative paths to other kustomizations.
            let dir = cluster.dir().join(format!("kustomize-{ns}"));
            std::fs::create_dir_all(&dir)?;
            let dir = dir.canonicalize()?;
            let base = repo().join("deploy/kustomize/base").canonicalize()?;
            let up = "../".repeat(dir.components().count() - 1);
            let relative = format!("{up}{}", base.strip_prefix("/")?.display());
            std::fs::write(
                dir.join("kustomization.yaml"),
                format!(
                    "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
                     namespace: {ns}\nnameSuffix: -{ns}\nresources:\n  - {relative}\n"
                ),
            )?;
            let mut cmd = cluster.kubectl();
            cmd.arg("kustomize").arg(&dir);
            output(cmd).await
        }
    }
}

/// Renders and applies the install into `ns` (created first, in the mesh) with kubectl.
async fn install(cluster: &'static Cluster, via: Via, ns: &str) -> Result<Install> {
    let client = cluster.client().await?;
    install_fledge_crds(cluster, &client).await?;
    create_namespace(
        &client,
        ns,
        &[("appmesh.k8s.aws/sidecarInjectorWebhook", "enabled")],
    )
    .await?;
    let rendered = render(cluster, via, ns).await?;
    let file = cluster.dir().join(format!("install-{ns}.yaml"));
    std::fs::write(&file, &rendered)?;
    let objects = read_manifest(&file)?;
    let named = |kind: &str| -> Result<String> {
        let found: Vec<&str> = objects
            .iter()
            .filter(|o| o["kind"] == kind)
            .filter_map(|o| o["metadata"]["name"].as_str())
            .collect();
        match found.as_slice() {
            [one] => Ok(one.to_string()),
            _ => bail!("{via:?} renders {} {kind}s: {found:?}", found.len()),
        }
    };
    let deployment = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .context("no Deployment rendered")?;
    let service_account = named("ServiceAccount")?;
    assert_eq!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"], service_account,
        "{via:?}: the operator runs as the rendered ServiceAccount"
    );
    let image = deployment["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    assert_eq!(
        image,
        format!("ghcr.io/fledge-dev/fledge:{}", env!("CARGO_PKG_VERSION")),
        "{via:?}: the image tag is the workspace version"
    );
    let mut cmd = cluster.kubectl();
    cmd.args(["apply", "--server-side", "--force-conflicts", "-f"])
        .arg(&file);
    output(cmd).await.context("kubectl apply")?;
    Ok(Install {
        ns: ns.to_string(),
        service_account,
        policy: flagger_policy(&objects).with_context(|| format!("{via:?}"))?,
    })
}

/// The shipped ClusterRolloutPolicy of the built-in `flagger` among the rendered objects (the
/// install ships one per built-in policy).
fn flagger_policy(objects: &[Value]) -> Result<String> {
    let found: Vec<&str> = objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRolloutPolicy" && o["spec"]["builtin"] == "flagger")
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    match found.as_slice() {
        [one] => Ok(one.to_string()),
        _ => bail!(
            "renders {} ClusterRolloutPolicies of builtin flagger: {found:?}",
            found.len()
        ),
    }
}

/// A kubeconfig that authenticates as the install's ServiceAccount with a TokenRequest token.
async fn service_account_kubeconfig(cluster: &Cluster, i: &Install) -> Result<PathBuf> {
    let mut cmd = cluster.kubectl();
    cmd.args(["create", "token", &i.service_account, "-n", &i.ns])
        .arg("--duration=1h");
    let token = output(cmd).await?.trim().to_string();
    ensure!(token.split('.').count() == 3, "not a JWT: {token}");
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {
            "server": cluster.api_server(),
            "certificate-authority": cluster.dir().join("pki/ca.crt"),
        }}],
        "users": [{"name": i.service_account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "test", "user": i.service_account}}],
        "current-context": "sa",
    });
    let path = cluster.dir().join(format!("kubeconfig-{}", i.ns));
    std::fs::write(&path, serde_json::to_string_pretty(&kubeconfig)?)?;
    // Who the API server takes us for.
    let mut whoami = Command::new(&cluster.binaries().kubectl);
    whoami.env("KUBECONFIG", &path).args([
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(
        output(whoami).await?,
        format!("system:serviceaccount:{}:{}", i.ns, i.service_account)
    );
    Ok(path)
}

/// `fledge operator` on `kubeconfig`, watching the install's namespace, with leader election
/// in it (as in the cluster, so the Lease rules are exercised).
fn start_operator(cluster: &Cluster, i: &Install, kubeconfig: &Path) -> Result<Operator> {
    let prom = cluster
        .prometheus()
        .context("the cluster has no Prometheus")?;
    let port = free_port()?;
    let log = cluster
        .dir()
        .join("logs")
        .join(format!("fledge-{}.log", i.ns));
    let out = std::fs::File::create(&log)?;
    let child = Command::new(fledge_binary()?)
        .arg("operator")
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--metrics-server=http://{prom}"))
        .arg(format!("--listen-address=127.0.0.1:{port}"))
        .arg(format!("--namespace={}", i.ns))
        .arg("--leader-election=true")
        .arg(format!("--leader-election-namespace={}", i.ns))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("starting fledge operator")?;
    Ok(Operator { child, log, port })
}

/// The guide's promotion of 6.0.1 and then the rollback of 6.0.2 (half of its requests fail),
/// by an operator holding only the install's RBAC.
async fn promote_and_roll_back(cluster: &'static Cluster, via: Via, ns: &str) -> Result<()> {
    let started = Instant::now();
    let client = cluster.client().await?;
    let i = install(cluster, via, ns).await?;
    for file in [
        "manifests/podinfo-deployment.yaml",
        "manifests/podinfo-hpa.yaml",
    ] {
        for doc in manifest(file) {
            apply(&client, ns, &doc, &ssa()).await?;
        }
    }
    let kubeconfig = service_account_kubeconfig(cluster, &i).await?;
    let operator = start_operator(cluster, &i, &kubeconfig)?;
    let logs = || format!("operator log:\n{}", operator.logs());
    let hooks = Receiver::start().await?;
    let mut canary = test_canary(ns, &hooks);
    // The shipped ClusterRolloutPolicy decides.
    canary["spec"]["policy"] = json!({"kind": "ClusterRolloutPolicy", "name": i.policy});
    apply(&client, ns, &canary, &ssa()).await?;
    wait_phase(&client, ns, "Initialized", Duration::from_secs(90))
        .await
        .with_context(logs)?;

    set_image(&client, ns, "ghcr.io/stefanprodan/podinfo:6.0.1").await?;
    let promoted = wait_phase(&client, ns, "Succeeded", Duration::from_secs(150))
        .await
        .with_context(logs)?;
    println!(
        "{ns} ({via:?}): promoted {:.1}s after the install started",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        (
            promoted["policy"]["kind"].as_str(),
            promoted["policy"]["name"].as_str()
        ),
        (Some("ClusterRolloutPolicy"), Some(i.policy.as_str())),
        "{promoted}"
    );
    assert_eq!(
        image_of(&client, ns, "podinfo-primary").await?,
        "ghcr.io/stefanprodan/podinfo:6.0.1"
    );
    // The operator led through the install's Lease rules.
    let lease = Api::<Lease>::namespaced(client.clone(), ns)
        .get("fledge-leader-election")
        .await
        .context("the leader election Lease")?;
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert!(!holder.is_empty(), "the Lease has no holder");

    crate::configure_sim(cluster, |config| {
        config.backends.insert(
            format!("{ns}/podinfo-canary"),
            fledge_e2e::mesh::Behaviour {
                error_ratio: 0.5,
                ..Default::default()
            },
        );
        Ok(())
    })?;
    set_image(&client, ns, "ghcr.io/stefanprodan/podinfo:6.0.2").await?;
    wait_phase(&client, ns, "Failed", Duration::from_secs(150))
        .await
        .with_context(logs)?;
    println!(
        "{ns} ({via:?}): rolled back {:.1}s after the install started",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        image_of(&client, ns, "podinfo-primary").await?,
        "ghcr.io/stefanprodan/podinfo:6.0.1",
        "the primary keeps the promoted revision"
    );
    assert_eq!(replicas_of(&client, ns, "podinfo").await?, 0, "canary at 0");
    assert_eq!(live_weights(&client, ns).await?, (0, 100));
    let status = canary_status(&client, ns).await?;
    assert_eq!(status["canaryWeight"], 0, "{status}");
    // Nothing the operator asked for was refused.
    let log = operator.logs();
    assert!(
        !log.contains("forbidden"),
        "the operator was refused something:\n{log}"
    );
    Ok(())
}

/// Both installs, concurrently: the guide's promotion and rollback as the installed
/// ServiceAccount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_rbac_is_enough_to_promote_and_roll_back() -> Result<()> {
    let Some(cluster) = world("installed_rbac_is_enough_to_promote_and_roll_back") else {
        return Ok(());
    };
    let started = Instant::now();
    let (chart, kustomize) = tokio::join!(
        promote_and_roll_back(cluster, Via::Chart, "install-chart"),
        promote_and_roll_back(cluster, Via::Kustomize, "install-kustomize"),
    );
    chart.context("Helm chart")?;
    kustomize.context("kustomize base")?;
    println!(
        "install promotion and rollback: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `kubectl auth can-i ARGS` for the install's ServiceAccount, in `ns` (None: cluster-scoped).
async fn can_i(cluster: &Cluster, i: &Install, args: &[&str], ns: Option<&str>) -> Result<bool> {
    let mut cmd = cluster.kubectl();
    cmd.args(["auth", "can-i"]).args(args).arg(format!(
        "--as=system:serviceaccount:{}:{}",
        i.ns, i.service_account
    ));
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    let what = format!("{cmd:?}");
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => bail!("{what}: {other} {}", String::from_utf8_lossy(&out.stderr)),
    }
}

/// What the install grants and refuses, asked of the API server's authorizer.
async fn grants(cluster: &'static Cluster, via: Via, ns: &str) -> Result<()> {
    let i = install(cluster, via, ns).await?;
    let own = Some(ns);
    let lease = "leases.coordination.k8s.io/fledge-leader-election";
    // (what, namespace, allowed)
    let mut cases: Vec<(Vec<&str>, Option<&str>, bool)> = vec![
        // Used by the operator.
        (vec!["watch", "canaries.flagger.app"], own, true),
        (
            vec!["patch", "canaries.flagger.app", "--subresource=status"],
            own,
            true,
        ),
        (vec!["patch", "deployments.apps"], own, true),
        (
            vec!["patch", "horizontalpodautoscalers.autoscaling"],
            own,
            true,
        ),
        (vec!["patch", "virtualrouters.appmesh.k8s.aws"], own, true),
        (
            vec!["patch", "httproutes.gateway.networking.k8s.io"],
            own,
            true,
        ),
        (
            vec!["watch", "httproutes.gateway.networking.k8s.io"],
            own,
            true,
        ),
        (vec!["create", "events.events.k8s.io"], own, true),
        (vec!["get", "secrets"], own, true),
        // Server-side apply of an object that does not exist yet is a create.
        (vec!["create", "deployments.apps"], own, true),
        (vec!["create", "virtualnodes.appmesh.k8s.aws"], own, true),
        // A router switch deletes the App Mesh objects and looks for envoy sidecars.
        (vec!["delete", "virtualrouters.appmesh.k8s.aws"], own, true),
        (vec!["list", "pods"], own, true),
        (
            vec!["patch", "httproutes.gateway.networking.k8s.io"],
            own,
            true,
        ),
        (vec!["get", "metrictemplates.flagger.app"], own, true),
        (
            vec!["watch", "clusterrolloutpolicies.policies.fledge.dev"],
            None,
            true,
        ),
        (vec!["create", "leases.coordination.k8s.io"], own, true),
        (vec!["patch", lease], own, true),
        // Not used: refused.
        (vec!["delete", "secrets"], own, false),
        (vec!["update", "secrets"], own, false),
        (vec!["delete", "deployments.apps"], own, false),
        (vec!["delete", "canaries.flagger.app"], own, false),
        (vec!["update", "canaries.flagger.app"], own, false),
        (vec!["create", "metrictemplates.flagger.app"], own, false),
        (vec!["delete", "pods"], own, false),
        (vec!["create", "events"], own, false),
        (vec!["patch", "nodes"], None, false),
        (vec!["create", "namespaces"], None, false),
        (
            vec!["create", "clusterroles.rbac.authorization.k8s.io"],
            None,
            false,
        ),
        (
            vec!["create", "rolebindings.rbac.authorization.k8s.io"],
            own,
            false,
        ),
        (
            vec!["create", "serviceaccounts", "--subresource=token"],
            own,
            false,
        ),
        (vec!["impersonate", "users"], None, false),
        (
            vec!["delete", "clusterrolloutpolicies.policies.fledge.dev"],
            None,
            false,
        ),
        (
            vec!["patch", "clusterrolloutpolicies.policies.fledge.dev"],
            None,
            false,
        ),
        (
            vec!["patch", "leases.coordination.k8s.io/other"],
            own,
            false,
        ),
        (vec!["patch", lease], Some("kube-system"), false),
        (vec!["delete", lease], own, false),
    ];
    // Beyond its own namespace only a cluster-wide install reaches.
    let cluster_wide = via == Via::Kustomize;
    cases.push((
        vec!["patch", "deployments.apps"],
        Some("default"),
        cluster_wide,
    ));
    cases.push((vec!["get", "secrets"], Some("kube-system"), cluster_wide));
    cases.push((
        vec!["list", "canaries.flagger.app"],
        Some("default"),
        cluster_wide,
    ));
    let mut wrong = Vec::new();
    for (args, ns, allowed) in &cases {
        let got = can_i(cluster, &i, args, *ns).await?;
        if got != *allowed {
            wrong.push(format!(
                "{} in {}: {} (expected {})",
                args.join(" "),
                ns.unwrap_or("the cluster"),
                if got { "allowed" } else { "denied" },
                if *allowed { "allowed" } else { "denied" }
            ));
        }
    }
    ensure!(wrong.is_empty(), "{via:?}:\n{}", wrong.join("\n"));
    Ok(())
}

/// The installs' ServiceAccounts may do what Fledge does and nothing Fledge does not need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_rbac_refuses_what_fledge_does_not_use() -> Result<()> {
    let Some(cluster) = world("installed_rbac_refuses_what_fledge_does_not_use") else {
        return Ok(());
    };
    let started = Instant::now();
    let (chart, kustomize) = tokio::join!(
        grants(cluster, Via::Chart, "install-grants-chart"),
        grants(cluster, Via::Kustomize, "install-grants-kustomize"),
    );
    chart.context("Helm chart")?;
    kustomize.context("kustomize base")?;
    println!("install grants: {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// `helm lint --strict` passes for both charts.
#[test]
fn helm_charts_lint() -> Result<()> {
    let helm = helm()?;
    for chart in ["fledge", "loadtester"] {
        let out = Command::new(&helm)
            .args(["lint", "--strict"])
            .arg(repo().join("deploy/charts").join(chart))
            .output()?;
        ensure!(
            out.status.success(),
            "helm lint {chart}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The single-namespace overlay grants, as a Role, exactly the base's ClusterRole `fledge`,
/// binds no ClusterRole but `fledge-cluster-policies`, and makes the operator watch its own
/// namespace.
#[tokio::test]
async fn namespace_overlay_keeps_the_cluster_rules_in_one_namespace() -> Result<()> {
    let Some(cluster) = world("namespace_overlay_keeps_the_cluster_rules_in_one_namespace") else {
        return Ok(());
    };
    let render = |dir: &str| {
        let mut cmd = cluster.kubectl();
        cmd.arg("kustomize").arg(repo().join(dir));
        output(cmd)
    };
    let (base, namespaced) = tokio::join!(
        render("deploy/kustomize/base"),
        render("deploy/kustomize/namespace")
    );
    let parse = |name: &str, text: String| -> Result<Vec<Value>> {
        let file = cluster.dir().join(format!("render-{name}.yaml"));
        std::fs::write(&file, text)?;
        read_manifest(&file)
    };
    let base = parse("base", base?)?;
    let namespaced = parse("namespace", namespaced?)?;
    let find = |docs: &[Value], kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .cloned()
    };
    let cluster_role = find(&base, "ClusterRole", "fledge").context("base ClusterRole fledge")?;
    let role = find(&namespaced, "Role", "fledge").context("overlay Role fledge")?;
    assert_eq!(role["rules"], cluster_role["rules"]);
    let bindings: Vec<&str> = namespaced
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding")
        .filter_map(|d| d["roleRef"]["name"].as_str())
        .collect();
    assert_eq!(bindings, ["fledge-cluster-policies"]);
    let deployment = find(&namespaced, "Deployment", "fledge").context("overlay Deployment")?;
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .is_some_and(|e| e.iter().any(|v| v["name"] == "FLEDGE_NAMESPACE"
                && v["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace")),
        "{env}"
    );
    Ok(())
}

/// The guide's load tester values give a VirtualNode with those backends and a Service at
/// the guide's webhook URL, running `fledge loadtester`.
#[tokio::test]
async fn loadtester_chart_takes_the_guides_values() -> Result<()> {
    let Some(cluster) = world("loadtester_chart_takes_the_guides_values") else {
        return Ok(());
    };
    let mut cmd = Command::new(helm()?);
    cmd.args(["template", "flagger-loadtester"])
        .arg(repo().join("deploy/charts/loadtester"))
        .args(["--namespace=test", "--set", "appmesh.enabled=true"])
        .args(["--set", "appmesh.backends[0]=podinfo"])
        .args(["--set", "appmesh.backends[1]=podinfo-canary"]);
    let file = cluster.dir().join("render-loadtester.yaml");
    std::fs::write(&file, output(cmd).await?)?;
    let docs = read_manifest(&file)?;
    let of = |kind: &str| docs.iter().find(|d| d["kind"] == kind).cloned();
    let node = of("VirtualNode").context("no VirtualNode")?;
    assert_eq!(node["apiVersion"], "appmesh.k8s.aws/v1beta2");
    assert_eq!(
        node["spec"]["backends"],
        json!([{"virtualService": {"virtualServiceRef": {"name": "podinfo"}}},
               {"virtualService": {"virtualServiceRef": {"name": "podinfo-canary"}}}])
    );
    let deployment = of("Deployment").context("no Deployment")?;
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let selector = node["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .context("podSelector")?;
    ensure!(!selector.is_empty(), "the VirtualNode selects every pod");
    for (k, v) in selector {
        assert_eq!(
            &labels[k], v,
            "the VirtualNode selects the load tester's pods"
        );
    }
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["image"],
        format!(
            "ghcr.io/fledge-dev/fledge-loadtester:{}",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert_eq!(container["args"][0], "loadtester");
    let service = of("Service").context("no Service")?;
    assert_eq!(
        (
            &service["metadata"]["name"],
            &service["spec"]["ports"][0]["port"]
        ),
        (&json!("flagger-loadtester"), &json!(80)),
        "http://flagger-loadtester.test/"
    );
    Ok(())
}
