//! The one reconcile path `up` and `plan` share: intents from manifests, a targeted and
//! concurrent observation of exactly the engine names involved, ownership, [`plan_all`],
//! and an apply that keeps the plan's phase order while running the independent actions
//! of one phase concurrently (the engine group-commits concurrent DDL, so 10,000 alias
//! creates cost a few hundred fsyncs instead of 10,000).

use std::collections::{BTreeSet, HashMap, HashSet};

use futures::StreamExt;

use super::manifest::{Kind, ResourceId};
use crate::client::{Applied, ClientError, EngineClient};
use crate::crd::{Collection, CollectionAlias, SwapGuards};
use crate::plan::{
    Action, AliasIntent, CollectionIntent, ObjectKey, Observed, ObservedCollection, Plan,
    intent::key_of, plan_all,
};

/// Engine calls in flight at once. Enough to fill the engine's group commit; small enough
/// not to starve the other work on a 2-core machine.
pub const CONCURRENCY: usize = 32;

/// An engine name: (database, collection or alias).
pub type Name = (String, String);

/// The intents of one reconcile, and how to map the planner's keys back to resources.
#[derive(Debug, Clone, Default)]
pub struct Intents {
    /// One per `Collection`.
    pub collections: Vec<CollectionIntent>,
    /// One per `CollectionAlias`.
    pub aliases: Vec<AliasIntent>,
    keys: HashMap<ObjectKey, ResourceId>,
    /// `spec.guards` of the aliases that declare them, by plan key.
    guards: HashMap<ObjectKey, SwapGuards>,
}

impl Intents {
    /// Adds the intent of a `Collection`.
    pub fn push_collection(&mut self, collection: &Collection) -> &mut CollectionIntent {
        let id = ResourceId {
            kind: Kind::Collection,
            key: key_of(collection),
        };
        let mut intent = CollectionIntent::from_resource(collection);
        let key = self.plan_key(id);
        intent.key = key.clone();
        intent.seniority.key = key;
        self.collections.push(intent);
        let last = self.collections.len() - 1;
        &mut self.collections[last]
    }

    /// Adds the intent of a `CollectionAlias`.
    pub fn push_alias(&mut self, alias: &CollectionAlias) -> &mut AliasIntent {
        let id = ResourceId {
            kind: Kind::CollectionAlias,
            key: key_of(alias),
        };
        let mut intent = AliasIntent::from_resource(alias);
        let key = self.plan_key(id);
        if let Some(guards) = &alias.spec.guards {
            self.guards.insert(key.clone(), guards.clone());
        }
        intent.key = key.clone();
        intent.seniority.key = key;
        self.aliases.push(intent);
        let last = self.aliases.len() - 1;
        &mut self.aliases[last]
    }

    /// The planner keys resources by `namespace/name` only, but a `Collection` and a
    /// `CollectionAlias` may share one; the second gets a suffix (not a valid Kubernetes
    /// name, so it cannot clash) for planning, mapped back by [`Intents::resource`].
    fn plan_key(&mut self, id: ResourceId) -> ObjectKey {
        let mut key = id.key.clone();
        if self.keys.contains_key(&key) {
            key.name = format!("{} ({})", key.name, id.kind.as_str());
        }
        self.keys.insert(key.clone(), id);
        key
    }

    /// The swap guards of an alias, if it declares any.
    pub fn guards(&self, key: &ObjectKey) -> Option<&SwapGuards> {
        self.guards.get(key)
    }

    /// The resource a planner key stands for.
    pub fn resource(&self, key: &ObjectKey) -> Option<&ResourceId> {
        self.keys.get(key)
    }

    /// Every (database, name) to look at: the collections the resources name, the alias
    /// targets, and the alias names both as aliases and as collections (names share one
    /// namespace per database).
    pub fn names(&self) -> (BTreeSet<Name>, BTreeSet<Name>) {
        let mut collections = BTreeSet::new();
        let mut aliases = BTreeSet::new();
        for intent in &self.collections {
            collections.insert((intent.database.clone(), intent.name.clone()));
            aliases.insert((intent.database.clone(), intent.name.clone()));
        }
        for intent in &self.aliases {
            aliases.insert((intent.database.clone(), intent.alias.clone()));
            collections.insert((intent.database.clone(), intent.alias.clone()));
            collections.insert((intent.database.clone(), intent.target.clone()));
        }
        (collections, aliases)
    }

