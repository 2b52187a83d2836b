//! The RoutedAlias controller against the in-memory API server (tests/common/fake_api.rs)
//! with a fake clock: it creates owned `Collection`s, routes its owned `CollectionAlias`,
//! retires old collections, stops at `maxCollections`, and requeues for exactly the time
//! left until the next scheduled action.

mod common;

use std::sync::Arc;
use std::time::Duration;

use collection_operator::crd::{Collection, CollectionAlias, Coordinator, RoutedAlias};
use collection_operator::operator::context::{CacheSync, Hints, Settings, Stores};
use collection_operator::operator::metrics::Metrics;
use collection_operator::operator::{Context, filled_store, routed};
use common::fake_api::{FakeApi, NS};
use jiff::Timestamp;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use parking_lot::Mutex;
use serde_json::{Value, json};

fn ts(text: &str) -> Timestamp {
    text.parse().expect("a test time")
}

struct Harness {
    api: FakeApi,
    ctx: Arc<Context>,
    clock: Arc<Mutex<Timestamp>>,
    collections: Writer<Collection>,
    aliases: Writer<CollectionAlias>,
}

impl Harness {
    async fn start(spec: Value) -> Self {
        let api = FakeApi::default();
        api.create("routedaliases", "news", spec, json!({}));
        let client = api.connect().await;
        let (coordinator_store, _) = filled_store::<Coordinator>([]);
        let (collection_store, collections) = filled_store::<Collection>([]);
        let (alias_store, aliases) = filled_store::<CollectionAlias>([]);
        let (hints, _) = Hints::channels(16);
        let clock = Arc::new(Mutex::new(ts("2026-11-22T00:00:00Z")));
        let read = clock.clone();
        let ctx = Context::new(
            client,
            Stores {
                coordinators: coordinator_store,
                collections: collection_store,
                aliases: alias_store,
                sync: CacheSync::all_synced(),
            },
            Settings::default(),
            Arc::new(Metrics::new()),
            hints,
        )
        .with_clock(Arc::new(move || *read.lock()));
        Self {
            api,
            ctx: Arc::new(ctx),
            clock,
            collections,
            aliases,
        }
    }

    fn routed(&self) -> RoutedAlias {
        serde_json::from_value(self.api.object("routedaliases", "news").expect("stored"))
            .expect("a RoutedAlias")
    }

    /// One pass at `now`.
    async fn pass(&self, now: &str) -> Requeue {
        *self.clock.lock() = ts(now);
        routed::reconcile(Arc::new(self.routed()), self.ctx.clone())
            .await
            .expect("a successful pass")
    }

    /// What the Collection controller would report: the child is Ready.
    fn collection_ready(&mut self, name: &str) {
        let mut object = self.api.object("collections", name).expect("child exists");
        object["status"] = json!({
            "observedGeneration": object["metadata"]["generation"],
            "conditions": [{"type": "Ready", "status": "True", "reason": "Available",
                            "message": "", "lastTransitionTime": "2026-11-22T00:00:00Z"}],
        });
        let collection: Collection = serde_json::from_value(object).expect("a Collection");
        self.collections
            .apply_watcher_event(&watcher::Event::Apply(collection));
    }

    /// What the CollectionAlias controller would report: bound to its spec's target.
    fn alias_bound(&mut self) {
        let mut object = self.api.object("collectionaliases", "news").expect("alias");
        object["status"] = json!({"collection": object["spec"]["collection"]});
        let alias: CollectionAlias = serde_json::from_value(object).expect("an alias");
        self.aliases
            .apply_watcher_event(&watcher::Event::Apply(alias));
    }

    fn forget_collection(&mut self, name: &str) {
        if let Some(object) = self.collections_cached(name) {
            self.collections
                .apply_watcher_event(&watcher::Event::Delete(object));
        }
    }

    fn collections_cached(&self, name: &str) -> Option<Collection> {
        self.ctx
            .stores
            .collections
            .state()
            .into_iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .map(|c| (*c).clone())
    }

    fn status(&self) -> Value {
        self.api.object("routedaliases", "news").expect("stored")["status"].clone()
    }

