//! `collection-operator`: one binary, one subcommand per role.

use std::io::IsTerminal;
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
        /// Most DDL log records (and versions of history) kept, however recent: bounds
        /// memory, the store and restart or takeover time on a busy cluster.
        #[arg(long, default_value_t = coordinator::engine::DEFAULT_HISTORY_MAX_ENTRIES)]
        history_max_entries: usize,
        /// Most MiB of DDL log records kept (large collection records weigh more).
        #[arg(long, default_value_t = coordinator::engine::DEFAULT_HISTORY_MAX_BYTES >> 20)]
        history_max_mib: u64,
        #[command(flatten)]
        meta_store: MetaStoreArgs,
        #[command(flatten)]
        auth: AuthArgs,
        #[command(flatten)]
        tls: TlsArgs,
        /// Credentials of the WAL plane, one per line: the coordinator presents the first
        /// to its streaming nodes (their --auth-token-file must accept it) and accepts only
        /// these on its streaming endpoints (node sessions, assignment). Default: the
        /// client credentials (--auth-token-file / COORDINATOR_AUTH_TOKENS); with neither,
        /// the WAL plane is open.
        #[arg(long, env = "COORDINATOR_INTERNAL_TOKEN_FILE", value_name = "PATH")]
        internal_token_file: Option<PathBuf>,
        #[command(flatten)]
        streaming: collection_operator::streaming::coord::StreamingArgs,
        #[command(flatten)]
        connections: coordinator::ConnectionArgs,
    },
    /// Run a streaming node: holds the WAL pchannels the coordinator assigns to it.
    StreamingNode {
        /// The coordinator's gRPC URL.
        #[arg(
            long,
            default_value = "http://127.0.0.1:19530",
            env = "STREAMING_COORDINATOR"
        )]
        coordinator: String,
        /// Directory of the WAL segments; shared (ReadWriteMany) between nodes so that a
        /// moved pchannel continues its log.
        #[arg(long, default_value = "wal", env = "STREAMING_WAL_DIR")]
        wal_dir: PathBuf,
        /// gRPC address; pods pass 0.0.0.0:22222.
        #[arg(long, default_value = "127.0.0.1:22222", env = "STREAMING_LISTEN")]
        listen: SocketAddr,
        /// host:port the coordinator and clients reach this node at (default: the bound
        /// listen address; pods pass their stable DNS name).
        #[arg(long, env = "STREAMING_ADVERTISE")]
        advertise: Option<String>,
        /// A WAL segment rolls over at this size (MiB).
        #[arg(long, default_value_t = 64)]
        segment_mib: u64,
        /// Require credentials on this node's port, one per line (the file the
        /// coordinator's --internal-token-file, or else its --auth-token-file, names): every
        /// call must carry one, and the node presents the first to the coordinator. The
        /// file is re-read when it changes. Without it the node's port is open.
        #[arg(long, env = "STREAMING_AUTH_TOKEN_FILE", value_name = "PATH")]
        auth_token_file: Option<PathBuf>,
    },
    /// Print the CustomResourceDefinitions (the source of `crds/`).
    Crds,
    /// Run the Kubernetes controllers for Collection, CollectionAlias, RoutedAlias and
    /// Coordinator (a managed Coordinator is deployed with its streaming nodes).
    Operator(collection_operator::operator::OperatorArgs),
    /// Run everything on one machine: the embedded coordinator, reconciling the manifests
    /// of a folder and re-applying when files change.
    Up(collection_operator::up::UpArgs),
    /// Print the actions a reconcile of the manifests would take. Exit code 0: in sync;
    /// 2: changes; 1: error (like `terraform plan -detailed-exitcode`).
    Plan(collection_operator::up::PlanArgs),
}

/// Logs to stderr, filtered by `RUST_LOG` or else at `default_level`.
fn init_tracing(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only for a person at a terminal: not in files, pipes or a pod's log.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The command line, or the process exits: 0 after `--help`/`--version`, 1 for a usage
/// error. clap's own exit code for a usage error is 2, which `plan` reserves for "changes",
/// so a CI check could not tell a mistyped flag from a pending swap.
fn parse_arguments() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            std::process::exit(if error.use_stderr() { 1 } else { 0 })
        }
    }
}

/// Everything this process creates is its own: files 0600, directories 0700 (the redb
/// file, the commit log, WAL segments, `up-state.json`, the LOCK file, Unix sockets). The
/// metadata and the DDL log are not for other local users to read.
fn private_files() {
    #[cfg(unix)]
    // SAFETY: umask only sets the process's file mode creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    private_files();
    let cli = parse_arguments();
    // `up` and `plan` tell a person on stdout what happens; their logs are for problems
    // only. The servers and the operator log their steps, as a pod's log should.
    let default_level = match cli.command {
        Command::Up(_) | Command::Plan(_) => "warn",
        _ => "info",
    };
    init_tracing(cli.log_format, default_level);
    match cli.command {
        Command::Coordinator {
            data_dir,
            listen,
            history_retention_secs,
            compaction_interval_secs,
            history_max_entries,
            history_max_mib,
            meta_store,
            auth,
            tls,
            internal_token_file,
            streaming,
            connections,
        } => {
            let engine = EngineConfig {
                history_retention: Duration::from_secs(history_retention_secs),
                compaction_interval: Duration::from_secs(compaction_interval_secs.max(1)),
                history_max_entries,
                history_max_bytes: history_max_mib.saturating_mul(1 << 20),
                ..EngineConfig::default()
            };
            coordinator::run(CoordinatorConfig {
                data_dir,
                meta_store,
                listen,
                engine,
                auth: AuthConfig::from_env(&auth)?,
                internal_auth: internal_token_file.map(|path| AuthConfig {
                    token_file: Some(path),
                    tokens: Vec::new(),
                }),
                tls: tls.files(),
                ddl_wal: streaming.ddl_wal,
                streaming: streaming.config(),
                connections: connections.limits(),
            })
            .await
        }
        Command::StreamingNode {
            coordinator,
            wal_dir,
            listen,
            advertise,
            segment_mib,
            auth_token_file,
        } => {
            let auth = auth_token_file
                .map(|path| {
                    coordinator::auth::PlaneAuth::load(&AuthConfig {
                        token_file: Some(path),
                        tokens: Vec::new(),
                    })
                })
                .transpose()?;
            collection_operator::streaming::node::run(
                collection_operator::streaming::node::NodeConfig {
                    coordinator,
                    wal_dir,
                    listen,
                    socket: None,
                    advertise,
                    wal: collection_operator::streaming::wal::WalConfig {
                        segment_bytes: segment_mib.max(1) * 1024 * 1024,
                    },
                    auth,
                },
            )
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