    /// `plan`'s ownership, where no status or state exists: an engine object counts as
    /// the resource's when it already matches the manifests. A collection matches when
    /// it exists under the manifest's database and name (the observation carries no
    /// schema to compare). An alias matches when it points at the manifest's target, or
    /// at a collection that a `Collection` manifest of the same set manages: that is the
    /// blue/green edit a pre-merge check must show as `AlterAlias`, not `AlreadyExists`.
    /// Anything else (an alias pointing at a collection no manifest mentions) is
    /// someone else's, as the operator would judge it, unless `collections.dev/adopt`.
    pub fn infer_ownership(&mut self, observed: &Observed) {
        let managed: HashSet<(String, String)> = self
            .collections
            .iter()
            .map(|c| (c.database.clone(), c.name.clone()))
            .collect();
        for intent in &mut self.collections {
            if let Some(found) = observed
                .collections
                .get(&(intent.database.clone(), intent.name.clone()))
            {
                intent.owned_id = Some(found.id);
            }
        }
        for intent in &mut self.aliases {
            if let Some(target) = observed
                .aliases
                .get(&(intent.database.clone(), intent.alias.clone()))
                && (*target == intent.target
                    || managed.contains(&(intent.database.clone(), target.clone())))
            {
                intent.bound = Some(target.clone());
            }
        }
    }

    /// Plans the whole set.
    pub fn plan(&self, observed: &Observed) -> Plan {
        plan_all(&self.collections, &self.aliases, observed)
    }
}

/// From this many names on, a pass lists each database (ShowCollections, ListAliases)
/// instead of describing each name: a few calls per database instead of one per name.
pub const LISTING_FROM: usize = 64;

/// Observes the databases and the names the intents involve. A small set (a pass after
/// one file edit) is described name by name; a large one (a full pass) is listed per
/// database, with details fetched only where the listing does not settle the decision.
/// On an engine that refuses ListAliases the large set is described name by name too
/// (Milvus 2.3.5 lists; Milvus before it answers ListAliases "unimplemented").
pub async fn observe(client: &EngineClient, intents: &Intents) -> Result<Observed, ClientError> {
    let (collections, aliases) = intents.names();
    if collections.len() + aliases.len() >= LISTING_FROM {
        match observe_listed(client, intents, &collections, &aliases).await {
            Err(ClientError::Engine {
                rpc: "ListAliases",
                code,
                message,
            }) => {
                tracing::debug!(code, %message, "no ListAliases: observing name by name");
            }
            listed => return listed,
        }
    }
    observe_names(client, collections, aliases).await
}

/// The full observation from listings. ShowCollections settles every collection name
/// (existence and ID) and every alias name that is not a collection; ListAliases says
/// which alias names exist. Only the targets of existing aliases need more: per alias
/// (DescribeAlias) or per collection (ListAliases of one collection), whichever makes
/// fewer calls in that database. A collection the intents delete also needs every alias
/// pointing at it (a drop waits for them), including aliases no manifest names.
async fn observe_listed(
    client: &EngineClient,
    intents: &Intents,
    collections: &BTreeSet<Name>,
    aliases: &BTreeSet<Name>,
) -> Result<Observed, ClientError> {
    let mut observed = Observed {
        databases: client.clone().databases().await?,
        ..Default::default()
    };
    let involved: BTreeSet<&String> = collections
        .iter()
        .chain(aliases)
        .map(|(database, _)| database)
        .filter(|database| observed.databases.contains(*database))
        .collect();
    let deleting: BTreeSet<Name> = intents
        .collections
        .iter()
        .filter(|intent| intent.deleting)
        .map(|intent| (intent.database.clone(), intent.name.clone()))
        .collect();
    for database in involved {
        let mut client = client.clone();
        let Some(ids) = client.collection_ids(database).await? else {
            continue;
        };
        let Some(listed) = client.alias_names(database, None).await? else {
            continue;
        };
        for key in collections.range((database.clone(), String::new())..) {
            if key.0 != *database {
                break;
            }
            if let Some(id) = ids.get(&key.1) {
                observed.collections.insert(
                    key.clone(),
                    ObservedCollection {
                        id: *id,
                        aliases: BTreeSet::new(),
                    },
                );
            }
        }
        let listed: HashSet<String> = listed.into_iter().collect();
        let wanted: Vec<String> = aliases
            .range((database.clone(), String::new())..)
            .take_while(|(d, _)| d == database)
            .map(|(_, alias)| alias.clone())
            .filter(|alias| listed.contains(alias))
            .collect();
        let dropping: Vec<String> = deleting
            .range((database.clone(), String::new())..)
            .take_while(|(d, _)| d == database)
            .map(|(_, name)| name.clone())
            .filter(|name| ids.contains_key(name))
            .collect();
        if wanted.is_empty() && dropping.is_empty() {
            continue;
        }
        // alias -> target, for the aliases learned in this database.
        let mut targets: HashMap<String, String> = HashMap::new();
        if ids.len() < wanted.len() + dropping.len() {
            let mut found = futures::stream::iter(ids.keys())
                .map(|collection| {
                    let mut client = client.clone();
                    async move {
                        let names = client.alias_names(database, Some(collection)).await?;
                        Ok::<_, ClientError>((collection, names.unwrap_or_default()))
                    }
                })
                .buffer_unordered(CONCURRENCY);
            while let Some(result) = found.next().await {
                let (collection, names) = result?;
                for alias in names {
                    targets.insert(alias, collection.clone());
                }
            }
        } else {
            let mut found = futures::stream::iter(&wanted)
                .map(|alias| {
                    let mut client = client.clone();
                    async move {
                        let target = client.alias_target(database, alias).await?;
                        Ok::<_, ClientError>(target.map(|t| (alias.clone(), t)))
                    }
                })
                .buffer_unordered(CONCURRENCY);
            while let Some(result) = found.next().await {
                if let Some((alias, target)) = result? {
                    targets.insert(alias, target);
                }
            }
            drop(found);
            let mut found = futures::stream::iter(&dropping)
                .map(|name| {
                    let mut client = client.clone();
                    async move {
                        let described = client.collection(database, name).await?;
                        Ok::<_, ClientError>(described.map(|c| (name, c.aliases)))
                    }
                })
                .buffer_unordered(CONCURRENCY);
            while let Some(result) = found.next().await {
                if let Some((name, names)) = result? {
                    for alias in names {
                        targets.insert(alias, name.clone());
                    }
                }
            }
        }
        for (alias, target) in targets {
            let key = (database.clone(), alias);
            if let Some(collection) = observed
                .collections
                .get_mut(&(database.clone(), target.clone()))
            {
                collection.aliases.insert(key.1.clone());
            }
            if aliases.contains(&key) {
                observed.aliases.insert(key, target);
            }
        }
    }
    Ok(observed)
}

