//! The `up` loop: embedded coordinator, reconcile passes on start, on file changes
//! (debounced) and on a periodic resync; each engine call printed as `plan` lists it and
//! the status table when a row changed; graceful shutdown on SIGINT/SIGTERM.
//!
//! Safety rules that the loop keeps:
//! - A file with any problem contributes nothing, and while any file is broken nothing is
//!   deleted: a half-written or broken file must never read as "these resources were
//!   deleted" (nor a resource that moved into it). The resources of broken files keep
//!   their last accepted manifest (kept in the state file) and are still resynced; the
//!   resources of valid files apply.
//! - Deleting a file deletes its resources: the intent is rebuilt from the last accepted
//!   manifest with `deleting` set, so its `deletionPolicy` applies, also when the file was
//!   removed while `up` was not running.
//! - A pass that has started is finished before shutdown (a second signal exits at once;
//!   the pending marks of [`super::state`] cover that case).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use super::UpArgs;
use super::embedded::{start_with_wal, stop};
use super::manifest::{self, Kind, ResourceId};
use super::reconcile::{self, Intents, action_key};
use super::scope;
use super::serving;
use super::state::{self, Record, State};
use super::table;
use super::watch::{Trigger, settle, watch_folder};
use crate::client::{ClientError, Credentials, EngineClient};
use crate::coordinator::{AuthConfig, Authenticator, Security, serve_with};
use crate::crd::{AliasDeletionPolicy, Collection, CollectionAlias, CollectionDeletionPolicy};
use crate::plan::{Action, Reason, Verdict};
use crate::serve::shutdown_signal;

/// The status table shows the rows that changed in a pass, at most this many.
const SHOWN_ROWS: usize = 50;

/// Engine calls printed one line each per pass, at most (failures always are).
const SHOWN_ACTIONS: usize = 100;

/// While a resource waits (for a target, for aliases to go), look again this often.
const WAITING_RECHECK: Duration = Duration::from_secs(5);

/// First retry after a failed pass; doubles up to the resync interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// A step that takes longer than this (reading a large folder) is announced once.
const SLOW_STEP: Duration = Duration::from_secs(2);

/// Resources named at most in the list of those a broken file holds.
const HELD_SHOWN: usize = 10;

/// The `pending` value of a collection whose CreateCollection is in flight.
const PENDING_CREATE: &str = "create";

pub(super) async fn run(args: UpArgs) -> anyhow::Result<()> {
    match std::fs::metadata(&args.manifests) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => anyhow::bail!("--manifests {} is not a folder", args.manifests.display()),
        Err(error) => {
            return Err(error).with_context(|| {
                format!(
                    "manifest folder {} (create it, or pass --manifests DIR, e.g. \
                     --manifests examples)",
                    args.manifests.display()
                )
            });
        }
    }
    // The state file is JSON and the store changes every second: inside the manifest
    // folder they would be read as (broken) manifests and trigger endless passes.
    let manifests_abs = std::fs::canonicalize(&args.manifests)
        .with_context(|| format!("resolving {}", args.manifests.display()))?;
    let data_abs = std::fs::canonicalize(&args.data_dir)
        .or_else(|_| std::path::absolute(&args.data_dir))
        .with_context(|| format!("resolving {}", args.data_dir.display()))?;
    anyhow::ensure!(
        !data_abs.starts_with(&manifests_abs),
        "--data-dir {} is inside --manifests {}: put the data directory elsewhere",
        args.data_dir.display(),
        args.manifests.display()
    );
    // The port first: a port in use is reported before anything is opened or created.
    // With --engine nothing listens (the engine's own port is often 19530 too).
    let listener = match args.engine {
        Some(_) => None,
        None => Some(TcpListener::bind(args.listen).await.with_context(|| {
            format!(
                "cannot listen on {}: is another up or coordinator running? (pass --listen \
                 HOST:PORT)",
                args.listen
            )
        })?),
    };
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data directory {}", args.data_dir.display()))?;
    let state_path = state::path_in(&args.data_dir);
    let state = State::load(&state_path)?;

    // Signals are caught from here on, before the first (possibly long) pass.
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = shutdown_tx.send(true);
        eprintln!("up: stopping after the current pass (signal again to exit at once)");
        shutdown_signal().await;
        eprintln!("up: second signal, exiting now");
        std::process::exit(130);
    });

    if let Some(engine) = &args.engine {
        let endpoint = super::endpoint_of(engine);
        let credentials = match &args.engine_token_file {
            Some(path) => Some(Credentials::Token(read_engine_token(path)?)),
            None => None,
        };
        let client = EngineClient::connect(&endpoint, credentials.as_ref())
            .await
            .with_context(|| format!("connecting to the engine at {endpoint}"))?;
        println!(
            "up: reconciling {} against the engine at {endpoint} (state in {}; resync every \
             {} s)",
            args.manifests.display(),
            args.data_dir.display(),
            args.resync_secs
        );
        let result = Runner::new(client, &args, state, state_path)
            .run(
                Duration::from_secs(args.resync_secs),
                Duration::from_millis(args.debounce_ms),
                shutdown_rx,
            )
            .await;
        println!("up: stopped");
        return result;
    }

    let listener = listener.context("the embedded coordinator has no listener")?;
    let local = listener.local_addr()?;

    // Authentication (optional): the endpoint checks every credential configured; up's
    // own client sends the first one.
    let auth = AuthConfig::from_env(&args.auth)?;
    let (security, own_credentials) = match &auth {
        None => (Security::default(), None),
        Some(config) => {
            let credentials = config.load()?;
            let authenticator = Authenticator::new(&credentials);
            authenticator.spawn_reload(config.clone(), crate::coordinator::auth::RELOAD_INTERVAL);
            let own = credentials.into_iter().next().map(Credentials::Token);
            (
                Security {
                    authenticator: Some(authenticator),
                    tls: None,
                },
                own,
            )
        }
    };

    let (engine, wal) = start_with_wal(&args.data_dir).await?;
    let (stop_server, server_stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve_with(engine.clone(), listener, security, async {
        let _ = server_stopped.await;
    }));
    let endpoint = super::loopback_endpoint(local);
    let result = async {
        let client = EngineClient::connect(&endpoint, own_credentials.as_ref())
            .await
            .with_context(|| format!("connecting to the embedded coordinator at {endpoint}"))?;
        println!(
            "up: engine serving MilvusService on {local} (data in {}); reconciling {} \
             (resync every {} s)",
            args.data_dir.display(),
            args.manifests.display(),
            args.resync_secs
        );
        Runner::new(client, &args, state, state_path)
            .run(
                Duration::from_secs(args.resync_secs),
                Duration::from_millis(args.debounce_ms),
                shutdown_rx,
            )
            .await
    }
    .await;
    stop(engine, stop_server, server, wal).await;
    result
}

