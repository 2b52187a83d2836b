//! Table-driven tests of the planner: one row per rule, small builders for intents and
//! engine state. Names: resources `products-v1` manage engine collections `products_v1`;
//! everything lives in namespace `default` and database `default` unless a row says
//! otherwise.

use super::*;
use crate::crd::{CoordinatorRef, DataType, FieldSpec, engine_name_from};

// ---------------------------------------------------------------------------------------
// Builders

const DB: &str = "default";
const CREATED: &str = "2024-05-01T10:00:00Z";
const EARLIER: &str = "2024-04-01T10:00:00Z";
const LATER: &str = "2024-06-01T10:00:00Z";

fn key(name: &str) -> ObjectKey {
    ObjectKey {
        namespace: "default".to_string(),
        name: name.to_string(),
    }
}

fn seniority(created: &str, name: &str) -> Seniority {
    Seniority {
        created: created.to_string(),
        key: key(name),
    }
}

fn spec() -> CollectionSpec {
    CollectionSpec {
        coordinator_ref: CoordinatorRef {
            name: "milvus".to_string(),
        },
        database: DB.to_string(),
        name: None,
        description: None,
        fields: vec![FieldSpec {
            name: "id".to_string(),
            data_type: DataType::Int64,
            is_primary_key: true,
            auto_id: false,
            dim: None,
            max_length: None,
            element_type: None,
            max_capacity: None,
            nullable: false,
            is_partition_key: false,
            description: None,
        }],
        enable_dynamic_field: false,
        shards_num: None,
        consistency_level: None,
        properties: None,
        deletion_policy: DeletionPolicy::Retain,
        indexes: Vec::new(),
        load: None,
    }
}

/// Tweaks a value in a builder chain: `coll("a").with(|c| c.adopt = true)`.
trait With: Sized {
    fn with(mut self, change: impl FnOnce(&mut Self)) -> Self {
        change(&mut self);
        self
    }
}
impl With for CollectionIntent {}
impl With for AliasIntent {}

/// A live `Collection` resource `name` managing engine collection `name` with `-` as `_`.
fn coll(name: &str) -> CollectionIntent {
    CollectionIntent {
        key: key(name),
        seniority: seniority(CREATED, name),
        database: DB.to_string(),
        name: engine_name_from(name),
        spec: spec(),
        adopt: false,
        paused: false,
        deleting: false,
        owned_id: None,
    }
}

/// A `Collection` being deleted that owns `id`, with `deletionPolicy: Delete`.
fn coll_deleting(name: &str, id: i64) -> CollectionIntent {
    coll(name).with(|c| {
        c.deleting = true;
        c.owned_id = Some(id);
        c.spec.deletion_policy = DeletionPolicy::Delete;
    })
}

/// A live `CollectionAlias` resource `name` for engine alias `name`, targeting `target`.
fn alias(name: &str, target: &str) -> AliasIntent {
    AliasIntent {
        key: key(name),
        seniority: seniority(CREATED, name),
        database: DB.to_string(),
        alias: engine_name_from(name),
        target: target.to_string(),
        switch_policy: SwitchPolicy::WhenTargetReady,
        deletion_policy: AliasDeletionPolicy::Delete,
        adopt: false,
        paused: false,
        deleting: false,
        bound: None,
    }
}

/// The same alias bound (by this resource) to `bound` earlier.
fn alias_bound(name: &str, target: &str, bound: &str) -> AliasIntent {
    alias(name, target).with(|a| a.bound = Some(bound.to_string()))
}

/// Engine state. `alias` also lists the alias on its target collection, as the engine
/// reports it; `foreign_alias` lists one only there (not observed by name).
#[derive(Clone)]
struct Engine(Observed);

/// An engine holding only database `default`.
fn engine() -> Engine {
    Engine(Observed::default()).database(DB)
}

impl Engine {
    fn database(mut self, database: &str) -> Self {
        self.0.databases.insert(database.to_string());
        self
    }
    fn without_database(mut self, database: &str) -> Self {
        self.0.databases.remove(database);
        self
    }
    fn collection(mut self, name: &str, id: i64) -> Self {
        self.0.collections.insert(
            (DB.to_string(), name.to_string()),
            ObservedCollection {
                id,
                aliases: BTreeSet::new(),
            },
        );
        self
    }
    fn alias(mut self, alias: &str, target: &str) -> Self {
        self.0
            .aliases
            .insert((DB.to_string(), alias.to_string()), target.to_string());
        self.foreign_alias(target, alias)
    }
    fn foreign_alias(mut self, target: &str, alias: &str) -> Self {
        if let Some(collection) = self
            .0
            .collections
            .get_mut(&(DB.to_string(), target.to_string()))
        {
            collection.aliases.insert(alias.to_string());
        }
        self
    }
}

