//! `fledge migrate`: converts Canaries from one router to another.
//!
//! `appmesh-to-gateway-api` reads App Mesh Canaries (files or a cluster),
//! prints the converted objects on stdout for `kubectl apply -f -`, and on
//! stderr what could not be converted, field by field.
use anyhow::Context;
use clap::builder::TypedValueParser;
use fledge::api::{GROUP, VERSION};
use fledge::migrate::{self, GatewayKind, GatewayRef, Input, Options};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum Command {
    /// App Mesh Canaries to the Gateway API router (provider gatewayapi:v1):
    /// the Canaries, the MetricTemplates their checks now need, and load
    /// tests through the gateway, on stdout; what was not converted on stderr.
    AppmeshToGatewayApi(Args),
}

#[derive(clap::Args)]
pub struct Args {
    /// YAML with Canaries and the MetricTemplates they refer to
    /// (multi-document, or `kubectl get -o yaml` Lists); `-` is stdin;
    /// repeatable. Without it, the Canaries are read from the cluster.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The kubeconfig for reading the cluster (default: KUBECONFIG, then in-cluster).
    #[arg(long, conflicts_with = "files")]
    kubeconfig: Option<PathBuf>,
    /// The namespace whose Canaries are read from the cluster.
    #[arg(short = 'n', long, conflicts_with_all = ["files", "all_namespaces"])]
    namespace: Option<String>,
    /// Reads the Canaries of every namespace.
    #[arg(short = 'A', long, conflicts_with = "files")]
    all_namespaces: bool,
    /// The Gateway the HTTPRoutes attach to, NAMESPACE/NAME[/SECTION]; repeatable.
    #[arg(
        long = "gateway",
        value_name = "NAMESPACE/NAME[/SECTION]",
        required = true
    )]
    gateways: Vec<GatewayRef>,
    /// A hostname of the routes (spec.service.hosts); repeatable. Default:
    /// each Canary's own hosts, else `<service>.<namespace>` (reported).
    #[arg(long = "host", value_name = "HOSTNAME")]
    hosts: Vec<String>,
    /// The gateway implementation: which MetricTemplates the builtin checks become.
    #[arg(long, value_name = "KIND", default_value = "envoy-gateway",
          value_parser = clap::builder::PossibleValuesParser::new(GatewayKind::NAMES)
              .map(|s| s.parse::<GatewayKind>().expect("a listed kind")))]
    gateway_kind: GatewayKind,
    /// Where load tests reach the gateway, e.g. http://gateway.gateway-system.
    /// Without it, load tests that call the Canary's Services are reported.
    #[arg(long, value_name = "URL")]
    gateway_address: Option<String>,
    /// The namespace of the new MetricTemplates (default: each Canary's).
    #[arg(long, value_name = "NAMESPACE")]
    metrics_namespace: Option<String>,
    /// The AWS region of the VPC Lattice metrics (required with vpc-lattice).
    #[arg(long)]
    region: Option<String>,
}

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    let Command::AppmeshToGatewayApi(args) = cmd;
    let opts = Options {
        gateways: args.gateways.clone(),
        hosts: args.hosts.clone(),
        kind: args.gateway_kind,
        gateway_address: args.gateway_address.clone(),
        metrics_namespace: args.metrics_namespace.clone(),
        region: args.region.clone(),
    };
    let migration = if args.files.is_empty() {
        let input = read_cluster(&args)?;
        migrate::migrate(&input, &opts)?
    } else {
        migrate::migrate_files(&args.files, &opts)?
    };
    print!("{}", migration.to_yaml());
    eprint!("{}", migration.report());
    Ok(ExitCode::SUCCESS)
}

fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, VERSION, kind))
}

/// The Canaries of one namespace (or all), and the MetricTemplates they refer to.
fn read_cluster(args: &Args) -> anyhow::Result<Input> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        let config = match &args.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("reading --kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .with_context(|| format!("loading --kubeconfig {}", path.display()))?
            }
            None => kube::Config::infer().await.context(
                "no Kubernetes configuration: pass --kubeconfig, set KUBECONFIG, or give -f FILE",
            )?,
        };
        let default_ns = config.default_namespace.clone();
        let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
        let canaries: Api<DynamicObject> = if args.all_namespaces {
            Api::all_with(client.clone(), &resource("Canary"))
        } else {
            let ns = args.namespace.clone().unwrap_or(default_ns);
            Api::namespaced_with(client.clone(), &ns, &resource("Canary"))
        };
        let list = canaries
            .list(&ListParams::default())
            .await
            .context("listing Canaries")?;
        let mut input = Input::default();
        let mut refs = BTreeSet::new();
        for mut c in list.items {
            c.types = Some(kube::api::TypeMeta {
                api_version: format!("{GROUP}/{VERSION}"),
                kind: "Canary".into(),
            });
            let ns = c.metadata.namespace.clone().unwrap_or_default();
            let name = c.metadata.name.clone().unwrap_or_default();
            for m in c.data["spec"]["analysis"]["metrics"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(t) = m["templateRef"]["name"].as_str() {
                    let t_ns = m["templateRef"]["namespace"].as_str().unwrap_or(&ns);
                    refs.insert((t_ns.to_string(), t.to_string()));
                }
            }
            let doc = serde_json::to_value(&c).context("a Canary as JSON")?;
            input.add_object(doc, &format!("Canary {ns}/{name}"))?;
        }
        for (ns, name) in refs {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &ns, &resource("MetricTemplate"));
            // A missing template is the Canary's problem today too: not inspected.
            if let Some(mut t) = api
                .get_opt(&name)
                .await
                .with_context(|| format!("reading MetricTemplate {ns}/{name}"))?
            {
                t.types = Some(kube::api::TypeMeta {
                    api_version: format!("{GROUP}/{VERSION}"),
                    kind: "MetricTemplate".into(),
                });
                let doc = serde_json::to_value(&t).context("a MetricTemplate as JSON")?;
                input.add_object(doc, &format!("MetricTemplate {ns}/{name}"))?;
            }
        }
        Ok(input)
    })
}
