//! `collection-operator`: one binary, one subcommand per role.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use collection_operator::coordinator::{
    self, AuthArgs, AuthConfig, CoordinatorConfig, EngineConfig, MetaStoreArgs, TlsArgs,
};

#[derive(Parser)]
#[command(
    name = "collection-operator",
    version,
    about = "Declarative Milvus-style collection aliases"
)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        value_enum,
        default_value = "text",
        global = true,
        env = "LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Milvus-compatible coordinator (metadata only) on the embedded redb store
    /// (default) or on etcd.
    Coordinator {
        /// Directory of the meta store (redb).
        #[arg(long, default_value = "data", env = "COORDINATOR_DATA_DIR")]
        data_dir: PathBuf,
        /// gRPC address; pods pass 0.0.0.0:19530.
        #[arg(long, default_value = "127.0.0.1:19530", env = "COORDINATOR_LISTEN")]
        listen: SocketAddr,
        /// How long reads with a timestamp are answered exactly (seconds).
        #[arg(long, default_value_t = 3600)]
        history_retention_secs: u64,
        /// How often old history is compacted (seconds).
        #[arg(long, default_value_t = 60)]
        compaction_interval_secs: u64,
        #[command(flatten)]
        meta_store: MetaStoreArgs,
        #[command(flatten)]
        auth: AuthArgs,
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// Print the CustomResourceDefinitions (the source of `crds/`).
    Crds,
    /// Run the Kubernetes controllers for Collection, CollectionAlias and Coordinator.
    Operator(collection_operator::operator::OperatorArgs),
    /// Run everything on one machine: the embedded coordinator, reconciling the manifests
    /// of a folder and re-applying when files change.
    Up(collection_operator::up::UpArgs),
    /// Print the actions a reconcile of the manifests would take. Exit code 0: in sync;
    /// 2: changes; 1: error (like `terraform plan -detailed-exitcode`).
    Plan(collection_operator::up::PlanArgs),
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Command::Coordinator {
            data_dir,
            listen,
            history_retention_secs,
            compaction_interval_secs,
            meta_store,
            auth,
            tls,
        } => {
            let engine = EngineConfig {
                history_retention: Duration::from_secs(history_retention_secs),
                compaction_interval: Duration::from_secs(compaction_interval_secs.max(1)),
                ..EngineConfig::default()
            };
            coordinator::run(CoordinatorConfig {
                data_dir,
                meta_store,
                listen,
                engine,
                auth: AuthConfig::from_env(&auth)?,
                tls: tls.files(),
            })
            .await
        }
        Command::Crds => {
            print!("{}", collection_operator::crd::to_yaml()?);
            Ok(())
        }
        Command::Operator(args) => collection_operator::operator::run(args).await,
        Command::Up(args) => collection_operator::up::run_up(args).await,
        Command::Plan(args) => match collection_operator::up::run_plan(args).await {
            Ok(false) => Ok(()),
            Ok(true) => std::process::exit(2),
            Err(error) => {
                eprintln!("error: {error:#}");
                std::process::exit(1)
            }
        },
    }
}
