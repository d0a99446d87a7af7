//! `parsec-operator`: run the controller, print the CRD, or render a cluster's objects offline.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client};
use parsec_operator::admin::GrpcRaftAdmin;
use parsec_operator::build::{Environment, OptionalApis};
use parsec_operator::controller::{self, Context};
use parsec_operator::metrics::Metrics;
use parsec_operator::telemetry::{self, HttpState};
use parsec_operator::{crd, discovery, render};

#[derive(Parser)]
#[command(
    name = "parsec-operator",
    version,
    about = "Kubernetes operator for Parsec clusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (the default).
    Run(RunArgs),
    /// Print the ParsecCluster CustomResourceDefinition as YAML.
    Crd,
    /// Print every object the operator creates for a ParsecCluster manifest, without a cluster.
    Render {
        /// A ParsecCluster manifest (YAML).
        #[arg(long, short)]
        file: PathBuf,
        /// Namespace to assume when the manifest names none.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Assume the Prometheus Operator's CRDs are installed.
        #[arg(long)]
        with_prometheus_operator: bool,
        /// Assume cert-manager's CRDs are installed.
        #[arg(long)]
        with_cert_manager: bool,
        /// The namespace the operator runs in (admitted by the NetworkPolicies).
        #[arg(long, default_value = "parsec-system")]
        operator_namespace: String,
    },
}

#[derive(clap::Args, Default)]
struct RunArgs {
    /// Where to serve /healthz, /readyz and /metrics.
    #[arg(long, env = "PARSEC_OPERATOR_HTTP", default_value = "0.0.0.0:8080")]
    http: Option<SocketAddr>,
    #[arg(long, env = "PARSEC_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Default, ValueEnum)]
enum LogFormat {
    #[default]
    Json,
    Text,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Crd) => crd::crd_yaml()
            .map(|yaml| print!("{yaml}"))
            .map_err(|e| e.to_string()),
        Some(Command::Render {
            file,
            namespace,
            with_prometheus_operator,
            with_cert_manager,
            operator_namespace,
        }) => {
            let env = Environment {
                apis: OptionalApis {
                    service_monitor: with_prometheus_operator,
                    prometheus_rule: with_prometheus_operator,
                    certificate: with_cert_manager,
                },
                operator_namespace: Some(operator_namespace),
            };
            render_file(&file, &namespace, &env)
        }
        Some(Command::Run(args)) => run(args),
        None => run(RunArgs {
            http: Some(SocketAddr::from(([0, 0, 0, 0], 8080))),
            log_format: LogFormat::Json,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn render_file(file: &PathBuf, namespace: &str, env: &Environment) -> Result<(), String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let cluster = render::parse_cluster(&text, namespace).map_err(|e| e.to_string())?;
    let objects = render::render(&cluster, env).map_err(|e| e.to_string())?;
    print!(
        "{}",
        render::to_yaml_stream(&objects).map_err(|e| e.to_string())?
    );
    Ok(())
}

fn run(args: RunArgs) -> Result<(), String> {
    telemetry::init_logging(matches!(args.log_format, LogFormat::Json));
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?
        .block_on(run_async(args))
}

async fn run_async(args: RunArgs) -> Result<(), String> {
    let client = Client::try_default()
        .await
        .map_err(|e| format!("cannot reach the Kubernetes API: {e}"))?;
    let metrics = Arc::new(Metrics::new().map_err(|e| format!("metrics: {e}"))?);
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http = args.http.map(|address| {
        let state = HttpState {
            metrics: metrics.clone(),
            ready: ready.clone(),
        };
        tokio::spawn(telemetry::serve(address, state, async move {
            let _ = http_stopped.await;
        }))
    });

    tracing::info!("waiting for the ParsecCluster CRD to be established");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    tokio::time::timeout(
        Duration::from_secs(120),
        await_condition(
            crds,
            "parsecclusters.parsec.dev",
            conditions::is_crd_established(),
        ),
    )
    .await
    .map_err(|_| {
        "the ParsecCluster CRD is not established after 2 minutes (is it installed?)".to_string()
    })?
    .map_err(|e| format!("cannot watch the CRD: {e}"))?;

    let apis = discovery::optional_apis(&client).await;
    // The downward API tells the operator where it runs (the NetworkPolicies admit its pods to
    // the members' admin API); without it, its pods are admitted from any namespace.
    let operator_namespace = std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|ns| !ns.is_empty());
    tracing::info!(
        service_monitor = apis.service_monitor,
        prometheus_rule = apis.prometheus_rule,
        certificate = apis.certificate,
        operator_namespace = operator_namespace.as_deref().unwrap_or("unknown"),
        "optional APIs discovered"
    );
    let ctx = Arc::new(Context::new(
        client,
        Arc::new(GrpcRaftAdmin::default()),
        metrics,
        Environment {
            apis,
            operator_namespace,
        },
    ));
    ready.store(true, Ordering::Relaxed);
    controller::run(ctx).await;
    tracing::info!("controller stopped; shutting down");
    let _ = stop_http.send(());
    if let Some(http) = http {
        match http.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("HTTP server failed: {e}")),
            Err(e) => return Err(format!("HTTP server task failed: {e}")),
        }
    }
    Ok(())
}