    fn ready_reason(&self) -> String {
        let status = self.status();
        let ready = status["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned())
            .expect("a Ready condition");
        format!(
            "{}/{}",
            ready["status"].as_str().unwrap_or(""),
            ready["reason"].as_str().unwrap_or("")
        )
    }

    fn collection_names(&self) -> Vec<String> {
        let state = self.api.state.lock();
        state
            .objects
            .keys()
            .filter(|(plural, _)| plural == "collections")
            .map(|(_, name)| name.clone())
            .collect()
    }
}

fn spec(extra: Value) -> Value {
    let mut spec = json!({
        "coordinatorRef": {"name": "engine"},
        "start": "2026-11-22T00:00:00Z",
        "interval": "1h",
        "preemptiveCreate": "10m",
        "deletionPolicy": "Delete",
        "template": {"fields": [
            {"name": "id", "dataType": "Int64", "isPrimaryKey": true},
            {"name": "v", "dataType": "FloatVector", "dim": 4}
        ]},
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            spec.insert(key.clone(), value.clone());
        }
    }
    spec
}

#[tokio::test]
async fn creates_owned_collections_routes_the_alias_and_requeues_at_each_boundary() {
    let mut h = Harness::start(spec(json!({}))).await;
    let uid = h.routed().metadata.uid.expect("uid");

    // 09:30: the current interval's collection, as an owned Collection; back at 09:50.
    let requeue = h.pass("2026-11-22T09:30:00Z").await;
    assert_eq!(requeue, Requeue::requeue(Duration::from_secs(20 * 60)));
    let child = h
        .api
        .object("collections", "news-20261122t090000z")
        .expect("the generated Collection");
    assert_eq!(child["metadata"]["namespace"], NS);
    let owner = &child["metadata"]["ownerReferences"][0];
    assert_eq!(
        (
            owner["kind"].as_str(),
            owner["name"].as_str(),
            owner["uid"].as_str(),
            owner["controller"].as_bool()
        ),
        (
            Some("RoutedAlias"),
            Some("news"),
            Some(uid.as_str()),
            Some(true)
        )
    );
    assert_eq!(child["spec"]["name"], "news_20261122T090000Z");
    assert_eq!(child["spec"]["deletionPolicy"], "Delete");
    assert_eq!(
        child["metadata"]["annotations"]["collections.dev/interval-end"],
        "2026-11-22T10:00:00Z"
    );
    assert!(h.api.object("collectionaliases", "news").is_none());
    assert_eq!(h.ready_reason(), "False/WaitingForCollection");
    assert_eq!(
        h.status()["nextAction"],
        json!({"action": "Create", "collection": "news_20261122T100000Z",
               "at": "2026-11-22T09:50:00Z"})
    );

    // It became Ready (the Collection controller's doing): the owned alias points to it.
    h.collection_ready("news-20261122t090000z");
    let requeue = h.pass("2026-11-22T09:35:00Z").await;
    assert_eq!(requeue, Requeue::requeue(Duration::from_secs(15 * 60)));
    let alias = h
        .api
        .object("collectionaliases", "news")
        .expect("the generated alias");
    assert_eq!(alias["spec"]["collection"], "news_20261122T090000Z");
    assert_eq!(alias["spec"]["name"], "news");
    assert_eq!(alias["metadata"]["ownerReferences"][0]["uid"], uid.as_str());
    h.alias_bound();
    h.pass("2026-11-22T09:36:00Z").await;
    assert_eq!(h.ready_reason(), "True/Available");
    assert_eq!(h.status()["aliasTarget"], "news_20261122T090000Z");

    // 09:50: the next one ahead of time; the alias stays; back at 10:00 sharp.
    let requeue = h.pass("2026-11-22T09:50:00Z").await;
    assert_eq!(requeue, Requeue::requeue(Duration::from_secs(10 * 60)));
    assert!(
        h.api
            .object("collections", "news-20261122t100000z")
            .is_some()
    );
    assert_eq!(
        h.api.object("collectionaliases", "news").expect("alias")["spec"]["collection"],
        "news_20261122T090000Z"
    );

    // 10:00: Ready and its interval begun: the alias moves; next is 10:50's create.
    h.collection_ready("news-20261122t100000z");
    let requeue = h.pass("2026-11-22T10:00:00Z").await;
    assert_eq!(requeue, Requeue::requeue(Duration::from_secs(50 * 60)));
    assert_eq!(
        h.api.object("collectionaliases", "news").expect("alias")["spec"]["collection"],
        "news_20261122T100000Z"
    );
    let states: Vec<(String, String)> = h.status()["collections"]
        .as_array()
        .expect("series")
        .iter()
        .map(|m| {
            (
                m["collection"].as_str().unwrap_or("").to_string(),
                m["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("news_20261122T090000Z".to_string(), "Past".to_string()),
            ("news_20261122T100000Z".to_string(), "Current".to_string())
        ]
    );
    let reasons = h.api.event_reasons();
    assert_eq!(
        reasons.iter().filter(|r| *r == "CreatedCollection").count(),
        2
    );
    assert_eq!(reasons.iter().filter(|r| *r == "AliasRouted").count(), 2);
}

#[tokio::test]
async fn retires_collections_past_their_age_but_not_the_aliased_one() {
    let mut h = Harness::start(spec(
        json!({"autoDeleteAge": "1h", "preemptiveCreate": "0s"}),
    ))
    .await;
    for start in ["09", "10", "11"] {
        h.pass(&format!("2026-11-22T{start}:00:00Z")).await;
        h.collection_ready(&format!("news-20261122t{start}0000z"));
    }
    h.pass("2026-11-22T11:00:01Z").await;
    h.alias_bound();
    assert_eq!(
        h.api.object("collectionaliases", "news").expect("alias")["spec"]["collection"],
        "news_20261122T110000Z"
    );
    // At 11:00 the 09:00 one (ended 10:00) is due at 11:00 and was retired already.
    assert!(
        h.api
            .object("collections", "news-20261122t090000z")
            .is_none()
    );
    h.forget_collection("news-20261122t090000z");

    // 12:10: the 10:00 one ended at 11:00, due at 12:00: retired. The 11:00 one is due at
    // 13:00. The 12:00 one is created; the alias still points to 11:00 until it is Ready.
    let requeue = h.pass("2026-11-22T12:10:00Z").await;
    assert!(
        h.api
            .object("collections", "news-20261122t100000z")
            .is_none()
    );
    assert_eq!(
        h.collection_names(),
        ["news-20261122t110000z", "news-20261122t120000z"]
    );
    assert!(
        h.api
            .event_reasons()
            .contains(&"RetiredCollection".to_string())
    );
    // Next: the alias switch at 13:00 and the retirement of 11:00 at 13:00 are later than
    // the create of 13:00's collection at 13:00 (no lead time): all 50 minutes away.
    assert_eq!(requeue, Requeue::requeue(Duration::from_secs(50 * 60)));
    assert_eq!(h.status()["nextAction"]["action"], "Create");
}

#[tokio::test]
async fn max_collections_reached_is_ready_false_with_a_warning_event() {
    let mut h = Harness::start(spec(json!({"maxCollections": 1, "preemptiveCreate": "0s"}))).await;
    h.pass("2026-11-22T09:00:00Z").await;
    h.collection_ready("news-20261122t090000z");
    h.pass("2026-11-22T09:00:01Z").await;
    h.alias_bound();

    h.pass("2026-11-22T10:00:00Z").await;
    assert_eq!(h.collection_names(), ["news-20261122t090000z"]);
    assert_eq!(h.ready_reason(), "False/LimitReached");
    let status = h.status();
    let ready = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned())
        .expect("Ready");
    assert!(
        ready["message"]
            .as_str()
            .unwrap_or("")
            .contains("maxCollections 1"),
        "{ready}"
    );
    assert!(h.api.event_reasons().contains(&"LimitReached".to_string()));
    assert_eq!(
        h.api.object("collectionaliases", "news").expect("alias")["spec"]["collection"],
        "news_20261122T090000Z",
        "the alias stays where it is"
    );
}

#[tokio::test]
async fn a_same_named_alias_it_does_not_own_is_a_conflict() {
    let mut h = Harness::start(spec(json!({"preemptiveCreate": "0s"}))).await;
    h.api.create(
        "collectionaliases",
        "news",
        json!({"coordinatorRef": {"name": "engine"}, "collection": "other"}),
        json!({}),
    );
    let foreign: CollectionAlias =
        serde_json::from_value(h.api.object("collectionaliases", "news").expect("alias"))
            .expect("alias");
    h.aliases
        .apply_watcher_event(&watcher::Event::Apply(foreign));
    h.pass("2026-11-22T09:00:00Z").await;
    h.collection_ready("news-20261122t090000z");
    h.pass("2026-11-22T09:00:01Z").await;
    assert_eq!(h.ready_reason(), "False/Conflict");
    assert_eq!(
        h.api.object("collectionaliases", "news").expect("alias")["spec"]["collection"],
        "other",
        "someone else's alias is left alone"
    );
}