// Expected actions.

fn create_db(database: &str) -> Action {
    Action::CreateDatabase {
        database: database.to_string(),
    }
}
fn create_coll(intent: &CollectionIntent) -> Action {
    Action::CreateCollection {
        key: intent.key.clone(),
        database: intent.database.clone(),
        name: intent.name.clone(),
        spec: Box::new(intent.spec.clone()),
    }
}
fn adopt_coll(name: &str, id: i64) -> Action {
    Action::AdoptCollection {
        key: key(name),
        database: DB.to_string(),
        name: engine_name_from(name),
        id,
    }
}
fn drop_coll(name: &str) -> Action {
    Action::DropCollection {
        key: key(name),
        database: DB.to_string(),
        name: engine_name_from(name),
    }
}
fn create_alias(name: &str, target: &str) -> Action {
    Action::CreateAlias {
        key: key(name),
        database: DB.to_string(),
        alias: engine_name_from(name),
        target: target.to_string(),
    }
}
fn alter_alias(name: &str, from: &str, to: &str) -> Action {
    Action::AlterAlias {
        key: key(name),
        database: DB.to_string(),
        alias: engine_name_from(name),
        from: from.to_string(),
        to: to.to_string(),
    }
}
fn adopt_alias(name: &str, target: &str) -> Action {
    Action::AdoptAlias {
        key: key(name),
        database: DB.to_string(),
        alias: engine_name_from(name),
        target: target.to_string(),
    }
}
fn drop_alias(name: &str) -> Action {
    Action::DropAlias {
        key: key(name),
        database: DB.to_string(),
        alias: engine_name_from(name),
    }
}

