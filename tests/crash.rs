//! Crash safety of the real coordinator process.
//!
//! Eight concurrent clients (each its own connection) run DDL and AllocTimestamp against the
//! real `collection-operator coordinator` binary; the process is killed with SIGKILL at a
//! random moment (50–400 ms of load, or 0.6–1.6 s in one round of four), restarted on the
//! same data directory, and checked:
//!
//! - every acknowledged DDL is there (collections exist with the same ID and creation
//!   timestamp, each alias points exactly where the model says, dropped names are gone);
//! - an operation whose RPC failed because of the kill ("unknown") left its name either in
//!   the state before or in the state after it, nothing else; the state found after the
//!   restart then becomes the model (it is durable), so later rounds are exact again;
//! - the meta table is consistent: every listed alias resolves to a collection that
//!   ShowCollections lists and DescribeCollection finds, and the aliases DescribeCollection
//!   and ListAliases report per collection agree with DescribeAlias;
//! - the TSO never goes backwards: every timestamp seen after a restart (AllocTimestamp and
//!   the created timestamp of a new collection) is greater than every timestamp seen before.
//!
//! Each client owns disjoint names (`k<client>_c<i>` collections, `k<client>_a<j>` aliases)
//! and runs its operations one after another, so the last acknowledged operation on a name
//! defines that name's expected state. A client stops at its first failed RPC (the kill), so
//! it has at most one unknown operation per round.
//!
//! The RNG is seeded (printed; set `CRASH_SEED` to reproduce the choices and kill delays);
//! `CRASH_ROUNDS` overrides the number of kill rounds.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use collection_operator::proto::api::*;
use collection_operator::proto::common::{KeyValuePair, Status};
use collection_operator::proto::schema::{CollectionSchema, DataType, FieldSchema};
use common::{Client, Process};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

const CLIENTS: usize = 8;
const COLLECTIONS_PER_CLIENT: usize = 6;
const ALIASES_PER_CLIENT: usize = 4;
const DEFAULT_ROUNDS: usize = 24;
/// Milliseconds of load before the kill, in most rounds.
const KILL_AFTER_MS: std::ops::RangeInclusive<u64> = 50..=400;
/// Milliseconds of load before the kill in one round of four: long enough for periodic
/// background work of the server (store checkpoints, say) to happen under load first.
const LONG_KILL_AFTER_MS: std::ops::RangeInclusive<u64> = 600..=1600;
/// Longest a single RPC may take before it counts as failed.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a client may take to notice the kill.
const CLIENT_STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Merr codes the clients provoke on purpose.
const CODE_UNEXPECTED: i32 = 65535;
const CODE_COLLECTION_NOT_FOUND: i32 = 100;
const CODE_ALIAS_NOT_FOUND: i32 = 1600;
const CODE_ALIAS_COLLECTION_CONFLICT: i32 = 1601;
const CODE_ALIAS_ALREADY_EXIST: i32 = 1602;

fn collection_name(client: usize, index: usize) -> String {
    format!("k{client}_c{index}")
}

fn alias_name(client: usize, index: usize) -> String {
    format!("k{client}_a{index}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Collection,
    Alias,
}

/// The owner and pool index of a name the clients use, or `None` for a foreign name.
fn parse_name(name: &str) -> Option<(usize, Kind, usize)> {
    let rest = name.strip_prefix('k')?;
    let (client, rest) = rest.split_once('_')?;
    let client: usize = client.parse().ok()?;
    let (kind, index, limit) = if let Some(i) = rest.strip_prefix('c') {
        (Kind::Collection, i, COLLECTIONS_PER_CLIENT)
    } else {
        (Kind::Alias, rest.strip_prefix('a')?, ALIASES_PER_CLIENT)
    };
    let index: usize = index.parse().ok()?;
    let canonical = match kind {
        Kind::Collection => collection_name(client, index),
        Kind::Alias => alias_name(client, index),
    };
    (client < CLIENTS && index < limit && canonical == name).then_some((client, kind, index))
}

fn schema_bytes(name: &str) -> Vec<u8> {
    CollectionSchema {
        name: name.into(),
        fields: vec![
            FieldSchema {
                name: "id".into(),
                data_type: DataType::Int64 as i32,
                is_primary_key: true,
                ..Default::default()
            },
            FieldSchema {
                name: "v".into(),
                data_type: DataType::FloatVector as i32,
                type_params: vec![KeyValuePair {
                    key: "dim".into(),
                    value: "4".into(),
                }],
                ..Default::default()
            },
        ],
        ..Default::default()
    }
    .encode_to_vec()
}

/// Round and seed, for every assertion message.
#[derive(Debug, Clone, Copy)]
struct Ctx {
    round: usize,
    seed: u64,
}

impl fmt::Display for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "round {} (reproduce with CRASH_SEED={})",
            self.round, self.seed
        )
    }
}