/// Describes exactly the names involved, with up to [`CONCURRENCY`] calls in flight.
/// Collections first: their descriptions list the aliases pointing at them, which
/// answers most alias lookups without a DescribeAlias.
async fn observe_names(
    client: &EngineClient,
    collections: BTreeSet<Name>,
    aliases: BTreeSet<Name>,
) -> Result<Observed, ClientError> {
    let mut observed = Observed {
        databases: client.clone().databases().await?,
        ..Default::default()
    };
    let databases = observed.databases.clone();
    let mut found = futures::stream::iter(
        collections
            .into_iter()
            .filter(|(database, _)| databases.contains(database)),
    )
    .map(|(database, name)| {
        let mut client = client.clone();
        async move {
            let found = client.collection(&database, &name).await?;
            Ok::<_, ClientError>(found.map(|c| ((database, name), c)))
        }
    })
    .buffer_unordered(CONCURRENCY);
    while let Some(result) = found.next().await {
        if let Some((key, collection)) = result? {
            observed.collections.insert(key, collection);
        }
    }
    drop(found);
    let mut known: HashMap<Name, String> = HashMap::new();
    for ((database, name), collection) in &observed.collections {
        for alias in &collection.aliases {
            known.insert((database.clone(), alias.clone()), name.clone());
        }
    }
    let mut unknown = Vec::new();
    for key in aliases {
        if !databases.contains(&key.0) {
            continue;
        }
        match known.remove(&key) {
            Some(target) => {
                observed.aliases.insert(key, target);
            }
            None => unknown.push(key),
        }
    }
    let mut found = futures::stream::iter(unknown)
        .map(|(database, alias)| {
            let mut client = client.clone();
            async move {
                let target = client.alias_target(&database, &alias).await?;
                Ok::<_, ClientError>(target.map(|t| ((database, alias), t)))
            }
        })
        .buffer_unordered(CONCURRENCY);
    while let Some(result) = found.next().await {
        if let Some((key, target)) = result? {
            observed.aliases.insert(key, target);
        }
    }
    Ok(observed)
}

/// The phase of an action; phases run in plan order, the actions of one phase at once.
fn phase(action: &Action) -> u8 {
    match action {
        Action::CreateDatabase { .. } => 0,
        Action::CreateCollection { .. } | Action::AdoptCollection { .. } => 1,
        Action::CreateAlias { .. } | Action::AlterAlias { .. } | Action::AdoptAlias { .. } => 2,
        Action::DropAlias { .. } => 3,
        Action::DropCollection { .. } => 4,
    }
}

/// The resource key of an action (`None` for CreateDatabase, which serves several).
pub fn action_key(action: &Action) -> Option<&ObjectKey> {
    action.key()
}