/// The credential of `--engine-token-file`: its first non-empty line (a token, or
/// `user:password`, sent as pymilvus sends a token).
fn read_engine_token(path: &Path) -> anyhow::Result<String> {
    crate::coordinator::auth::read_token_file(path)?
        .into_iter()
        .next()
        .with_context(|| format!("engine token file {} is empty", path.display()))
}

/// How a pass ended, for scheduling the next one.
#[derive(Debug, Default)]
struct Outcome {
    /// Some engine call failed.
    failed: bool,
    /// A resource waits for something that may change without a file event.
    waiting: bool,
    /// A routed alias's generated resources changed in the engine: plan it again at once
    /// (a collection created in this pass can take the alias in the next one).
    again: bool,
    /// Time until the earliest scheduled action of a routed alias.
    wake: Option<Duration>,
}

struct Runner {
    client: EngineClient,
    manifests: PathBuf,
    state: State,
    state_path: PathBuf,
    /// The status rows as last printed.
    printed: BTreeMap<ResourceId, Vec<String>>,
    /// The manifest problems as last printed (`None`: the manifests were accepted).
    last_problems: Option<Vec<String>>,
    last_ignored: Vec<String>,
    /// The pass was started by a file change (not by a resync or a retry).
    file_event: bool,
    /// What each gated alias waited for, as last printed.
    last_waits: BTreeMap<String, String>,
    /// The state changed since it was last saved.
    dirty: bool,
    /// Status rows of the routed aliases, from the last expansion.
    routed_rows: BTreeMap<ResourceId, Vec<String>>,
    /// Which file declares what, and the engine names of every resource: what a file
    /// change touches.
    targets: scope::Tracked,
    /// Each manifest file's verdict as of the last full read, so that a full read
    /// re-reads only the files that changed.
    file_cache: manifest::FileCache,
}

fn now_rfc3339() -> String {
    // Seconds, always the same width, so that text order is time order (the planner
    // compares seniority as text).
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn clock() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%H:%M:%S")
        .to_string()
}

impl Runner {
    fn new(client: EngineClient, args: &UpArgs, state: State, state_path: PathBuf) -> Self {
        Runner {
            client,
            manifests: args.manifests.clone(),
            state,
            state_path,
            printed: BTreeMap::new(),
            last_problems: None,
            last_ignored: Vec::new(),
            file_event: false,
            last_waits: BTreeMap::new(),
            dirty: false,
            routed_rows: BTreeMap::new(),
            targets: scope::Tracked::default(),
            file_cache: manifest::FileCache::default(),
        }
    }