// ---------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------

/// Expected state of one collection name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CollState {
    Absent,
    /// Present; ID and creation timestamp are `None` while not yet observed (the create
    /// was acknowledged but the DescribeCollection after it died with the server).
    Present {
        id: Option<i64>,
        created_ts: Option<u64>,
    },
}

impl CollState {
    fn is_present(self) -> bool {
        matches!(self, CollState::Present { .. })
    }

    /// Whether the observed `(id, created_ts)` (or absence) fits this expectation.
    fn admits(self, actual: Option<(i64, u64)>) -> bool {
        match (self, actual) {
            (CollState::Absent, None) => true,
            (CollState::Present { id, created_ts }, Some((actual_id, actual_ts))) => {
                id.is_none_or(|id| id == actual_id) && created_ts.is_none_or(|ts| ts == actual_ts)
            }
            _ => false,
        }
    }
}

impl fmt::Display for CollState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CollState::Absent => write!(f, "absent"),
            CollState::Present { id, created_ts } => write!(
                f,
                "present (id {}, created_ts {})",
                id.map_or("?".into(), |id| id.to_string()),
                created_ts.map_or("?".into(), |ts| ts.to_string())
            ),
        }
    }
}

/// What an operation does to the model when it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    None,
    Collection(usize, CollState),
    Alias(usize, Option<usize>),
}

/// The RPC an operation sends.
#[derive(Debug, Clone)]
enum Call {
    AllocTimestamp,
    CreateCollection(String),
    DropCollection(String),
    CreateAlias { alias: String, collection: String },
    AlterAlias { alias: String, collection: String },
    DropAlias(String),
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::AllocTimestamp => write!(f, "AllocTimestamp"),
            Call::CreateCollection(name) => write!(f, "CreateCollection {name}"),
            Call::DropCollection(name) => write!(f, "DropCollection {name}"),
            Call::CreateAlias { alias, collection } => {
                write!(f, "CreateAlias {alias} -> {collection}")
            }
            Call::AlterAlias { alias, collection } => {
                write!(f, "AlterAlias {alias} -> {collection}")
            }
            Call::DropAlias(alias) => write!(f, "DropAlias {alias}"),
        }
    }
}

/// An operation with the answer the model predicts.
#[derive(Debug, Clone)]
struct Op {
    call: Call,
    /// `0` = success, else the merr code of the expected refusal.
    expect_code: i32,
    effect: Effect,
}

/// An operation whose RPC failed: it may or may not have been applied.
#[derive(Debug, Clone)]
struct Unknown {
    op: Op,
    error: String,
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    acknowledged: usize,
    refused_as_expected: usize,
    timestamps: usize,
    unknown_applied: usize,
    unknown_not_applied: usize,
    unknown_no_effect: usize,
}

impl Stats {
    fn add(&mut self, other: Stats) {
        self.acknowledged += other.acknowledged;
        self.refused_as_expected += other.refused_as_expected;
        self.timestamps += other.timestamps;
        self.unknown_applied += other.unknown_applied;
        self.unknown_not_applied += other.unknown_not_applied;
        self.unknown_no_effect += other.unknown_no_effect;
    }

    fn since(self, earlier: Stats) -> Stats {
        Stats {
            acknowledged: self.acknowledged - earlier.acknowledged,
            refused_as_expected: self.refused_as_expected - earlier.refused_as_expected,
            timestamps: self.timestamps - earlier.timestamps,
            unknown_applied: self.unknown_applied - earlier.unknown_applied,
            unknown_not_applied: self.unknown_not_applied - earlier.unknown_not_applied,
            unknown_no_effect: self.unknown_no_effect - earlier.unknown_no_effect,
        }
    }
}

fn total_stats(models: &[ClientModel]) -> Stats {
    let mut total = Stats::default();
    for model in models {
        total.add(model.stats);
    }
    total
}

/// One client's names and what the acknowledged operations imply for them.
#[derive(Debug, Clone)]
struct ClientModel {
    client: usize,
    collections: Vec<CollState>,
    /// Alias index → collection index it points to.
    aliases: Vec<Option<usize>>,
    /// The operation of this round whose outcome is unknown.
    unknown: Option<Unknown>,
    /// Largest timestamp this client has seen (they must increase strictly).
    last_ts: u64,
    /// Name → the last acknowledged operation on it, for messages.
    last_ack: HashMap<String, String>,
    stats: Stats,
}

impl ClientModel {
    fn new(client: usize) -> Self {
        Self {
            client,
            collections: vec![CollState::Absent; COLLECTIONS_PER_CLIENT],
            aliases: vec![None; ALIASES_PER_CLIENT],
            unknown: None,
            last_ts: 0,
            last_ack: HashMap::new(),
            stats: Stats::default(),
        }
    }