/// Applies the actions: runs of consecutive actions of one phase go concurrently, the
/// runs one after the other, so the plan's order between phases holds (targets exist
/// before aliases point at them; aliases move away before collections are dropped).
/// A failed action does not stop the others; what depends on it fails in the engine
/// and is retried by the next reconcile. Results are in action order.
pub async fn apply(client: &EngineClient, actions: &[Action]) -> Vec<Result<Applied, ClientError>> {
    let mut results: Vec<Option<Result<Applied, ClientError>>> = vec![None; actions.len()];
    let mut start = 0;
    while start < actions.len() {
        let current = phase(&actions[start]);
        let end = start
            + actions[start..]
                .iter()
                .take_while(|a| phase(a) == current)
                .count();
        let mut running = futures::stream::iter(start..end)
            .map(|index| {
                let mut client = client.clone();
                let action = &actions[index];
                async move { (index, client.apply(action).await) }
            })
            .buffer_unordered(CONCURRENCY);
        while let Some((index, result)) = running.next().await {
            results[index] = Some(result);
        }
        start = end;
    }
    unrun_as_errors(results, client, "action was not run")
}

/// Results in call order, a call that never ran counted as failed with `why`.
pub fn unrun_as_errors<T>(
    results: Vec<Option<Result<T, ClientError>>>,
    client: &EngineClient,
    why: &str,
) -> Vec<Result<T, ClientError>> {
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(ClientError::Unreachable {
                    endpoint: client.endpoint().to_string(),
                    message: why.to_string(),
                })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alias(name: &str, target: &str) -> CollectionAlias {
        let mut alias = CollectionAlias::new(
            name,
            crate::crd::CollectionAliasSpec {
                coordinator_ref: crate::crd::CoordinatorRef {
                    name: "local".into(),
                },
                database: "default".into(),
                name: None,
                collection: target.into(),
                switch_policy: Default::default(),
                guards: None,
                deletion_policy: Default::default(),
            },
        );
        alias.metadata.namespace = Some("default".into());
        alias
    }

    fn collection(name: &str, engine: &str) -> Collection {
        let spec: crate::crd::CollectionSpec = serde_json::from_value(serde_json::json!({
            "coordinatorRef": {"name": "local"},
            "name": engine,
            "fields": [{"name": "id", "dataType": "Int64", "isPrimaryKey": true}]
        }))
        .expect("spec");
        Collection::new(name, spec)
    }

    #[test]
    fn a_collection_and_an_alias_sharing_a_key_plan_under_distinct_keys() {
        let mut intents = Intents::default();
        intents.push_collection(&collection("products", "products_v1"));
        intents.push_alias(&alias("products", "products_v1"));
        let c = intents.collections[0].key.clone();
        let a = intents.aliases[0].key.clone();
        assert_ne!(c, a);
        assert_eq!(intents.resource(&c).map(|r| r.kind), Some(Kind::Collection));
        assert_eq!(
            intents.resource(&a).map(|r| r.kind),
            Some(Kind::CollectionAlias)
        );
        assert_eq!(
            intents.resource(&a).map(|r| r.key.name.as_str()),
            Some("products")
        );
    }

    #[test]
    fn names_cover_targets_and_both_namespaces() {
        let mut intents = Intents::default();
        intents.push_collection(&collection("products-v1", "products_v1"));
        intents.push_alias(&alias("products", "products_v2"));
        let (collections, aliases) = intents.names();
        let d = |n: &str| ("default".to_string(), n.to_string());
        assert_eq!(
            collections,
            [d("products"), d("products_v1"), d("products_v2")].into()
        );
        assert_eq!(aliases, [d("products"), d("products_v1")].into());
    }

    #[test]
    fn inferred_ownership_counts_matches_and_swaps_between_managed_collections() {
        let mut intents = Intents::default();
        intents.push_collection(&collection("products-v1", "products_v1"));
        intents.push_collection(&collection("products-v2", "products_v2"));
        intents.push_alias(&alias("products", "products_v2"));
        intents.push_alias(&alias("same", "products_v1"));
        intents.push_alias(&alias("foreign", "products_v1"));
        let mut observed = Observed::default();
        observed.collections.insert(
            ("default".into(), "products_v1".into()),
            crate::plan::ObservedCollection {
                id: 7,
                aliases: Default::default(),
            },
        );
        let d = |n: &str| ("default".to_string(), n.to_string());
        observed.aliases.insert(d("products"), "products_v1".into());
        observed.aliases.insert(d("same"), "products_v1".into());
        observed
            .aliases
            .insert(d("foreign"), "somebody_elses".into());
        intents.infer_ownership(&observed);
        assert_eq!(intents.collections[0].owned_id, Some(7));
        assert_eq!(intents.collections[1].owned_id, None);
        assert_eq!(intents.aliases[0].bound.as_deref(), Some("products_v1"));
        assert_eq!(intents.aliases[1].bound.as_deref(), Some("products_v1"));
        assert_eq!(intents.aliases[2].bound, None);
    }
}
