//! `collection-operator up` (everything on one machine) and `collection-operator plan`
//! (what a reconcile would do, for GitOps pre-merge checks).
//!
//! Both read the same manifests a cluster would get ([`manifest`]), decide with the same
//! pure planner as the Kubernetes controllers ([`crate::plan::plan_all`]) and talk to the
//! engine through the same [`EngineClient`]; `up` even talks to its own embedded
//! coordinator over loopback gRPC, so there is one code path whichever engine is behind
//! the endpoint.
//!
//! Ownership (who created an engine object) is what the controllers read from `status`.
//! `up` keeps it in a state file in its data directory ([`state`]). `plan` has neither, so
//! it infers it: an engine object counts as the resource's when it already matches the
//! manifests (see [`reconcile::Intents::infer_ownership`]).

mod embedded;
pub mod manifest;
pub mod reconcile;
pub mod routed;
mod run;
pub mod schema;
mod scope;
pub mod serving;
pub mod state;
pub mod table;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

use crate::client::{Credentials, EngineClient};
use crate::plan::{self, Plan, Verdict};
use reconcile::Intents;

/// Flags of `collection-operator up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Folder of Collection, CollectionAlias and RoutedAlias manifests, read recursively
    /// (.yaml, .yml, .json). Deleting a file deletes its resources (their deletionPolicy
    /// applies; a RoutedAlias takes its generated collections and alias with it).
    #[arg(long, default_value = "manifests")]
    pub manifests: PathBuf,
    /// Directory of the embedded meta store and of up's state file.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// gRPC address of the embedded coordinator (pymilvus connects here).
    #[arg(long, default_value = "127.0.0.1:19530")]
    pub listen: SocketAddr,
    /// Seconds between full re-reconciles, which also repair drift (an alias moved
    /// behind up's back is moved back).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub resync_secs: u64,
    /// Quiet period after a file change before re-applying, in milliseconds (editors
    /// write a file in several steps).
    #[arg(long, default_value_t = 200)]
    pub debounce_ms: u64,
    /// Authentication of the embedded coordinator, as for `coordinator`; up's own
    /// client uses the first credential configured.
    #[command(flatten)]
    pub auth: crate::coordinator::AuthArgs,
    /// Reconcile against this existing engine (e.g. a Milvus at `http://milvus:19530`;
    /// `http://` is assumed if missing) instead of starting the embedded coordinator:
    /// then `--listen` and the `--auth-*` flags are unused, and `--data-dir` holds only
    /// up's state file.
    #[arg(long, env = "COLLECTION_OPERATOR_ENGINE")]
    pub engine: Option<String>,
    /// File holding the token (or `user:password`) for `--engine`, first non-empty line.
    #[arg(long, requires = "engine")]
    pub engine_token_file: Option<PathBuf>,
    /// Largest manifest file read, in bytes; a bigger one is reported, not read.
    #[arg(
        long,
        default_value_t = manifest::DEFAULT_MAX_FILE_BYTES,
        env = "COLLECTION_OPERATOR_MAX_MANIFEST_BYTES"
    )]
    pub max_manifest_bytes: u64,
}

/// Flags of `collection-operator plan`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// Manifest files or folders (folders recursively: .yaml, .yml, .json); `-` reads
    /// standard input. Repeat the flag or list several paths.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Engine endpoint, e.g. `http://127.0.0.1:19530` (`http://` is assumed if missing).
    #[arg(long, env = "COLLECTION_OPERATOR_COORDINATOR")]
    pub coordinator: String,
    /// Token, or `user:password`, when the engine requires authentication.
    #[arg(long, env = "MILVUS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Largest manifest file read, in bytes; a bigger one is reported, not read.
    #[arg(
        long,
        default_value_t = manifest::DEFAULT_MAX_FILE_BYTES,
        env = "COLLECTION_OPERATOR_MAX_MANIFEST_BYTES"
    )]
    pub max_manifest_bytes: u64,
}

/// Runs `up` until SIGINT or SIGTERM.
pub async fn run_up(args: UpArgs) -> anyhow::Result<()> {
    manifest::set_max_file_bytes(args.max_manifest_bytes);
    run::run(args).await
}

/// `http://` is the default scheme, as in pymilvus' `uri`.
fn endpoint_of(coordinator: &str) -> String {
    if coordinator.contains("://") {
        coordinator.to_string()
    } else {
        format!("http://{coordinator}")
    }
}

/// The address a local client uses to reach a listener bound to `addr` (a wildcard
/// address is reached through loopback).
pub fn loopback_endpoint(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        }
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// Loads and validates manifests on the blocking pool; prints the ignored documents.
pub async fn load_manifests(paths: &[PathBuf]) -> anyhow::Result<manifest::ManifestSet> {
    let owned: Vec<PathBuf> = paths.to_vec();
    let set = tokio::task::spawn_blocking(move || manifest::load(&owned, None))
        .await
        .context("manifest loading task failed")??;
    for note in &set.ignored {
        eprintln!("note: {note}");
    }
    if set.collections.is_empty() && set.aliases.is_empty() && set.routed.is_empty() {
        eprintln!(
            "note: no Collection, CollectionAlias or RoutedAlias manifests in {} file(s)",
            set.files
        );
    }
    Ok(set)
}