/// An expected verdict; `NotReady` carries a text the message must contain.
#[derive(Debug)]
enum Expect {
    Ready,
    Released,
    NotReady(Reason, &'static str),
}
use Expect::{NotReady, Ready, Released};

#[track_caller]
fn check_verdict(case: &str, got: &Verdict, expected: &Expect) {
    match (got, expected) {
        (Verdict::Ready, Ready) | (Verdict::Released, Released) => {}
        (Verdict::NotReady { reason, message }, NotReady(want, text)) => {
            assert_eq!(reason, want, "{case}: reason ({message})");
            assert!(
                message.contains(text),
                "{case}: message {message:?} lacks {text:?}"
            );
        }
        _ => panic!("{case}: verdict {got:?}, expected {expected:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Collection rules

struct CollectionCase {
    case: &'static str,
    intent: CollectionIntent,
    rivals: Vec<Seniority>,
    engine: Engine,
    actions: Vec<Action>,
    verdict: Expect,
}

fn collection_case(
    case: &'static str,
    intent: CollectionIntent,
    engine: Engine,
    actions: Vec<Action>,
    verdict: Expect,
) -> CollectionCase {
    CollectionCase {
        case,
        intent,
        rivals: Vec::new(),
        engine,
        actions,
        verdict,
    }
}

impl CollectionCase {
    fn rivals(mut self, rivals: Vec<Seniority>) -> Self {
        self.rivals = rivals;
        self
    }
}

#[test]
fn collection_rules() {
    let live = coll("products-v1");
    let cases = vec![
        // Live.
        collection_case(
            "paused: no writes",
            coll("products-v1").with(|c| c.paused = true),
            engine(),
            vec![],
            NotReady(Reason::Paused, "collections.dev/paused"),
        ),
        collection_case(
            "paused beats a conflict",
            coll("products-v1").with(|c| c.paused = true),
            engine(),
            vec![],
            NotReady(Reason::Paused, "paused"),
        )
        .rivals(vec![seniority(EARLIER, "old")]),
        collection_case(
            "an older rival wins",
            coll("products-v1"),
            engine(),
            vec![],
            NotReady(Reason::Conflict, "default/old"),
        )
        .rivals(vec![seniority(EARLIER, "old"), seniority(LATER, "new")]),
        collection_case(
            "same age: the smaller key wins",
            coll("products-v1"),
            engine(),
            vec![],
            NotReady(Reason::Conflict, "default/a-products"),
        )
        .rivals(vec![seniority(CREATED, "a-products")]),
        collection_case(
            "same age: a larger key loses",
            live.clone(),
            engine(),
            vec![create_coll(&live)],
            Ready,
        )
        .rivals(vec![seniority(CREATED, "z-products")]),
        collection_case(
            "newer rivals do not matter",
            live.clone(),
            engine(),
            vec![create_coll(&live)],
            Ready,
        )
        .rivals(vec![seniority(LATER, "a-products")]),
        collection_case(
            "the resource itself among the rivals is no conflict",
            live.clone(),
            engine(),
            vec![create_coll(&live)],
            Ready,
        )
        .rivals(vec![live.seniority.clone()]),
        collection_case(
            "database missing: create it, then the collection",
            live.clone(),
            engine().without_database(DB),
            vec![create_db(DB), create_coll(&live)],
            Ready,
        ),
        collection_case(
            "missing: create",
            live.clone(),
            engine(),
            vec![create_coll(&live)],
            Ready,
        ),
        collection_case(
            "dropped behind our back: recreate",
            live.clone().with(|c| c.owned_id = Some(7)),
            engine(),
            vec![create_coll(&live)],
            Ready,
        ),
        collection_case(
            "exists with the owned ID: in sync",
            coll("products-v1").with(|c| c.owned_id = Some(7)),
            engine().collection("products_v1", 7),
            vec![],
            Ready,
        ),
        collection_case(
            "exists, not ours, adopt: record it",
            coll("products-v1").with(|c| c.adopt = true),
            engine().collection("products_v1", 7),
            vec![adopt_coll("products-v1", 7)],
            Ready,
        ),
        collection_case(
            "exists, not ours, no adopt: refuse",
            coll("products-v1"),
            engine().collection("products_v1", 7),
            vec![],
            NotReady(Reason::AlreadyExists, "collections.dev/adopt: \"true\""),
        ),
        collection_case(
            "replaced outside the operator, no adopt: refuse",
            coll("products-v1").with(|c| c.owned_id = Some(7)),
            engine().collection("products_v1", 8),
            vec![],
            NotReady(Reason::AlreadyExists, "created ID 7"),
        ),
        collection_case(
            "replaced outside the operator, adopt: take the new ID",
            coll("products-v1").with(|c| {
                c.owned_id = Some(7);
                c.adopt = true;
            }),
            engine().collection("products_v1", 8),
            vec![adopt_coll("products-v1", 8)],
            Ready,
        ),
        collection_case(
            "an alias has the name: the engine would refuse",
            coll("products-v1"),
            engine()
                .collection("products_v0", 5)
                .alias("products_v1", "products_v0"),
            vec![],
            NotReady(Reason::AlreadyExists, "an alias named products_v1"),
        ),
        collection_case(
            "an alias has the name: adoption does not help",
            coll("products-v1").with(|c| c.adopt = true),
            engine()
                .collection("products_v0", 5)
                .alias("products_v1", "products_v0"),
            vec![],
            NotReady(Reason::AlreadyExists, "alias"),
        ),
        // Deleting.
        collection_case(
            "deleting, never owned anything: release",
            coll_deleting("products-v1", 7).with(|c| c.owned_id = None),
            engine().collection("products_v1", 7),
            vec![],
            Released,
        ),
        collection_case(
            "deleting, Retain: release, keep the data",
            coll_deleting("products-v1", 7)
                .with(|c| c.spec.deletion_policy = DeletionPolicy::Retain),
            engine().collection("products_v1", 7),
            vec![],
            Released,
        ),
        collection_case(
            "deleting, Retain and paused: release (nothing to write)",
            coll_deleting("products-v1", 7).with(|c| {
                c.spec.deletion_policy = DeletionPolicy::Retain;
                c.paused = true;
            }),
            engine().collection("products_v1", 7),
            vec![],
            Released,
        ),
        collection_case(
            "deleting, Delete and paused: wait",
            coll_deleting("products-v1", 7).with(|c| c.paused = true),
            engine().collection("products_v1", 7),
            vec![],
            NotReady(Reason::Paused, "paused"),
        ),
        collection_case(
            "deleting, Delete, already gone: release",
            coll_deleting("products-v1", 7),
            engine(),
            vec![],
            Released,
        ),
        collection_case(
            "deleting, Delete, the name holds another collection: release, no drop",
            coll_deleting("products-v1", 7),
            engine().collection("products_v1", 8),
            vec![],
            Released,
        ),
        collection_case(
            "deleting, Delete, aliases point to it: wait, list them",
            coll_deleting("products-v1", 7),
            engine()
                .collection("products_v1", 7)
                .alias("prod", "products_v1")
                .foreign_alias("products_v1", "legacy"),
            vec![],
            NotReady(Reason::HasAliases, "legacy, prod"),
        ),
        collection_case(
            "deleting, Delete, no aliases: drop",
            coll_deleting("products-v1", 7),
            engine().collection("products_v1", 7),
            vec![drop_coll("products-v1")],
            Released,
        ),
        collection_case(
            "deleting ignores rivals",
            coll_deleting("products-v1", 7),
            engine().collection("products_v1", 7),
            vec![drop_coll("products-v1")],
            Released,
        )
        .rivals(vec![seniority(EARLIER, "old")]),
    ];
    for c in cases {
        let (actions, verdict) = plan_collection(&c.intent, &c.rivals, &c.engine.0);
        assert_eq!(actions, c.actions, "{}: actions", c.case);
        check_verdict(c.case, &verdict, &c.verdict);
    }
}

// ---------------------------------------------------------------------------------------
// Alias rules

struct AliasCase {
    case: &'static str,
    intent: AliasIntent,
    rivals: Vec<Seniority>,
    target: TargetReadiness,
    engine: Engine,
    actions: Vec<Action>,
    verdict: Expect,
}

fn alias_case(
    case: &'static str,
    intent: AliasIntent,
    engine: Engine,
    actions: Vec<Action>,
    verdict: Expect,
) -> AliasCase {
    AliasCase {
        case,
        intent,
        rivals: Vec::new(),
        target: TargetReadiness::Unmanaged,
        engine,
        actions,
        verdict,
    }
}

impl AliasCase {
    fn rivals(mut self, rivals: Vec<Seniority>) -> Self {
        self.rivals = rivals;
        self
    }
    fn target(mut self, target: TargetReadiness) -> Self {
        self.target = target;
        self
    }
}

#[test]
fn alias_rules() {
    use TargetReadiness::{NotReady as TargetNotReady, Ready as TargetReady, Unmanaged};
    // v1 and v2 exist; `prod` points to v1.
    let both = || {
        engine()
            .collection("v1", 1)
            .collection("v2", 2)
            .alias("prod", "v1")
    };
    let immediate = |a: AliasIntent| a.with(|a| a.switch_policy = SwitchPolicy::Immediate);
    let cases = vec![
        // Live.
        alias_case(
            "paused: no writes",
            alias_bound("prod", "v2", "v1").with(|a| a.paused = true),
            both(),
            vec![],
            NotReady(Reason::Paused, "paused"),
        ),
        alias_case(
            "an older rival wins",
            alias("prod", "v2"),
            both(),
            vec![],
            NotReady(Reason::Conflict, "default/old-prod"),
        )
        .rivals(vec![seniority(EARLIER, "old-prod")]),
        alias_case(
            "same age: the smaller key wins",
            alias("prod", "v2"),
            both(),
            vec![],
            NotReady(Reason::Conflict, "default/a-prod"),
        )
        .rivals(vec![seniority(CREATED, "a-prod")]),
        alias_case(
            "same age: a larger key loses",
            alias("prod", "v1"),
            engine().collection("v1", 1),
            vec![create_alias("prod", "v1")],
            Ready,
        )
        .rivals(vec![seniority(CREATED, "z-prod")]),
        alias_case(
            "a collection has the name: the engine would refuse",
            alias("prod", "v1"),
            engine().collection("v1", 1).collection("prod", 3),
            vec![],
            NotReady(Reason::AlreadyExists, "a collection named prod exists"),
        ),
        alias_case(
            "target missing: wait",
            alias("prod", "v3"),
            engine(),
            vec![],
            NotReady(Reason::WaitingForTarget, "waiting for collection v3"),
        ),
        alias_case(
            "target is an alias: say so instead of waiting forever",
            alias("prod", "staging"),
            engine().collection("v1", 1).alias("staging", "v1"),
            vec![],
            NotReady(
                Reason::WaitingForTarget,
                "staging in database default is an alias (of collection v1), not a \
                 collection: aliases cannot target aliases; set the target to v1",
            ),
        ),
        alias_case(
            "target missing, Immediate: still wait (it must exist)",
            immediate(alias("prod", "v3")),
            engine(),
            vec![],
            NotReady(Reason::WaitingForTarget, "v3 to exist"),
        ),
        alias_case(
            "target missing, bound alias: wait, say where it still points",
            alias_bound("prod", "v3", "v1"),
            both(),
            vec![],
            NotReady(Reason::WaitingForTarget, "still points to v1"),
        ),
        alias_case(
            "waiting on an alias we do not own: say adoption will be needed",
            alias("prod", "v3"),
            both(),
            vec![],
            NotReady(Reason::WaitingForTarget, "collections.dev/adopt"),
        ),
        alias_case(
            "gated swap: target not Ready, WhenTargetReady: keep the old target",
            alias_bound("prod", "v2", "v1"),
            both(),
            vec![],
            NotReady(
                Reason::WaitingForTarget,
                "v2 in database default to become Ready",
            ),
        )
        .target(TargetNotReady),
        alias_case(
            "gated swap: target not Ready, Immediate: swap",
            immediate(alias_bound("prod", "v2", "v1")),
            both(),
            vec![alter_alias("prod", "v1", "v2")],
            Ready,
        )
        .target(TargetNotReady),
        alias_case(
            "in sync but the managed target is not Ready: WaitingForTarget, no write",
            alias_bound("prod", "v1", "v1"),
            both(),
            vec![],
            NotReady(Reason::WaitingForTarget, "already points to it"),
        )
        .target(TargetNotReady),
        alias_case(
            "swap: target Ready",
            alias_bound("prod", "v2", "v1"),
            both(),
            vec![alter_alias("prod", "v1", "v2")],
            Ready,
        )
        .target(TargetReady),
        alias_case(
            "swap: unmanaged target that exists",
            alias_bound("prod", "v2", "v1"),
            both(),
            vec![alter_alias("prod", "v1", "v2")],
            Ready,
        )
        .target(Unmanaged),
        alias_case(
            "missing: create",
            alias("prod", "v1"),
            engine().collection("v1", 1),
            vec![create_alias("prod", "v1")],
            Ready,
        )
        .target(TargetReady),
        alias_case(
            "bound but dropped behind our back: recreate",
            alias_bound("prod", "v1", "v1"),
            engine().collection("v1", 1),
            vec![create_alias("prod", "v1")],
            Ready,
        ),
        alias_case(
            "points to the target, bound: in sync",
            alias_bound("prod", "v1", "v1"),
            both(),
            vec![],
            Ready,
        ),
        alias_case(
            "points to the target, not ours, adopt: record it",
            alias("prod", "v1").with(|a| a.adopt = true),
            both(),
            vec![adopt_alias("prod", "v1")],
            Ready,
        ),
        alias_case(
            "points to the target, not ours, no adopt: refuse",
            alias("prod", "v1"),
            both(),
            vec![],
            NotReady(Reason::AlreadyExists, "collections.dev/adopt: \"true\""),
        ),
        alias_case(
            "drift: moved behind our back, bound: move it back",
            alias_bound("prod", "v2", "v2"),
            both(),
            vec![alter_alias("prod", "v1", "v2")],
            Ready,
        ),
        alias_case(
            "points elsewhere, not ours, adopt: take it over and move it",
            alias("prod", "v2").with(|a| a.adopt = true),
            both(),
            vec![alter_alias("prod", "v1", "v2")],
            Ready,
        ),
        alias_case(
            "points elsewhere, not ours, no adopt: refuse",
            alias("prod", "v2"),
            both(),
            vec![],
            NotReady(Reason::AlreadyExists, "pointing to v1"),
        ),
        // Deleting.
        alias_case(
            "deleting, never bound: release, leave the engine alias",
            alias("prod", "v1").with(|a| a.deleting = true),
            both(),
            vec![],
            Released,
        ),
        alias_case(
            "deleting, Retain: release, keep the alias",
            alias_bound("prod", "v1", "v1").with(|a| {
                a.deleting = true;
                a.deletion_policy = AliasDeletionPolicy::Retain;
            }),
            both(),
            vec![],
            Released,
        ),
        alias_case(
            "deleting, Delete and paused: wait",
            alias_bound("prod", "v1", "v1").with(|a| {
                a.deleting = true;
                a.paused = true;
            }),
            both(),
            vec![],
            NotReady(Reason::Paused, "paused"),
        ),
        alias_case(
            "deleting, Delete: drop",
            alias_bound("prod", "v1", "v1").with(|a| a.deleting = true),
            both(),
            vec![drop_alias("prod")],
            Released,
        ),
        alias_case(
            "deleting, Delete, already gone: release",
            alias_bound("prod", "v1", "v1").with(|a| a.deleting = true),
            engine().collection("v1", 1),
            vec![],
            Released,
        ),
    ];
    for c in cases {
        let (actions, verdict) = plan_alias(&c.intent, &c.rivals, c.target, &c.engine.0);
        assert_eq!(actions, c.actions, "{}: actions", c.case);
        check_verdict(c.case, &verdict, &c.verdict);
    }
}

// ---------------------------------------------------------------------------------------
// Whole-set planning

struct PlanCase {
    case: &'static str,
    collections: Vec<CollectionIntent>,
    aliases: Vec<AliasIntent>,
    engine: Engine,
    actions: Vec<Action>,
    verdicts: Vec<(&'static str, Expect)>,
}

fn plan_case(
    case: &'static str,
    collections: Vec<CollectionIntent>,
    aliases: Vec<AliasIntent>,
    engine: Engine,
    actions: Vec<Action>,
    verdicts: Vec<(&'static str, Expect)>,
) -> PlanCase {
    PlanCase {
        case,
        collections,
        aliases,
        engine,
        actions,
        verdicts,
    }
}

#[test]
fn plan_all_rules() {
    let v1 = coll("v1").with(|c| c.owned_id = Some(1));
    let v2 = coll("v2");
    let shop = |name: &str| {
        coll(name).with(|c| {
            c.database = "shop".to_string();
            c.spec.database = "shop".to_string();
        })
    };
    let shop_products = shop("shop-products").with(|c| c.name = "products".to_string());
    let immediate = |a: AliasIntent| a.with(|a| a.switch_policy = SwitchPolicy::Immediate);
    let cases = vec![
        plan_case(
            "collection and alias from scratch: the target created in the plan counts",
            vec![v1.clone().with(|c| c.owned_id = None)],
            vec![alias("prod", "v1")],
            engine().without_database(DB),
            vec![create_db(DB), create_coll(&v1), create_alias("prod", "v1")],
            vec![("v1", Ready), ("prod", Ready)],
        ),
        plan_case(
            "CreateDatabase once per database, in name order",
            vec![shop("b"), shop("a"), coll("c")],
            vec![],
            engine().without_database(DB),
            vec![
                create_db(DB),
                create_db("shop"),
                create_coll(&shop("a")),
                create_coll(&shop("b")),
                create_coll(&coll("c")),
            ],
            vec![("a", Ready), ("b", Ready), ("c", Ready)],
        ),
        plan_case(
            "swap to a collection created in the same plan (WhenTargetReady)",
            vec![v1.clone(), v2.clone()],
            vec![alias_bound("prod", "v2", "v1")],
            engine().collection("v1", 1).alias("prod", "v1"),
            vec![create_coll(&v2), alter_alias("prod", "v1", "v2")],
            vec![("v1", Ready), ("v2", Ready), ("prod", Ready)],
        ),
        plan_case(
            "gated swap: managed target not Ready, WhenTargetReady waits",
            vec![v1.clone(), v2.clone()],
            vec![alias_bound("prod", "v2", "v1")],
            // v2 exists but is not v2's (no adopt): its resource is not Ready.
            engine()
                .collection("v1", 1)
                .collection("v2", 2)
                .alias("prod", "v1"),
            vec![],
            vec![
                ("v2", NotReady(Reason::AlreadyExists, "adopt")),
                (
                    "prod",
                    NotReady(Reason::WaitingForTarget, "still points to v1"),
                ),
            ],
        ),
        plan_case(
            "gated swap: managed target not Ready, Immediate swaps",
            vec![v1.clone(), v2.clone()],
            vec![immediate(alias_bound("prod", "v2", "v1"))],
            engine()
                .collection("v1", 1)
                .collection("v2", 2)
                .alias("prod", "v1"),
            vec![alter_alias("prod", "v1", "v2")],
            vec![
                ("v2", NotReady(Reason::AlreadyExists, "adopt")),
                ("prod", Ready),
            ],
        ),
        plan_case(
            "a paused target collection holds a WhenTargetReady alias",
            vec![v1.clone(), v2.clone().with(|c| c.paused = true)],
            vec![alias_bound("prod", "v2", "v1")],
            engine().collection("v1", 1).alias("prod", "v1"),
            vec![],
            vec![
                ("v2", NotReady(Reason::Paused, "paused")),
                ("prod", NotReady(Reason::WaitingForTarget, "v2 to exist")),
            ],
        ),
        plan_case(
            "unmanaged existing target: the alias proceeds",
            vec![],
            vec![alias("prod", "legacy")],
            engine().collection("legacy", 9),
            vec![create_alias("prod", "legacy")],
            vec![("prod", Ready)],
        ),
        plan_case(
            "drop blocked while the alias stays",
            vec![coll_deleting("v1", 1)],
            vec![alias_bound("prod", "v1", "v1")],
            engine().collection("v1", 1).alias("prod", "v1"),
            vec![],
            vec![
                ("v1", NotReady(Reason::HasAliases, "prod")),
                (
                    "prod",
                    NotReady(Reason::WaitingForTarget, "already points to it"),
                ),
            ],
        ),
        plan_case(
            "drop proceeds when the alias moves away in the same plan",
            vec![
                coll_deleting("v1", 1),
                v2.clone().with(|c| c.owned_id = Some(2)),
            ],
            vec![alias_bound("prod", "v2", "v1")],
            engine()
                .collection("v1", 1)
                .collection("v2", 2)
                .alias("prod", "v1"),
            vec![alter_alias("prod", "v1", "v2"), drop_coll("v1")],
            vec![("v1", Released), ("v2", Ready), ("prod", Ready)],
        ),
        plan_case(
            "drop proceeds when the alias is dropped in the same plan",
            vec![coll_deleting("v1", 1)],
            vec![alias_bound("prod", "v1", "v1").with(|a| a.deleting = true)],
            engine().collection("v1", 1).alias("prod", "v1"),
            vec![drop_alias("prod"), drop_coll("v1")],
            vec![("v1", Released), ("prod", Released)],
        ),
        plan_case(
            "drop still blocked by an alias no resource manages",
            vec![coll_deleting("v1", 1)],
            vec![alias_bound("prod", "v1", "v1").with(|a| a.deleting = true)],
            engine()
                .collection("v1", 1)
                .alias("prod", "v1")
                .foreign_alias("v1", "legacy"),
            vec![drop_alias("prod")],
            vec![
                ("v1", NotReady(Reason::HasAliases, "legacy")),
                ("prod", Released),
            ],
        ),
        plan_case(
            "drop blocked when an alias moves onto it in the same plan (Immediate)",
            vec![
                coll_deleting("v1", 1),
                v2.clone().with(|c| c.owned_id = Some(2)),
            ],
            vec![immediate(alias_bound("prod", "v1", "v2"))],
            engine()
                .collection("v1", 1)
                .collection("v2", 2)
                .alias("prod", "v2"),
            vec![alter_alias("prod", "v2", "v1")],
            vec![
                ("v1", NotReady(Reason::HasAliases, "prod")),
                ("v2", Ready),
                ("prod", Ready),
            ],
        ),
        plan_case(
            "collection conflict: the older resource wins",
            vec![
                coll("products").with(|c| c.seniority.created = LATER.to_string()),
                coll("other")
                    .with(|c| c.name = "products".to_string())
                    .with(|c| c.seniority.created = EARLIER.to_string()),
            ],
            vec![],
            engine(),
            vec![create_coll(
                &coll("other").with(|c| c.name = "products".to_string()),
            )],
            vec![
                ("other", Ready),
                ("products", NotReady(Reason::Conflict, "default/other")),
            ],
        ),
        plan_case(
            "collection conflict: same age, the smaller key wins",
            vec![
                coll("products"),
                coll("b-products").with(|c| c.name = "products".to_string()),
            ],
            vec![],
            engine(),
            vec![create_coll(
                &coll("b-products").with(|c| c.name = "products".to_string()),
            )],
            vec![
                ("b-products", Ready),
                ("products", NotReady(Reason::Conflict, "default/b-products")),
            ],
        ),
        plan_case(
            "alias conflict: same age, the smaller key wins",
            vec![],
            vec![
                alias("prod", "v1"),
                alias("a-prod", "v1").with(|a| a.alias = "prod".to_string()),
            ],
            engine().collection("v1", 1),
            vec![Action::CreateAlias {
                key: key("a-prod"),
                database: DB.to_string(),
                alias: "prod".to_string(),
                target: "v1".to_string(),
            }],
            vec![
                ("a-prod", Ready),
                ("prod", NotReady(Reason::Conflict, "default/a-prod")),
            ],
        ),
        plan_case(
            "same names in different databases do not conflict",
            vec![coll("products"), shop_products.clone()],
            vec![],
            engine().database("shop"),
            vec![create_coll(&coll("products")), create_coll(&shop_products)],
            vec![("products", Ready), ("shop-products", Ready)],
        ),
        plan_case(
            "an alias named like a collection created in the same plan is refused",
            vec![coll("prod")],
            vec![alias("prod-alias", "prod").with(|a| a.alias = "prod".to_string())],
            engine(),
            vec![create_coll(&coll("prod"))],
            vec![
                ("prod", Ready),
                (
                    "prod-alias",
                    NotReady(Reason::AlreadyExists, "a collection named prod"),
                ),
            ],
        ),
        plan_case(
            "a resource declared twice: the first declaration is planned once",
            vec![coll("products"), coll("products")],
            vec![],
            engine(),
            vec![create_coll(&coll("products"))],
            vec![(
                "products",
                NotReady(Reason::Conflict, "declared more than once"),
            )],
        ),
        plan_case(
            "a Collection and a CollectionAlias sharing a key: the least advanced verdict",
            vec![coll("prod").with(|c| c.name = "prod_v1".to_string())],
            vec![alias("prod", "missing")],
            engine(),
            vec![create_coll(
                &coll("prod").with(|c| c.name = "prod_v1".to_string()),
            )],
            vec![("prod", NotReady(Reason::WaitingForTarget, "missing"))],
        ),
        plan_case(
            "a collection being deleted (Retain) is not a Ready target",
            vec![coll_deleting("v1", 1).with(|c| c.spec.deletion_policy = DeletionPolicy::Retain)],
            vec![alias("prod", "v1")],
            engine().collection("v1", 1),
            vec![],
            vec![
                ("v1", Released),
                (
                    "prod",
                    NotReady(Reason::WaitingForTarget, "to become Ready"),
                ),
            ],
        ),
        plan_case(
            "apply order: databases, collections, alias writes, alias drops, drops",
            vec![
                coll_deleting("old-b", 11),
                coll_deleting("old-a", 10),
                shop("zeta"),
                coll("beta").with(|c| c.adopt = true),
                coll("alpha"),
            ],
            vec![
                alias_bound("gone-b", "old_b", "old_b").with(|a| a.deleting = true),
                alias_bound("gone-a", "old_a", "old_a").with(|a| a.deleting = true),
                alias_bound("moved", "alpha", "beta"),
                alias("adopted", "beta").with(|a| a.adopt = true),
                alias("fresh", "zeta").with(|a| a.database = "shop".to_string()),
            ],
            engine()
                .collection("beta", 2)
                .collection("old_a", 10)
                .collection("old_b", 11)
                .alias("moved", "beta")
                .alias("adopted", "beta")
                .alias("gone_a", "old_a")
                .alias("gone_b", "old_b"),
            vec![
                create_db("shop"),
                create_coll(&coll("alpha")),
                adopt_coll("beta", 2),
                create_coll(&shop("zeta")),
                adopt_alias("adopted", "beta"),
                Action::CreateAlias {
                    key: key("fresh"),
                    database: "shop".to_string(),
                    alias: "fresh".to_string(),
                    target: "zeta".to_string(),
                },
                alter_alias("moved", "beta", "alpha"),
                drop_alias("gone-a"),
                drop_alias("gone-b"),
                drop_coll("old-a"),
                drop_coll("old-b"),
            ],
            vec![
                ("alpha", Ready),
                ("beta", Ready),
                ("zeta", Ready),
                ("old-a", Released),
                ("old-b", Released),
                ("moved", Ready),
                ("adopted", Ready),
                ("fresh", Ready),
                ("gone-a", Released),
                ("gone-b", Released),
            ],
        ),
    ];
    for c in cases {
        let plan = plan_all(&c.collections, &c.aliases, &c.engine.0);
        assert_eq!(plan.actions, c.actions, "{}: actions", c.case);
        for (name, expected) in &c.verdicts {
            let verdict = plan
                .verdicts
                .get(&key(name))
                .unwrap_or_else(|| panic!("{}: no verdict for {name}", c.case));
            check_verdict(c.case, verdict, expected);
        }
        let mut keys: BTreeSet<ObjectKey> = c.collections.iter().map(|i| i.key.clone()).collect();
        keys.extend(c.aliases.iter().map(|i| i.key.clone()));
        assert_eq!(
            plan.verdicts.keys().cloned().collect::<BTreeSet<_>>(),
            keys,
            "{}: one verdict per key",
            c.case
        );

        // Input order does not matter (duplicates aside, where the first one wins).
        let mut collections = c.collections.clone();
        let mut aliases = c.aliases.clone();
        collections.reverse();
        aliases.reverse();
        let reversed = plan_all(&collections, &aliases, &c.engine.0);
        assert_eq!(reversed, plan, "{}: deterministic", c.case);
    }
}