    async fn run(
        &mut self,
        resync: Duration,
        debounce: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _watcher = watch_folder(&self.manifests, tx);
        let mut retry = FIRST_RETRY;
        let mut trigger = Trigger::Full;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let started = Instant::now();
            let mut again = Trigger::Full;
            let delay = match self
                .pass(std::mem::replace(&mut trigger, Trigger::Full))
                .await
            {
                Ok(outcome) if outcome.failed => {
                    let delay = retry.min(resync);
                    retry = (retry * 2).min(resync);
                    delay
                }
                Ok(outcome) => {
                    retry = FIRST_RETRY;
                    if let Some(scope) = self.targets.last_scope.take() {
                        again = Trigger::Again(scope);
                    }
                    let delay = if outcome.again {
                        Duration::ZERO
                    } else if outcome.waiting {
                        WAITING_RECHECK.min(resync)
                    } else {
                        resync
                    };
                    // A routed alias's next boundary comes when it comes, not at a resync.
                    outcome.wake.map_or(delay, |wake| delay.min(wake))
                }
                Err(error) => {
                    eprintln!("up: [{}] reconcile failed: {error:#}", clock());
                    let delay = retry.min(resync);
                    retry = (retry * 2).min(resync);
                    delay
                }
            };
            tracing::debug!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "pass done"
            );
            tokio::select! {
                _ = shutdown.changed() => break,
                // Looking again at once stays with the resources of a targeted pass.
                _ = tokio::time::sleep(delay) => if delay.is_zero() {
                    trigger = again;
                },
                Some(paths) = rx.recv() => {
                    trigger = settle(&mut rx, debounce, paths).await;
                    self.file_event = true;
                }
            }
        }
        Ok(())
    }

    /// Reads the manifests into the state: the resources of every valid file replace
    /// their records; records whose manifest is gone are marked deleted, unless some
    /// file has a problem (a resource may have moved into the broken file, and a broken
    /// file must never read as "its resources were deleted"): then nothing is deleted and
    /// the resources of broken files keep their last accepted manifest. What is held,
    /// and by which file and line, is printed whenever it changes and after every file
    /// change.
    ///
    /// Returns how many files were read (the others' verdicts were cached).
    async fn read_manifests(&mut self) -> anyhow::Result<usize> {
        // The state is lent to the loading task (it is the `oldSelf` of every update)
        // rather than copied: with 10,000 resources a copy per pass costs more memory
        // than everything else up keeps.
        let state = std::mem::take(&mut self.state);
        let mut cache = std::mem::take(&mut self.file_cache);
        let folder = self.manifests.clone();
        let mut task = tokio::task::spawn_blocking(move || {
            let previous: &(dyn manifest::Previous + Sync) = &state;
            let loaded = manifest::load_by_file_reusing(&[folder], Some(previous), &mut cache);
            (state, cache, loaded)
        });
        // A large folder takes a while: say so once rather than staying silent.
        let joined = tokio::select! {
            joined = &mut task => joined,
            _ = tokio::time::sleep(SLOW_STEP) => {
                let folder = self.manifests.display();
                println!("up: [{}] reading the manifests in {folder}...", clock());
                task.await
            }
        };
        let (state, cache, loaded) =
            joined.context("manifest loading task failed (the state of this run is lost)")?;
        self.state = state;
        self.file_cache = cache;
        let files_read = loaded.read;
        let file_event = std::mem::take(&mut self.file_event);
        let blocked = !loaded.problems.is_empty();
        let set = loaded.set;
        if set.ignored != self.last_ignored {
            for note in &set.ignored {
                eprintln!("up: note: {note}");
            }
            self.last_ignored = set.ignored.clone();
        }
        self.targets.set_files(
            set.collections
                .iter()
                .map(|m| (&m.origin, manifest::id_of(Kind::Collection, &m.resource)))
                .chain(set.aliases.iter().map(|m| {
                    (
                        &m.origin,
                        manifest::id_of(Kind::CollectionAlias, &m.resource),
                    )
                }))
                .chain(
                    set.routed
                        .iter()
                        .map(|m| (&m.origin, manifest::id_of(Kind::RoutedAlias, &m.resource))),
                )
                .chain(loaded.kept.iter().map(|(id, origin)| (origin, id.clone())))
                .map(|(origin, id)| (origin.path.clone(), id)),
        );
        let since = now_rfc3339();
        let mut present = std::collections::HashSet::new();
        let documents = set
            .collections
            .into_iter()
            .map(|m| (manifest::id_of(Kind::Collection, &m.resource), m.object))
            .chain(set.aliases.into_iter().map(|m| {
                (
                    manifest::id_of(Kind::CollectionAlias, &m.resource),
                    m.object,
                )
            }))
            .chain(
                set.routed
                    .into_iter()
                    .map(|m| (manifest::id_of(Kind::RoutedAlias, &m.resource), m.object)),
            );
        for (id, object) in documents {
            self.dirty |= accept(&mut self.state, &id, object, &since);
            present.insert(id);
        }
        for (id, _) in loaded.kept {
            self.dirty |= accept_kept(&mut self.state, &id);
            present.insert(id);
        }
        let mut held = Vec::new();
        for (id, record) in self.state.records.iter_mut() {
            // Generated records come and go with their routed alias's schedule.
            if !present.contains(id) && !record.deleted && record.owner.is_none() {
                if blocked {
                    held.push(id.to_string());
                } else {
                    record.deleted = true;
                    self.dirty = true;
                }
            }
        }
        if !blocked {
            if self.last_problems.take().is_some() {
                eprintln!(
                    "up: [{}] every manifest file is valid again: all changes apply",
                    clock()
                );
            }
            return Ok(files_read);
        }
        if self.last_problems.as_ref() != Some(&loaded.problems) || file_event {
            eprintln!(
                "{}",
                blocked_report(&loaded.problems, &loaded.broken, &held, &self.manifests)
            );
            self.last_problems = Some(loaded.problems);
        }
        Ok(files_read)
    }

    /// Reads only the `changed` files into the state, for a pass targeted at them.
    /// Returns the resources whose record changed, or `None` (and changes nothing) when
    /// only a full read can tell: manifests with problems (now or still), a folder, a
    /// link, a RoutedAlias, a resource crossing into a file from an unchanged one.
    async fn read_changed(
        &mut self,
        changed: BTreeSet<PathBuf>,
    ) -> anyhow::Result<Option<BTreeSet<ResourceId>>> {
        if self.last_problems.is_some() {
            return Ok(None);
        }
        // The full read names files under `--manifests` as given; the watcher may name
        // them from the absolute or resolved folder.
        let roots: Vec<PathBuf> = [
            std::path::absolute(&self.manifests).ok(),
            std::fs::canonicalize(&self.manifests).ok(),
        ]
        .into_iter()
        .flatten()
        .filter(|root| *root != self.manifests)
        .collect();
        let changed: BTreeSet<PathBuf> = changed
            .into_iter()
            .map(|path| {
                roots
                    .iter()
                    .find_map(|root| path.strip_prefix(root).ok())
                    .map_or_else(|| path.clone(), |rest| self.manifests.join(rest))
            })
            .collect();
        let mut files = Vec::new();
        for path in &changed {
            let manifest_name = path.extension().is_some();
            match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.is_file() && manifest_name => files.push(path.clone()),
                // Not a manifest (an editor's test file without extension).
                Ok(meta) if meta.is_file() => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    // A folder that went away takes its files with it.
                    if !manifest_name && self.targets.declares_under(path) {
                        return Ok(None);
                    }
                }
                // A folder, a link, something unreadable: the full read decides.
                Ok(_) | Err(_) => return Ok(None),
            }
        }
        let state = std::mem::take(&mut self.state);
        let (state, loaded) = tokio::task::spawn_blocking(move || {
            let loaded = if files.is_empty() {
                Ok(manifest::ManifestSet::default())
            } else {
                manifest::load(&files, Some(&state as &(dyn manifest::Previous + Sync)))
            };
            (state, loaded)
        })
        .await
        .context("manifest loading task failed (the state of this run is lost)")?;
        self.state = state;
        let Ok(set) = loaded else {
            return Ok(None);
        };
        if !set.routed.is_empty() || !set.ignored.is_empty() {
            return Ok(None);
        }
        let documents: Vec<(PathBuf, ResourceId, serde_json::Value)> = set
            .collections
            .into_iter()
            .map(|m| {
                let id = manifest::id_of(Kind::Collection, &m.resource);
                (m.origin.path, id, m.object)
            })
            .chain(set.aliases.into_iter().map(|m| {
                let id = manifest::id_of(Kind::CollectionAlias, &m.resource);
                (m.origin.path, id, m.object)
            }))
            .collect();
        let declared = documents
            .iter()
            .map(|(path, id, _)| (path.clone(), id.clone()))
            .collect();
        let Some(change) = self.targets.replace_files(&changed, declared) else {
            return Ok(None);
        };
        let since = now_rfc3339();
        let mut touched = BTreeSet::new();
        for (_, id, object) in documents {
            if accept(&mut self.state, &id, object, &since) {
                self.dirty = true;
                touched.insert(id);
            }
        }
        for id in change.removed {
            if let Some(record) = self.state.records.get_mut(&id)
                && !record.deleted
                && record.owner.is_none()
            {
                record.deleted = true;
                self.dirty = true;
                touched.insert(id);
            }
        }
        Ok(Some(touched))
    }

    /// The resources a pass after a change of `changed` plans: those, and what their
    /// engine names before and after the change touch (see [`scope`]).
    fn scope_of(&mut self, changed: BTreeSet<ResourceId>) -> anyhow::Result<BTreeSet<ResourceId>> {
        let now: HashMap<ResourceId, scope::Footprint> =
            scope::footprints(&self.intents(Some(&changed))?)
                .into_iter()
                .collect();
        let mut names = Vec::new();
        for id in &changed {
            let before = self.targets.index.footprint(id).cloned();
            let after = now.get(id).cloned();
            names.extend(scope::changed_names(before.as_ref(), after.as_ref()));
            self.targets.index.set(id.clone(), after);
        }
        let mut touched = self.targets.index.touched(&names);
        touched.extend(changed);
        Ok(touched)
    }

    /// Builds the intents of every record (or of those in `scope`): current manifests,
    /// and deleted ones until their deletion is handled.
    fn intents(&self, scope: Option<&BTreeSet<ResourceId>>) -> anyhow::Result<Intents> {
        let mut intents = Intents::default();
        let records = || {
            self.state
                .records
                .iter()
                .filter(move |(id, _)| scope.is_none_or(|scope| scope.contains(*id)))
        };
        for (id, record) in records().filter(|(id, _)| id.kind == Kind::Collection) {
            let collection: Collection = recorded(&self.state_path, id, record)?;
            let has_timestamp = collection.metadata.creation_timestamp.is_some();
            let intent = intents.push_collection(&collection);
            intent.deleting = record.deleted;
            intent.owned_id = record.owned_id();
            if !has_timestamp {
                intent.seniority.created = record.since.clone();
            }
        }
        for (id, record) in records().filter(|(id, _)| id.kind == Kind::CollectionAlias) {
            let alias: CollectionAlias = recorded(&self.state_path, id, record)?;
            let has_timestamp = alias.metadata.creation_timestamp.is_some();
            let intent = intents.push_alias(&alias);
            intent.deleting = record.deleted;
            intent.bound = record.bound.clone();
            if !has_timestamp {
                intent.seniority.created = record.since.clone();
            }
        }
        Ok(intents)
    }

    async fn pass(&mut self, trigger: Trigger) -> anyhow::Result<Outcome> {
        let started = Instant::now();
        self.targets.last_scope = None;
        let mut scope = match trigger {
            Trigger::Full => None,
            Trigger::Files(paths) => match self.read_changed(paths).await? {
                Some(changed) => Some(self.scope_of(changed)?),
                None => {
                    tracing::debug!("changed files need a full read");
                    None
                }
            },
            Trigger::Again(scope) => Some(scope),
        };
        let files_read = if scope.is_none() {
            self.read_manifests().await?
        } else {
            0
        };
        // Writes of the state file: none in a pass that changed nothing.
        let mut state_writes = 0;
        let expanded = super::routed::expand(
            &mut self.state,
            k8s_openapi::jiff::Timestamp::now(),
            &now_rfc3339(),
        )?;
        self.dirty |= expanded.changed;
        self.routed_rows = expanded
            .rows
            .into_iter()
            .map(|(id, (database, alias, target, status))| {
                let row = vec![id.to_string(), database, alias, target, status];
                (id, row)
            })
            .collect();
        if expanded.changed {
            // A routed alias's schedule moved: its generated resources may be anywhere.
            scope = None;
        }
        let loaded = started.elapsed();
        let mut intents = self.intents(scope.as_ref())?;
        if scope.is_none() {
            self.targets.index = scope::Index::of(&intents);
        }
        self.targets.last_scope = scope.clone();
        let observed = reconcile::observe(&self.client, &intents)
            .await
            .context("observing the engine")?;
        let observed_at = started.elapsed();

        let mut lines = self.take_back_retained(&mut intents, &observed);

        // Creates and binds that were sent but whose outcome was never recorded (up
        // stopped in between) are ours if the engine shows exactly what we sent.
        for index in 0..intents.collections.len() {
            let key = intents.collections[index].key.clone();
            let Some(record) = self.state.record_mut(&intents, &key) else {
                continue;
            };
            if record.pending.as_deref() != Some(PENDING_CREATE) {
                continue;
            }
            let intent = &mut intents.collections[index];
            let found = observed
                .collections
                .get(&(intent.database.clone(), intent.name.clone()))
                .map(|c| c.id);
            if intent.owned_id.is_none()
                && let Some(id) = found
            {
                intent.owned_id = Some(id);
                record.collection_id = Some(id.to_string());
                record.pending = None;
                self.dirty = true;
            }
        }
        for index in 0..intents.aliases.len() {
            let key = intents.aliases[index].key.clone();
            let Some(record) = self.state.record_mut(&intents, &key) else {
                continue;
            };
            let intent = &mut intents.aliases[index];
            if let Some(pending) = record.pending.clone()
                && observed
                    .aliases
                    .get(&(intent.database.clone(), intent.alias.clone()))
                    == Some(&pending)
            {
                intent.bound = Some(pending.clone());
                record.bound = Some(pending);
                record.pending = None;
                self.dirty = true;
            }
        }

        let mut plan = intents.plan(&observed);
        // The serving gate: one round of index/load/row reads, held alias moves out of
        // the plan, indexes and load of the declared collections.
        let serving_names = serving::names_to_observe(&intents, &observed, &plan);
        let observations = serving::observe(&self.client, serving_names)
            .await
            .context("reading indexes, load state and row counts")?;
        let now = k8s_openapi::jiff::Timestamp::now();
        let records = &self.state.records;
        let release_at = |key: &crate::plan::ObjectKey| {
            intents
                .resource(key)
                .and_then(|id| records.get(id))
                .and_then(|record| record.release_at.as_deref())
                .and_then(|text| text.parse().ok())
        };
        let serving_plan = serving::decide(
            &intents,
            &observed,
            &observations,
            &mut plan,
            &release_at,
            now,
        );
        // Collection IDs of alias targets, to verify a swap through the engine.
        let target_ids: HashMap<(String, String), i64> = observed
            .collections
            .iter()
            .map(|(name, collection)| (name.clone(), collection.id))
            .collect();
        drop(observed);
        self.note_requested_swaps(&intents, &serving_plan);
        // An action that puts back what up had made (an alias moved or dropped, a
        // collection dropped behind its back) is a drift repair: said as such.
        let drift: Vec<bool> = plan
            .actions
            .iter()
            .map(|action| {
                let record = action_key(action)
                    .and_then(|key| intents.resource(key))
                    .and_then(|id| self.state.records.get(id));
                match (action, record) {
                    (Action::AlterAlias { to, .. }, Some(record)) => {
                        record.bound.as_deref() == Some(to.as_str())
                    }
                    (Action::CreateAlias { .. }, Some(record)) => record.bound.is_some(),
                    (Action::CreateCollection { .. }, Some(record)) => {
                        record.collection_id.is_some()
                    }
                    _ => false,
                }
            })
            .collect();
        let planned = started.elapsed();

        // Record what is about to be created or bound before sending it.
        let mut marked = false;
        for action in &plan.actions {
            let pending = match action {
                Action::CreateCollection { .. } => Some(PENDING_CREATE.to_string()),
                Action::CreateAlias { target, .. } => Some(target.clone()),
                Action::AlterAlias { to, .. } => Some(to.clone()),
                _ => None,
            };
            if let Some(pending) = pending
                && let Some(record) = self.record_for(&intents, action)
            {
                record.pending = Some(pending);
                marked = true;
            }
        }
        if marked {
            self.state.save(&self.state_path)?;
            state_writes += 1;
        }

        let results = reconcile::apply(&self.client, &plan.actions).await;
        let serving_results = serving::apply(&self.client, &serving_plan.actions).await;
        let applied_at = started.elapsed();

        let mut errors: HashMap<ResourceId, String> = HashMap::new();
        let mut general_errors = Vec::new();
        let mut outcome = Outcome {
            wake: expanded.wake,
            ..Outcome::default()
        };
        let mut created_collection = false;
        for ((action, result), drift) in plan.actions.iter().zip(results).zip(drift) {
            let id = action_key(action)
                .and_then(|key| intents.resource(key))
                .cloned();
            let text = table::action_line(&table::action_row(action, &intents));
            created_collection |=
                result.is_ok() && matches!(action, Action::CreateCollection { .. });
            match &result {
                Ok(_) if drift => lines.push(format!("drift repaired: {text}")),
                Ok(_) => lines.push(text),
                Err(error) => lines.push(format!("FAILED {text}: {error}")),
            }
            match result {
                Ok(applied) => {
                    self.dirty = true;
                    if let Some(record) = self.record_for(&intents, action) {
                        outcome.again |= record.owner.is_some();
                        record.pending = None;
                        match action {
                            Action::CreateCollection { .. } | Action::AdoptCollection { .. } => {
                                record.collection_id =
                                    applied.collection_id.map(|id| id.to_string());
                            }
                            Action::CreateAlias { target, .. }
                            | Action::AdoptAlias { target, .. } => {
                                record.bound = Some(target.clone())
                            }
                            Action::AlterAlias { from, to, .. } => {
                                record.bound = Some(to.clone());
                                record.with_swap(|status| {
                                    status.swap_applied(from, to, &now_rfc3339())
                                });
                            }
                            Action::DropAlias { .. } => record.bound = None,
                            Action::DropCollection { .. } => record.collection_id = None,
                            Action::CreateDatabase { .. } => {}
                        }
                    }
                }
                Err(error) => {
                    outcome.failed = true;
                    self.dirty = true;
                    // An unreachable engine may or may not have applied it: keep the
                    // pending mark. An engine answer means it was not applied.
                    if matches!(error, ClientError::Engine { .. })
                        && let Some(record) = self.record_for(&intents, action)
                    {
                        record.pending = None;
                    }
                    let text = format!("{}: {error}", action.rpc_name());
                    match id {
                        Some(id) => {
                            errors.insert(id, text);
                        }
                        None => general_errors.push(text),
                    }
                }
            }
        }

        // An index created or a load requested changes what the gate sees: look again
        // at once (a load still in progress then waits for the recheck).
        outcome.again |= serving_results.iter().any(Result::is_ok);
        // A declared collection created in this pass gets its indexes and load in the
        // next one: at once, not at the recheck.
        outcome.again |= serving_plan.pending && created_collection;
        for ((key, database, name, action), result) in
            serving_plan.actions.iter().zip(serving_results)
        {
            let text =
                table::action_line(&table::serving_row(key, database, name, action, &intents));
            match &result {
                Ok(()) => lines.push(text),
                Err(error) => lines.push(format!("FAILED {text}: {error}")),
            }
            if let Err(error) = result {
                outcome.failed = true;
                if let Some(id) = intents.resource(key) {
                    errors
                        .entry(id.clone())
                        .or_insert_with(|| format!("{}: {error}", serving::action_text(action)));
                }
            }
        }
        for (key, decision) in &serving_plan.collections {
            let release_at = decision.release_at.map(|at| at.to_string());
            if let Some(record) = self.state.record_mut(&intents, key)
                && record.release_at != release_at
            {
                record.release_at = release_at;
                self.dirty = true;
            }
        }
        // A swap is Ready only once the engine shows it: DescribeAlias names the new
        // target and DescribeCollection through the alias returns its collection ID.
        for action in &plan.actions {
            let Action::AlterAlias {
                key,
                database,
                alias,
                to,
                ..
            } = action
            else {
                continue;
            };
            let Some(id) = intents.resource(key).cloned() else {
                continue;
            };
            if errors.contains_key(&id) {
                continue;
            }
            let expected = target_ids.get(&(database.clone(), to.clone())).copied();
            match verify_swap(&self.client, database, alias, to, expected).await {
                Ok(()) => {
                    if let Some(record) = self.state.records.get_mut(&id) {
                        record.with_swap(|status| status.swap_verified(to, &now_rfc3339()));
                        self.dirty = true;
                    }
                }
                Err(error) => {
                    outcome.failed = true;
                    errors.insert(id, format!("verifying AlterAlias: {error}"));
                }
            }
        }
        outcome.waiting |= serving_plan.waiting();
        outcome.wake = match (outcome.wake, serving_plan.wake()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };

        // Deletions that are done leave the state; their rows say what happened.
        let mut released = Vec::new();
        for (key, verdict) in &plan.verdicts {
            if matches!(verdict, Verdict::Released)
                && let Some(id) = intents.resource(key)
                && !errors.contains_key(id)
                && let Some(record) = self.state.records.remove(id)
            {
                self.dirty = true;
                outcome.again |= record.owner.is_some();
                self.remember_retained(id, &record);
                released.push((id.clone(), record));
            }
            if let Verdict::NotReady { reason, .. } = verdict
                && matches!(reason, Reason::WaitingForTarget | Reason::HasAliases)
            {
                outcome.waiting = true;
            }
        }

        if self.dirty {
            self.state.save(&self.state_path)?;
            self.dirty = false;
            state_writes += 1;
        }
        let saved = started.elapsed();
        for error in &general_errors {
            eprintln!("up: [{}] {error}", clock());
        }
        self.print_status(
            &intents,
            &plan.verdicts,
            &serving_plan,
            &errors,
            &released,
            &lines,
            scope.is_some(),
        );
        self.note_waits(&intents, &serving_plan);
        tracing::debug!(
            targeted = scope.is_some(),
            resources = intents.collections.len() + intents.aliases.len(),
            actions = plan.actions.len(),
            files_read,
            state_writes,
            load_ms = loaded.as_millis() as u64,
            observe_ms = (observed_at - loaded).as_millis() as u64,
            plan_ms = (planned - observed_at).as_millis() as u64,
            apply_ms = (applied_at - planned).as_millis() as u64,
            save_ms = (saved - applied_at).as_millis() as u64,
            print_ms = (started.elapsed() - saved).as_millis() as u64,
            "reconcile pass"
        );
        Ok(outcome)
    }

    /// A Collection whose file came back after a Retain deletion takes back the very
    /// collection it left in the engine: same resource, same engine ID. Anything else
    /// under that name (another resource, or a collection dropped and made again by
    /// someone else) still needs the adopt annotation. Returns what it took back.
    fn take_back_retained(
        &mut self,
        intents: &mut Intents,
        observed: &crate::plan::Observed,
    ) -> Vec<String> {
        let mut lines = Vec::new();
        if self.state.retained.is_empty() {
            return lines;
        }
        for index in 0..intents.collections.len() {
            let intent = &intents.collections[index];
            if intent.owned_id.is_some() || intent.deleting {
                continue;
            }
            let engine = state::engine_key(&intent.database, &intent.name);
            let Some(id) = intents.resource(&intent.key).cloned() else {
                continue;
            };
            let Some(retained) = self.state.retained.get(&engine) else {
                continue;
            };
            if retained.resource != id.key.to_string() {
                continue;
            }
            let existing = observed
                .collections
                .get(&(intent.database.clone(), intent.name.clone()))
                .map(|collection| collection.id);
            let kept: Option<i64> = retained.collection_id.parse().ok();
            let (database, name) = (intent.database.clone(), intent.name.clone());
            self.state.retained.remove(&engine);
            self.dirty = true;
            if existing.is_none() || existing != kept {
                // Gone, or replaced by someone else's: nothing to take back.
                continue;
            }
            let Some(record) = self.state.records.get_mut(&id) else {
                continue;
            };
            record.collection_id = Some(retained_id_text(kept));
            intents.collections[index].owned_id = kept;
            lines.push(format!(
                "took back collection {database} {name} (ID {}) for {id}: up kept it when \
                 the file was removed (deletionPolicy Retain)",
                retained_id_text(kept)
            ));
        }
        lines
    }

    /// Remembers the collection a deleted Collection resource left in the engine
    /// (Retain), so that its file coming back takes it back.
    fn remember_retained(&mut self, id: &ResourceId, record: &Record) {
        if id.kind != Kind::Collection || record.owner.is_some() {
            return;
        }
        let Some(collection_id) = record.collection_id.clone() else {
            return;
        };
        let policy = record
            .manifest
            .pointer("/spec/deletionPolicy")
            .and_then(|v| v.as_str());
        let policy: CollectionDeletionPolicy = policy
            .and_then(|p| serde_json::from_value(serde_json::Value::String(p.into())).ok())
            .unwrap_or_default();
        if policy != CollectionDeletionPolicy::Retain {
            return;
        }
        let database = record
            .manifest
            .pointer("/spec/database")
            .and_then(|v| v.as_str())
            .unwrap_or(crate::meta::names::DEFAULT_DATABASE);
        self.state.retained.insert(
            state::engine_key(database, &engine_name_of(id, record)),
            state::Retained {
                resource: id.key.to_string(),
                collection_id,
            },
        );
    }

    /// Prints, once per change, what each gated alias waits for (an index building, a
    /// load, a guard), so that a swap that does not happen at once says why.
    fn note_waits(&mut self, intents: &Intents, serving_plan: &serving::ServingPlan) {
        let mut waits = BTreeMap::new();
        for row in table::gate_rows(serving_plan, intents) {
            let [resource, alias, text] = <[String; 3]>::try_from(row).unwrap_or_default();
            if text.starts_with("opens") {
                continue;
            }
            if self.last_waits.get(&resource) != Some(&text) {
                println!("[{}] {resource} ({alias}) {text}", clock());
            }
            waits.insert(resource, text);
        }
        self.last_waits = waits;
    }

    fn record_for(&mut self, intents: &Intents, action: &Action) -> Option<&mut Record> {
        let id = action_key(action).and_then(|key| intents.resource(key))?;
        self.state.records.get_mut(id)
    }

    /// Records when the spec first asked each gated alias for a new target (the
    /// `requestedAt` of its swap): the wait for the gate starts there.
    fn note_requested_swaps(&mut self, intents: &Intents, serving_plan: &serving::ServingPlan) {
        for intent in &intents.aliases {
            if !serving_plan.gates.contains_key(&intent.key) {
                continue;
            }
            let Some(record) = self.state.record_mut(intents, &intent.key) else {
                continue;
            };
            let Some(from) = record.bound.clone() else {
                // A first binding is not a swap.
                continue;
            };
            let before = record.last_swap.clone();
            record.with_swap(|status| status.swap_requested(&from, &intent.target, &now_rfc3339()));
            self.dirty |= record.last_swap != before;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn print_status(
        &mut self,
        intents: &Intents,
        verdicts: &BTreeMap<crate::plan::ObjectKey, Verdict>,
        serving_plan: &serving::ServingPlan,
        errors: &HashMap<ResourceId, String>,
        released: &[(ResourceId, Record)],
        lines: &[String],
        partial: bool,
    ) {
        // A targeted pass recomputes only its resources' rows.
        let mut rows: BTreeMap<ResourceId, Vec<String>> = if partial {
            self.printed.clone()
        } else {
            BTreeMap::new()
        };
        for intent in &intents.collections {
            let Some((id, record)) = self.state.of(intents, &intent.key) else {
                continue;
            };
            let target = record
                .collection_id
                .clone()
                .unwrap_or_else(|| "-".to_string());
            let status = status_text(verdicts.get(&intent.key), errors.get(id), record.deleted);
            let serving = serving_plan.collection_text(&intent.key);
            let row = [&intent.database, &intent.name, &target, &status, &serving];
            rows.insert(id.clone(), status_row(id, row));
        }
        for intent in &intents.aliases {
            let Some((id, record)) = self.state.of(intents, &intent.key) else {
                continue;
            };
            let target = match &record.bound {
                Some(bound) if *bound == intent.target => bound.clone(),
                Some(bound) => format!("{bound} (wants {})", intent.target),
                None => format!("- (wants {})", intent.target),
            };
            let status = status_text(verdicts.get(&intent.key), errors.get(id), record.deleted);
            let swap = swap_text(record.last_swap.as_ref());
            let row = [&intent.database, &intent.alias, &target, &status, &swap];
            rows.insert(id.clone(), status_row(id, row));
        }
        for (id, row) in &self.routed_rows {
            let mut row = row.clone();
            row.push("-".to_string());
            rows.insert(id.clone(), row);
        }
        let mut gone: Vec<Vec<String>> = Vec::new();
        for (id, record) in released {
            rows.remove(id);
            gone.push(vec![
                id.to_string(),
                record
                    .manifest
                    .pointer("/spec/database")
                    .and_then(|v| v.as_str())
                    .unwrap_or("default")
                    .to_string(),
                engine_name_of(id, record),
                "-".to_string(),
                deleted_text(id.kind, record),
                "-".to_string(),
            ]);
        }
        let changed: Vec<&ResourceId> = rows
            .iter()
            .filter(|(id, row)| self.printed.get(*id) != Some(*row))
            .map(|(id, _)| id)
            .collect();
        let vanished = self.printed.keys().any(|id| !rows.contains_key(id));
        let now = clock();
        let mut out = String::new();
        // Every failure, and the first calls of a large pass (10,000 creates at a first
        // start need no line each).
        let (mut shown, mut quiet) = (0, 0);
        for line in lines {
            if shown < SHOWN_ACTIONS || line.starts_with("FAILED") {
                out.push_str(&format!("[{now}] {line}\n"));
                shown += 1;
            } else {
                quiet += 1;
            }
        }
        if quiet > 0 {
            out.push_str(&format!(
                "[{now}] ... and {quiet} more engine call(s) in this pass\n"
            ));
        }
        if changed.is_empty() && !vanished && gone.is_empty() {
            print!("{out}");
            return;
        }
        let total = rows.len();
        let ready = rows.values().filter(|row| row[4] == "READY").count();
        let headers = [
            "RESOURCE",
            "DATABASE",
            "ENGINE NAME",
            "TARGET/ID",
            "STATUS",
            "SERVING/LAST SWAP",
        ];
        let mut shown: Vec<Vec<String>> = changed
            .iter()
            .filter_map(|id| rows.get(*id))
            .take(SHOWN_ROWS)
            .cloned()
            .collect();
        shown.extend(gone.iter().cloned());
        out.push('\n');
        out.push_str(&table::render_fitted(
            &headers,
            &shown,
            table::output_width(),
        ));
        if changed.len() > SHOWN_ROWS {
            out.push_str(&format!(
                "... and {} more changed row(s)\n",
                changed.len() - SHOWN_ROWS
            ));
        }
        out.push_str(&format!(
            "{ready}/{total} resource(s) ready, {} not ready, {} deleted in this pass\n",
            total - ready,
            gone.len()
        ));
        print!("{out}");
        self.printed = rows;
    }
}

/// What a folder with broken files holds back: every problem (file, document, line),
/// and the resources that keep their last accepted manifest meanwhile.
fn blocked_report(
    problems: &[String],
    broken: &std::collections::BTreeSet<PathBuf>,
    held: &[String],
    folder: &Path,
) -> String {
    let files: Vec<String> = broken
        .iter()
        .map(|path| {
            path.strip_prefix(folder)
                .unwrap_or(path)
                .display()
                .to_string()
        })
        .collect();
    let which = if files.is_empty() {
        "the manifest folder".to_string()
    } else {
        files.join(", ")
    };
    let mut out = format!(
        "up: [{}] BLOCKED by {which}: {} problem(s); the resources of valid files apply, \
         nothing is deleted until this is fixed",
        clock(),
        problems.len()
    );
    for problem in problems {
        out.push_str(&format!("\n  - {problem}"));
    }
    if !held.is_empty() {
        let mut names: Vec<&str> = held.iter().take(HELD_SHOWN).map(String::as_str).collect();
        let more = held.len().saturating_sub(HELD_SHOWN);
        let more_text = format!("and {more} more");
        if more > 0 {
            names.push(&more_text);
        }
        out.push_str(&format!(
            "\n  kept as last accepted (their file is broken or gone): {}",
            names.join(", ")
        ));
    }
    out
}

/// The manifest `up` last accepted for `id`, as its kind.
fn recorded<T: serde::de::DeserializeOwned>(
    state_path: &Path,
    id: &ResourceId,
    record: &Record,
) -> anyhow::Result<T> {
    T::deserialize(&record.manifest)
        .with_context(|| format!("{}: recorded manifest of {id}", state_path.display()))
}

/// A row of the status table: the resource, then database, engine name, target or ID,
/// status, and serving state or last swap.
fn status_row(id: &ResourceId, cells: [&String; 5]) -> Vec<String> {
    std::iter::once(id.to_string())
        .chain(cells.into_iter().cloned())
        .collect()
}

/// The last swap of an alias: `v1 -> v2 verified 12:00:07` (or `applied`, or
/// `requested` while the gate holds it).
fn swap_text(swap: Option<&crate::crd::LastSwap>) -> String {
    let Some(swap) = swap else {
        return "-".to_string();
    };
    let (step, at) = match (&swap.verified_at, &swap.applied_at) {
        (Some(at), _) => ("verified", at),
        (None, Some(at)) => ("applied", at),
        (None, None) => ("requested", &swap.requested_at),
    };
    let time = at.get(11..19).unwrap_or(at);
    format!("{} -> {} {step} {time}", swap.from, swap.to)
}

/// Checks a swap through the engine: DescribeAlias names `to`, and DescribeCollection
/// through the alias resolves to `to` with its collection ID (when known).
async fn verify_swap(
    client: &EngineClient,
    database: &str,
    alias: &str,
    to: &str,
    expected_id: Option<i64>,
) -> Result<(), String> {
    let mut client = client.clone();
    let target = client
        .alias_target(database, alias)
        .await
        .map_err(|error| format!("DescribeAlias: {error}"))?;
    if target.as_deref() != Some(to) {
        return Err(format!(
            "DescribeAlias {alias} names {} instead of {to}",
            target.as_deref().unwrap_or("nothing")
        ));
    }
    match client.resolve(database, alias).await {
        Ok(Some((name, id))) if name == to && expected_id.is_none_or(|want| want == id) => Ok(()),
        Ok(Some((name, id))) => Err(format!(
            "DescribeCollection through alias {alias} returned {name} (ID {id}), expected {to}{}",
            expected_id
                .map(|want| format!(" (ID {want})"))
                .unwrap_or_default()
        )),
        Ok(None) => Err(format!(
            "DescribeCollection through alias {alias} found no collection"
        )),
        Err(error) => Err(format!("DescribeCollection through alias {alias}: {error}")),
    }
}

/// Takes a manifest a file declares into its record; `true` if the record changed.
fn accept(state: &mut State, id: &ResourceId, object: serde_json::Value, since: &str) -> bool {
    match state.records.get_mut(id) {
        Some(record) => {
            if record.manifest != object || record.deleted || record.owner.is_some() {
                // A file now declares it: it is the file's, no longer generated.
                record.manifest = object;
                record.deleted = false;
                record.owner = None;
                return true;
            }
            false
        }
        None => {
            state
                .records
                .insert(id.clone(), Record::accepted(object, since));
            true
        }
    }
}

/// [`accept`] for a resource whose manifest is the one it last accepted (a file whose
/// cached verdict held): only a deleted or generated record changes.
fn accept_kept(state: &mut State, id: &ResourceId) -> bool {
    match state.records.get_mut(id) {
        Some(record) if record.deleted || record.owner.is_some() => {
            record.deleted = false;
            record.owner = None;
            true
        }
        _ => false,
    }
}

fn engine_name_of(id: &ResourceId, record: &Record) -> String {
    let spec_name = record
        .manifest
        .pointer("/spec/name")
        .and_then(|v| v.as_str());
    match spec_name {
        Some(name) => name.to_string(),
        None => crate::crd::engine_name_from(&id.key.name),
    }
}

fn deleted_text(kind: Kind, record: &Record) -> String {
    let policy = record.manifest.pointer("/spec/deletionPolicy").cloned();
    // The policy as the CRD reads it: absent or unknown is the kind's default.
    fn read<P: serde::de::DeserializeOwned + Default>(policy: Option<serde_json::Value>) -> P {
        policy
            .and_then(|p| serde_json::from_value(p).ok())
            .unwrap_or_default()
    }
    match kind {
        Kind::Collection => match read(policy) {
            CollectionDeletionPolicy::Retain => "DELETED (Retain: engine collection kept)",
            CollectionDeletionPolicy::Delete => "DELETED (Delete: engine collection dropped)",
        },
        Kind::RoutedAlias => match read(policy) {
            CollectionDeletionPolicy::Retain => {
                "DELETED (alias dropped; Retain: its collections kept)"
            }
            CollectionDeletionPolicy::Delete => {
                "DELETED (alias and, Delete, its collections dropped)"
            }
        },
        Kind::CollectionAlias => match read(policy) {
            AliasDeletionPolicy::Retain => "DELETED (Retain: engine alias kept)",
            AliasDeletionPolicy::Delete => "DELETED (Delete: engine alias dropped)",
        },
    }
    .to_string()
}

fn status_text(verdict: Option<&Verdict>, error: Option<&String>, deleted: bool) -> String {
    let prefix = if deleted { "DELETING " } else { "" };
    if let Some(error) = error {
        return format!("{prefix}ERROR {error}");
    }
    match verdict {
        Some(Verdict::Ready) => format!("{prefix}READY").trim().to_string(),
        Some(Verdict::Released) => "DELETED".to_string(),
        Some(Verdict::NotReady { reason, message }) => {
            format!("{prefix}{}: {message}", reason.as_str())
        }
        None => format!("{prefix}(no verdict)"),
    }
}

fn retained_id_text(id: Option<i64>) -> String {
    id.map(|id| id.to_string()).unwrap_or_default()
}