    fn coll(&self, index: usize) -> String {
        collection_name(self.client, index)
    }

    fn alias(&self, index: usize) -> String {
        alias_name(self.client, index)
    }

    fn has_alias(&self, collection: usize) -> bool {
        self.aliases.contains(&Some(collection))
    }

    fn history(&self, name: &str) -> String {
        self.last_ack
            .get(name)
            .cloned()
            .unwrap_or_else(|| "no acknowledged operation".into())
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::None => {}
            Effect::Collection(index, state) => self.collections[index] = state,
            Effect::Alias(index, target) => self.aliases[index] = target,
        }
    }

    /// Picks the next operation; valid ones mostly, some refusals and idempotent no-ops.
    fn choose(&self, rng: &mut StdRng) -> Op {
        let present: Vec<usize> = (0..COLLECTIONS_PER_CLIENT)
            .filter(|&i| self.collections[i].is_present())
            .collect();
        let absent: Vec<usize> = (0..COLLECTIONS_PER_CLIENT)
            .filter(|&i| !self.collections[i].is_present())
            .collect();
        let droppable: Vec<usize> = present
            .iter()
            .copied()
            .filter(|&i| !self.has_alias(i))
            .collect();
        let with_alias: Vec<usize> = present
            .iter()
            .copied()
            .filter(|&i| self.has_alias(i))
            .collect();
        let bound: Vec<usize> = (0..ALIASES_PER_CLIENT)
            .filter(|&a| self.aliases[a].is_some())
            .collect();
        let unbound: Vec<usize> = (0..ALIASES_PER_CLIENT)
            .filter(|&a| self.aliases[a].is_none())
            .collect();
        let pick = |rng: &mut StdRng, from: &[usize]| from[rng.random_range(0..from.len())];
        let ok = |call: Call, effect: Effect| Op {
            call,
            expect_code: 0,
            effect,
        };
        let refused = |call: Call, code: i32| Op {
            call,
            expect_code: code,
            effect: Effect::None,
        };

        let mut candidates: Vec<(u32, u8)> = vec![(3, 0)];
        if !absent.is_empty() {
            candidates.push((if present.len() < 3 { 6 } else { 3 }, 1));
        }
        if !droppable.is_empty() && present.len() > 2 {
            candidates.push((2, 2));
        }
        if !unbound.is_empty() && !present.is_empty() {
            candidates.push((3, 3));
        }
        if !bound.is_empty() && present.len() >= 2 {
            candidates.push((5, 4));
        }
        if !bound.is_empty() {
            candidates.push((1, 5));
        }
        candidates.push((2, 6));
        let total: u32 = candidates.iter().map(|c| c.0).sum();
        let mut roll = rng.random_range(0..total);
        let mut kind = 0;
        for (weight, k) in &candidates {
            if roll < *weight {
                kind = *k;
                break;
            }
            roll -= weight;
        }
        match kind {
            1 => {
                let c = pick(rng, &absent);
                ok(
                    Call::CreateCollection(self.coll(c)),
                    Effect::Collection(
                        c,
                        CollState::Present {
                            id: None,
                            created_ts: None,
                        },
                    ),
                )
            }
            2 => {
                let c = pick(rng, &droppable);
                ok(
                    Call::DropCollection(self.coll(c)),
                    Effect::Collection(c, CollState::Absent),
                )
            }
            3 => {
                let a = pick(rng, &unbound);
                let c = pick(rng, &present);
                ok(
                    Call::CreateAlias {
                        alias: self.alias(a),
                        collection: self.coll(c),
                    },
                    Effect::Alias(a, Some(c)),
                )
            }
            4 => {
                // Swap an alias to another of this client's collections.
                let a = pick(rng, &bound);
                let current = self.aliases[a];
                let others: Vec<usize> = present
                    .iter()
                    .copied()
                    .filter(|&c| Some(c) != current)
                    .collect();
                let c = pick(rng, &others);
                ok(
                    Call::AlterAlias {
                        alias: self.alias(a),
                        collection: self.coll(c),
                    },
                    Effect::Alias(a, Some(c)),
                )
            }
            5 => {
                let a = pick(rng, &bound);
                ok(Call::DropAlias(self.alias(a)), Effect::Alias(a, None))
            }
            6 => {
                // Refusals and idempotent no-ops: acknowledged answers that change nothing.
                let mut options: Vec<Op> = Vec::new();
                if !with_alias.is_empty() {
                    let c = pick(rng, &with_alias);
                    options.push(refused(Call::DropCollection(self.coll(c)), CODE_UNEXPECTED));
                }
                if !bound.is_empty() && present.len() >= 2 {
                    let a = pick(rng, &bound);
                    let current = self.aliases[a];
                    let others: Vec<usize> = present
                        .iter()
                        .copied()
                        .filter(|&c| Some(c) != current)
                        .collect();
                    let c = pick(rng, &others);
                    options.push(refused(
                        Call::CreateAlias {
                            alias: self.alias(a),
                            collection: self.coll(c),
                        },
                        CODE_ALIAS_ALREADY_EXIST,
                    ));
                }
                if !bound.is_empty() {
                    let a = pick(rng, &bound);
                    let c = self.aliases[a].expect("bound alias");
                    options.push(ok(
                        Call::CreateAlias {
                            alias: self.alias(a),
                            collection: self.coll(c),
                        },
                        Effect::None,
                    ));
                }
                if present.len() >= 2 {
                    let name = pick(rng, &present);
                    let target = pick(rng, &present);
                    options.push(refused(
                        Call::CreateAlias {
                            alias: self.coll(name),
                            collection: self.coll(target),
                        },
                        CODE_ALIAS_COLLECTION_CONFLICT,
                    ));
                }
                if !unbound.is_empty() {
                    let a = pick(rng, &unbound);
                    options.push(ok(Call::DropAlias(self.alias(a)), Effect::None));
                    if !present.is_empty() {
                        let c = pick(rng, &present);
                        options.push(refused(
                            Call::AlterAlias {
                                alias: self.alias(a),
                                collection: self.coll(c),
                            },
                            CODE_ALIAS_NOT_FOUND,
                        ));
                    }
                }
                if !bound.is_empty() && !absent.is_empty() {
                    let a = pick(rng, &bound);
                    let c = pick(rng, &absent);
                    options.push(refused(
                        Call::AlterAlias {
                            alias: self.alias(a),
                            collection: self.coll(c),
                        },
                        CODE_COLLECTION_NOT_FOUND,
                    ));
                }
                if !absent.is_empty() {
                    let c = pick(rng, &absent);
                    options.push(ok(Call::DropCollection(self.coll(c)), Effect::None));
                }
                if options.is_empty() {
                    ok(Call::AllocTimestamp, Effect::None)
                } else {
                    let i = rng.random_range(0..options.len());
                    options.swap_remove(i)
                }
            }
            _ => ok(Call::AllocTimestamp, Effect::None),
        }
    }
}