/// Plans a manifest set against the engine with `plan`'s inferred ownership. Returns the
/// intents (for printing), the plan (alias moves the serving gate holds taken out) and
/// the serving side (the gates, indexes and load).
pub async fn plan_set(
    client: &EngineClient,
    set: &manifest::ManifestSet,
) -> anyhow::Result<(Intents, Plan, serving::ServingPlan)> {
    let mut intents = Intents::default();
    for manifest in &set.collections {
        intents.push_collection(&manifest.resource);
    }
    for manifest in &set.aliases {
        intents.push_alias(&manifest.resource);
    }
    // A RoutedAlias stands for the resources it would generate now (wall clock).
    let now = k8s_openapi::jiff::Timestamp::now();
    for manifest in &set.routed {
        let plan = routed::push_intents(client, &manifest.resource, now, &mut intents)
            .await
            .with_context(|| format!("observing the series of {}", manifest.origin))?;
        eprintln!(
            "note: RoutedAlias {}: {}",
            plan::intent::key_of(&manifest.resource),
            routed::verdict_text(&plan)
        );
    }
    let observed = reconcile::observe(client, &intents)
        .await
        .with_context(|| format!("observing the engine at {}", client.endpoint()))?;
    intents.infer_ownership(&observed);
    let mut plan = intents.plan(&observed);
    let names = serving::names_to_observe(&intents, &observed, &plan);
    let observations = serving::observe(client, names)
        .await
        .with_context(|| format!("reading indexes and load state at {}", client.endpoint()))?;
    // No recorded release times: a due release shows as scheduled from now.
    let serving = serving::decide(
        &intents,
        &observed,
        &observations,
        &mut plan,
        &|_| None,
        k8s_openapi::jiff::Timestamp::now(),
    );
    Ok((intents, plan, serving))
}

/// Whether a plan means "not in sync": actions to take, or a resource that would not
/// be Ready (a conflict, a missing target...), which a pre-merge check must not pass
/// as "no changes".
pub fn has_changes(plan: &Plan, serving: &serving::ServingPlan) -> bool {
    !plan.actions.is_empty()
        || !serving.actions.is_empty()
        || plan.verdicts.values().any(|v| !matches!(v, Verdict::Ready))
}

/// Runs `plan`; `Ok(true)` when the engine is not in sync with the manifests (exit 2).
pub async fn run_plan(args: PlanArgs) -> anyhow::Result<bool> {
    manifest::set_max_file_bytes(args.max_manifest_bytes);
    let endpoint = endpoint_of(&args.coordinator);
    let credentials = args.token.clone().map(Credentials::Token);
    // Manifests first: a bad file is reported even when the engine is down.
    let set = load_manifests(&args.files).await?;
    let client = EngineClient::connect(&endpoint, credentials.as_ref())
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    let (intents, plan, serving) = plan_set(&client, &set).await?;
    print!("{}", table::plan_report(&plan, &serving, &intents));
    Ok(has_changes(&plan, &serving))
}

/// Plans like `plan` and applies, with no state file, until nothing is left to do or
/// only the gate holds: what a one-shot `apply` would do. A serving gate needs several
/// rounds (the collection, then its index, then its load, then the alias), so this
/// applies up to [`APPLY_ROUNDS`] plans. Errors if any action fails. Returns every
/// action applied, in order.
pub async fn apply_once(endpoint: &str, paths: &[PathBuf]) -> anyhow::Result<Plan> {
    let set = load_manifests(paths).await?;
    let client = EngineClient::connect(endpoint, None)
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    let mut applied = Plan::default();
    for _ in 0..APPLY_ROUNDS {
        let (_, plan, serving) = plan_set(&client, &set).await?;
        if plan.actions.is_empty() && serving.actions.is_empty() {
            break;
        }
        let results = reconcile::apply(&client, &plan.actions).await;
        let mut failures: Vec<String> = plan
            .actions
            .iter()
            .zip(&results)
            .filter_map(|(action, result)| {
                result
                    .as_ref()
                    .err()
                    .map(|error| format!("{action:?}: {error}"))
            })
            .collect();
        let serving_results = serving::apply(&client, &serving.actions).await;
        for ((_, database, name, action), result) in serving.actions.iter().zip(serving_results) {
            if let Err(error) = result {
                failures.push(format!(
                    "{} of {database}.{name}: {error}",
                    serving::action_text(action)
                ));
            }
        }
        anyhow::ensure!(
            failures.is_empty(),
            "{} action(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
        applied.actions.extend(plan.actions);
        applied.verdicts = plan.verdicts;
    }
    Ok(applied)
}

/// Plans `apply_once` applies at most.
const APPLY_ROUNDS: usize = 8;