// ---------------------------------------------------------------------------------------
// RPC plumbing
// ---------------------------------------------------------------------------------------

async fn try_connect(addr: SocketAddr) -> Result<Client, tonic::transport::Error> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await?;
    Ok(Client::new(channel))
}

/// Connects, retrying for a while (the machine is shared and may be slow).
async fn connect_retry(addr: SocketAddr, ctx: Ctx) -> Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match try_connect(addr).await {
            Ok(client) => return client,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "{ctx}: cannot connect to the coordinator at {addr}: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// An RPC bounded by [`RPC_TIMEOUT`]; transport failures and timeouts become `Err(text)`.
async fn rpc<T>(
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, String> {
    match tokio::time::timeout(RPC_TIMEOUT, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(format!("gRPC {:?}: {}", status.code(), status.message())),
        Err(_) => Err(format!("no answer within {RPC_TIMEOUT:?}")),
    }
}

/// An RPC of the verifier: the server is up, so any failure fails the test.
async fn must<T>(
    ctx: Ctx,
    what: &str,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> T {
    match rpc(call).await {
        Ok(answer) => answer,
        Err(error) => panic!("{ctx}: verification RPC {what} failed after restart: {error}"),
    }
}

fn code_of(status: &Option<Status>) -> (i32, String) {
    status
        .as_ref()
        .map_or((0, String::new()), |s| (s.code, s.reason.clone()))
}

/// Sends `call`; `Ok((status, timestamp))` when the server answered.
async fn send(client: &mut Client, call: &Call) -> Result<(Option<Status>, u64), String> {
    match call {
        Call::AllocTimestamp => rpc(client.alloc_timestamp(AllocTimestampRequest::default()))
            .await
            .map(|r| (r.status, r.timestamp)),
        Call::CreateCollection(name) => rpc(client.create_collection(CreateCollectionRequest {
            collection_name: name.clone(),
            schema: schema_bytes(name),
            ..Default::default()
        }))
        .await
        .map(|s| (Some(s), 0)),
        Call::DropCollection(name) => rpc(client.drop_collection(DropCollectionRequest {
            collection_name: name.clone(),
            ..Default::default()
        }))
        .await
        .map(|s| (Some(s), 0)),
        Call::CreateAlias { alias, collection } => rpc(client.create_alias(CreateAliasRequest {
            alias: alias.clone(),
            collection_name: collection.clone(),
            ..Default::default()
        }))
        .await
        .map(|s| (Some(s), 0)),
        Call::AlterAlias { alias, collection } => rpc(client.alter_alias(AlterAliasRequest {
            alias: alias.clone(),
            collection_name: collection.clone(),
            ..Default::default()
        }))
        .await
        .map(|s| (Some(s), 0)),
        Call::DropAlias(alias) => rpc(client.drop_alias(DropAliasRequest {
            alias: alias.clone(),
            ..Default::default()
        }))
        .await
        .map(|s| (Some(s), 0)),
    }
}

// ---------------------------------------------------------------------------------------
// A client during one round of load
// ---------------------------------------------------------------------------------------

/// Runs operations until the first failed RPC (the kill). `bound` is the largest timestamp
/// seen before this round. `Err` is a violation.
async fn run_client(
    mut client: Client,
    mut model: ClientModel,
    mut rng: StdRng,
    ctx: Ctx,
    bound: u64,
) -> Result<ClientModel, String> {
    let who = model.client;
    let check_ts = |model: &mut ClientModel, ts: u64, what: &str| -> Result<(), String> {
        if ts <= bound {
            return Err(format!(
                "{ctx}: client {who}: TSO went backwards: {what} = {ts} is not above {bound}, the largest timestamp seen before the last kill"
            ));
        }
        if ts <= model.last_ts {
            return Err(format!(
                "{ctx}: client {who}: timestamps not increasing: {what} = {ts} after {}",
                model.last_ts
            ));
        }
        model.last_ts = ts;
        Ok(())
    };
    loop {
        let op = model.choose(&mut rng);
        let (status, ts) = match send(&mut client, &op.call).await {
            Ok(answer) => answer,
            Err(error) => {
                model.unknown = Some(Unknown { op, error });
                return Ok(model);
            }
        };
        let (code, reason) = code_of(&status);
        if code != op.expect_code {
            return Err(format!(
                "{ctx}: client {who}: {} answered code {code} ({reason:?}), the model expects code {} \
                 (model: collections {:?}, aliases {:?})",
                op.call, op.expect_code, model.collections, model.aliases
            ));
        }
        if code != 0 {
            model.stats.refused_as_expected += 1;
            continue;
        }
        if let Call::AllocTimestamp = op.call {
            check_ts(&mut model, ts, "AllocTimestamp")?;
            model.stats.timestamps += 1;
            continue;
        }
        model.stats.acknowledged += 1;
        model.apply(op.effect);
        let note = format!("{} (acknowledged in round {})", op.call, ctx.round);
        match op.effect {
            Effect::Collection(c, _) => {
                model.last_ack.insert(model.coll(c), note);
            }
            Effect::Alias(a, _) => {
                model.last_ack.insert(model.alias(a), note);
            }
            Effect::None => {}
        }
        if let (Call::CreateCollection(name), Effect::Collection(c, _)) = (&op.call, op.effect) {
            // Learn the identity, to check it is kept across restarts.
            let described = match rpc(client.describe_collection(DescribeCollectionRequest {
                collection_name: name.clone(),
                ..Default::default()
            }))
            .await
            {
                Ok(described) => described,
                // The server died; the create itself was acknowledged.
                Err(_) => return Ok(model),
            };
            let (code, reason) = code_of(&described.status);
            if code != 0 {
                return Err(format!(
                    "{ctx}: client {who}: DescribeCollection {name} right after its acknowledged create answered {code} ({reason:?})"
                ));
            }
            check_ts(
                &mut model,
                described.created_timestamp,
                &format!("created_timestamp of {name}"),
            )?;
            model.collections[c] = CollState::Present {
                id: Some(described.collection_id),
                created_ts: Some(described.created_timestamp),
            };
        }
    }
}

// ---------------------------------------------------------------------------------------
// Verification after a restart
// ---------------------------------------------------------------------------------------

/// Checks the restarted coordinator against the models and resolves the unknown operations
/// to what is now durable. `round_bound` is the largest timestamp seen before the round that
/// ended with the kill, `kill_bound` the largest seen before the kill. Returns the largest
/// timestamp seen here.
async fn verify(
    addr: SocketAddr,
    models: &mut [ClientModel],
    round_bound: u64,
    kill_bound: u64,
    ctx: Ctx,
) -> u64 {
    let mut client = connect_retry(addr, ctx).await;
    let mut seen = kill_bound;

    // The TSO resumes above everything handed out before the kill.
    let ts = must(
        ctx,
        "AllocTimestamp",
        client.alloc_timestamp(AllocTimestampRequest::default()),
    )
    .await;
    assert_eq!(code_of(&ts.status).0, 0, "{ctx}: AllocTimestamp: {ts:?}");
    assert!(
        ts.timestamp > kill_bound,
        "{ctx}: TSO went backwards across the restart: AllocTimestamp = {} is not above {kill_bound}, \
         the largest timestamp seen before the kill",
        ts.timestamp
    );
    seen = seen.max(ts.timestamp);

    // What the server has.
    let shown = must(
        ctx,
        "ShowCollections",
        client.show_collections(ShowCollectionsRequest::default()),
    )
    .await;
    assert_eq!(
        code_of(&shown.status).0,
        0,
        "{ctx}: ShowCollections: {shown:?}"
    );
    assert_eq!(shown.collection_names.len(), shown.collection_ids.len());
    assert_eq!(shown.collection_names.len(), shown.created_timestamps.len());
    let mut collections: BTreeMap<String, (i64, u64)> = BTreeMap::new();
    for ((name, id), created) in shown
        .collection_names
        .iter()
        .zip(&shown.collection_ids)
        .zip(&shown.created_timestamps)
    {
        assert!(
            collections.insert(name.clone(), (*id, *created)).is_none(),
            "{ctx}: ShowCollections lists {name} twice"
        );
        seen = seen.max(*created);
    }
    let listed = must(
        ctx,
        "ListAliases",
        client.list_aliases(ListAliasesRequest::default()),
    )
    .await;
    assert_eq!(
        code_of(&listed.status).0,
        0,
        "{ctx}: ListAliases: {listed:?}"
    );
    let alias_set: BTreeSet<String> = listed.aliases.iter().cloned().collect();
    assert_eq!(
        alias_set.len(),
        listed.aliases.len(),
        "{ctx}: ListAliases lists an alias twice: {:?}",
        listed.aliases
    );

    // Every alias resolves to a listed collection, and DescribeCollection by alias agrees.
    let mut alias_targets: BTreeMap<String, String> = BTreeMap::new();
    for alias in &alias_set {
        let described = must(
            ctx,
            "DescribeAlias",
            client.describe_alias(DescribeAliasRequest {
                alias: alias.clone(),
                ..Default::default()
            }),
        )
        .await;
        let (code, reason) = code_of(&described.status);
        assert_eq!(
            code, 0,
            "{ctx}: alias {alias} is listed by ListAliases but DescribeAlias answers {code} ({reason:?})"
        );
        let target = described.collection;
        assert!(
            collections.contains_key(&target),
            "{ctx}: alias {alias} points to {target:?}, which ShowCollections does not list \
             (collections: {:?})",
            collections.keys().collect::<Vec<_>>()
        );
        let by_alias = must(
            ctx,
            "DescribeCollection by alias",
            client.describe_collection(DescribeCollectionRequest {
                collection_name: alias.clone(),
                ..Default::default()
            }),
        )
        .await;
        let (code, reason) = code_of(&by_alias.status);
        assert_eq!(
            code, 0,
            "{ctx}: DescribeCollection by alias {alias} (-> {target}) answers {code} ({reason:?})"
        );
        let real_name = by_alias.schema.as_ref().map(|s| s.name.clone());
        assert_eq!(
            real_name.as_deref(),
            Some(target.as_str()),
            "{ctx}: DescribeCollection by alias {alias} names another collection than DescribeAlias"
        );
        assert_eq!(
            by_alias.collection_id, collections[&target].0,
            "{ctx}: DescribeCollection by alias {alias}: collection id differs from ShowCollections"
        );
        assert!(
            by_alias.aliases.contains(alias),
            "{ctx}: DescribeCollection by alias {alias} does not list the alias: {:?}",
            by_alias.aliases
        );
        alias_targets.insert(alias.clone(), target);
    }

    // Every collection is found, and its aliases agree with DescribeAlias.
    for (name, (id, created)) in &collections {
        let described = must(
            ctx,
            "DescribeCollection",
            client.describe_collection(DescribeCollectionRequest {
                collection_name: name.clone(),
                ..Default::default()
            }),
        )
        .await;
        let (code, reason) = code_of(&described.status);
        assert_eq!(
            code, 0,
            "{ctx}: collection {name} is listed by ShowCollections but DescribeCollection answers {code} ({reason:?})"
        );
        assert_eq!(
            (described.collection_id, described.created_timestamp),
            (*id, *created),
            "{ctx}: collection {name}: DescribeCollection (id, created_ts) differ from ShowCollections"
        );
        let expected: BTreeSet<&String> = alias_targets
            .iter()
            .filter(|(_, target)| *target == name)
            .map(|(alias, _)| alias)
            .collect();
        let described_aliases: BTreeSet<&String> = described.aliases.iter().collect();
        assert_eq!(
            described_aliases, expected,
            "{ctx}: collection {name}: DescribeCollection aliases vs DescribeAlias of every listed alias"
        );
        let of_collection = must(
            ctx,
            "ListAliases of a collection",
            client.list_aliases(ListAliasesRequest {
                collection_name: name.clone(),
                ..Default::default()
            }),
        )
        .await;
        assert_eq!(
            code_of(&of_collection.status).0,
            0,
            "{ctx}: ListAliases {name}: {of_collection:?}"
        );
        let of_collection: BTreeSet<&String> = of_collection.aliases.iter().collect();
        assert_eq!(
            of_collection, expected,
            "{ctx}: collection {name}: ListAliases(collection) vs DescribeAlias of every listed alias"
        );
    }

    // Nothing exists that no client created.
    for name in collections.keys() {
        assert!(
            matches!(parse_name(name), Some((_, Kind::Collection, _))),
            "{ctx}: ShowCollections lists {name:?}, which no client ever created"
        );
    }
    for name in alias_targets.keys() {
        assert!(
            matches!(parse_name(name), Some((_, Kind::Alias, _))),
            "{ctx}: ListAliases lists {name:?}, which no client ever created"
        );
    }

    // Every acknowledged operation is there; an unknown one applied wholly or not at all.
    for model in models.iter_mut() {
        let unknown = model.unknown.take();
        let unknown_effect = unknown.as_ref().map_or(Effect::None, |u| u.op.effect);
        let describe_unknown = || {
            unknown.as_ref().map_or(String::new(), |u| {
                format!(
                    "; unknown operation {} (its RPC failed: {})",
                    u.op.call, u.error
                )
            })
        };
        for c in 0..COLLECTIONS_PER_CLIENT {
            let name = model.coll(c);
            let actual = collections.get(&name).copied();
            let before = model.collections[c];
            let after = match unknown_effect {
                Effect::Collection(i, state) if i == c => Some(state),
                _ => None,
            };
            let fits_before = before.admits(actual);
            let fits_after = after.is_some_and(|state| state.admits(actual));
            assert!(
                fits_before || fits_after,
                "{ctx}: collection {name}: expected {before}{}, actual {}; last acknowledged: {}{}",
                after.map_or(String::new(), |a| format!(" or {a}")),
                actual.map_or("absent".into(), |(id, ts)| format!(
                    "present (id {id}, created_ts {ts})"
                )),
                model.history(&name),
                describe_unknown()
            );
            if after.is_some() {
                if fits_before {
                    model.stats.unknown_not_applied += 1;
                } else {
                    model.stats.unknown_applied += 1;
                }
                if let (false, Some((_, created))) = (before.is_present(), actual) {
                    // Created by the unknown operation, so during the last round.
                    assert!(
                        created > round_bound,
                        "{ctx}: collection {name} created by an unknown operation of the last round \
                         has created_ts {created}, not above {round_bound} seen before that round"
                    );
                }
            }
            model.collections[c] = match actual {
                None => CollState::Absent,
                Some((id, created_ts)) => CollState::Present {
                    id: Some(id),
                    created_ts: Some(created_ts),
                },
            };
        }
        for a in 0..ALIASES_PER_CLIENT {
            let name = model.alias(a);
            let actual = alias_targets.get(&name).cloned();
            let show = |target: Option<usize>| {
                target.map_or("absent".to_string(), |c| format!("-> {}", model.coll(c)))
            };
            let before = model.aliases[a];
            let after = match unknown_effect {
                Effect::Alias(i, target) if i == a => Some(target),
                _ => None,
            };
            let expected_name = |target: Option<usize>| target.map(|c| model.coll(c));
            let fits_before = expected_name(before) == actual;
            let fits_after = after.is_some_and(|t| expected_name(t) == actual);
            assert!(
                fits_before || fits_after,
                "{ctx}: alias {name}: expected {}{}, actual {}; last acknowledged: {}{}",
                show(before),
                after.map_or(String::new(), |t| format!(" or {}", show(t))),
                actual
                    .as_ref()
                    .map_or("absent".into(), |t| format!("-> {t}")),
                model.history(&name),
                describe_unknown()
            );
            if after.is_some() {
                if fits_before {
                    model.stats.unknown_not_applied += 1;
                } else {
                    model.stats.unknown_applied += 1;
                }
            }
            model.aliases[a] = actual.map(|target| match parse_name(&target) {
                Some((owner, Kind::Collection, c)) if owner == model.client => c,
                _ => panic!(
                    "{ctx}: alias {name} of client {} points to {target}, another client's collection",
                    model.client
                ),
            });
        }
        if unknown.is_some() && unknown_effect == Effect::None {
            model.stats.unknown_no_effect += 1;
        }
    }
    seen
}

// ---------------------------------------------------------------------------------------
// The process
// ---------------------------------------------------------------------------------------

/// Starts the real coordinator on `data_dir` and a fresh port; fails fast if it exits.
/// An exit is retried on another port twice (someone else may have taken the port between
/// [`common::free_port`] and the bind); a coordinator that cannot recover fails every time.
async fn start_coordinator(data_dir: &Path, ctx: Ctx) -> Process {
    let data_dir = data_dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut exits = Vec::new();
        for _attempt in 0..3 {
            let port = common::free_port();
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
            let mut child = Command::new(common::binary())
                .args(["coordinator", "--data-dir"])
                .arg(&data_dir)
                .args(["--listen", &addr.to_string()])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("coordinator starts");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if std::net::TcpStream::connect(addr).is_ok() {
                    return Process { child, addr };
                }
                if let Ok(Some(exit)) = child.try_wait() {
                    exits.push(format!("{exit} (port {port})"));
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{ctx}: the coordinator did not listen on {addr} within 30 s");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!(
            "{ctx}: the coordinator exited during start-up on {}: {exits:?}; see its stderr above",
            data_dir.display()
        );
    })
    .await
    .expect("start-up task")
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not an unsigned integer")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_ddl_and_tso_survive_sigkill() {
    let seed = env_u64("CRASH_SEED").unwrap_or_else(rand::random);
    let rounds = env_u64("CRASH_ROUNDS").map_or(DEFAULT_ROUNDS, |r| r as usize);
    eprintln!("crash test: seed {seed} (rerun with CRASH_SEED={seed}), {rounds} kill rounds");
    let started = Instant::now();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut models: Vec<ClientModel> = (0..CLIENTS).map(ClientModel::new).collect();
    // Largest timestamp seen so far (before the current round's load).
    let mut bound = 0u64;
    // Largest timestamp seen before the previous round began.
    let mut round_bound = 0u64;

    for round in 1..=rounds + 1 {
        let ctx = Ctx { round, seed };
        let process = start_coordinator(data_dir.path(), ctx).await;
        if round > 1 {
            let verify_ctx = Ctx {
                round: round - 1,
                seed,
            };
            let seen = verify(process.addr, &mut models, round_bound, bound, verify_ctx).await;
            bound = bound.max(seen);
        }
        if round > rounds {
            process.kill9();
            break;
        }

        // Load: every client on its own connection, until the kill.
        let mut clients = Vec::with_capacity(CLIENTS);
        for _ in 0..CLIENTS {
            clients.push(connect_retry(process.addr, ctx).await);
        }
        let before = total_stats(&models);
        let mut handles = Vec::with_capacity(CLIENTS);
        for (k, client) in clients.into_iter().enumerate() {
            let model = models[k].clone();
            let client_rng = StdRng::seed_from_u64(
                seed ^ (round as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((k as u64) << 56),
            );
            handles.push(tokio::spawn(run_client(
                client, model, client_rng, ctx, bound,
            )));
        }
        let delay = if rng.random_ratio(1, 4) {
            rng.random_range(LONG_KILL_AFTER_MS)
        } else {
            rng.random_range(KILL_AFTER_MS)
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        tokio::task::spawn_blocking(move || process.kill9())
            .await
            .expect("kill");

        let mut violations = Vec::new();
        for (k, handle) in handles.into_iter().enumerate() {
            match tokio::time::timeout(CLIENT_STOP_TIMEOUT, handle).await {
                Err(_) => panic!(
                    "{ctx}: client {k} did not notice the kill within {CLIENT_STOP_TIMEOUT:?}"
                ),
                Ok(Err(join)) => panic!("{ctx}: client {k} panicked: {join}"),
                Ok(Ok(Err(violation))) => violations.push(violation),
                Ok(Ok(Ok(model))) => models[k] = model,
            }
        }
        assert!(violations.is_empty(), "{}", violations.join("\n"));
        round_bound = bound;
        bound = models.iter().map(|m| m.last_ts).fold(bound, u64::max);
        let round_stats = total_stats(&models).since(before);
        let unknown: Vec<String> = models
            .iter()
            .filter_map(|m| m.unknown.as_ref().map(|u| u.op.call.to_string()))
            .collect();
        eprintln!(
            "round {round}: killed after {delay} ms: {} DDL acknowledged, {} refused as expected, \
             {} timestamps, {} unknown {:?}",
            round_stats.acknowledged,
            round_stats.refused_as_expected,
            round_stats.timestamps,
            unknown.len(),
            unknown
        );
    }

    let total = total_stats(&models);
    assert!(
        total.acknowledged > 0,
        "seed {seed}: no DDL was acknowledged in {rounds} rounds; nothing was tested"
    );
    let collections: usize = models
        .iter()
        .map(|m| m.collections.iter().filter(|c| c.is_present()).count())
        .sum();
    let aliases: usize = models
        .iter()
        .map(|m| m.aliases.iter().filter(|a| a.is_some()).count())
        .sum();
    eprintln!(
        "crash test: seed {seed}: {rounds} kills in {:.1} s; unknown operations: {} applied, {} not applied, \
         {} without effect; final state {collections} collections, {aliases} aliases",
        started.elapsed().as_secs_f64(),
        total.unknown_applied,
        total.unknown_not_applied,
        total.unknown_no_effect,
    );
}
