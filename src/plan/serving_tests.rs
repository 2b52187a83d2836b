//! Table-driven tests of the gate and of the Collection serving plan.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use super::*;

fn hnsw() -> IndexSpec {
    IndexSpec {
        field_name: "embedding".to_string(),
        index_name: None,
        index_type: "HNSW".to_string(),
        metric_type: Some("COSINE".to_string()),
        params: BTreeMap::from([("M".to_string(), "16".to_string())]),
    }
}

fn inverted() -> IndexSpec {
    IndexSpec {
        field_name: "title".to_string(),
        index_name: Some("title_idx".to_string()),
        index_type: "INVERTED".to_string(),
        metric_type: None,
        params: BTreeMap::new(),
    }
}

fn index(name: &str, field: &str, state: IndexBuild, indexed: i64, total: i64) -> ObservedIndex {
    ObservedIndex {
        name: name.to_string(),
        field: field.to_string(),
        state,
        indexed_rows: indexed,
        total_rows: total,
        pending_rows: total - indexed,
        fail_reason: String::new(),
    }
}

fn built(name: &str, field: &str, rows: i64) -> ObservedIndex {
    index(name, field, IndexBuild::Finished, rows, rows)
}

fn observation(indexes: Vec<ObservedIndex>, load: LoadState, rows: i64) -> ServingObservation {
    ServingObservation {
        indexes,
        load,
        load_progress: match load {
            LoadState::Loaded => 100,
            LoadState::Loading => 40,
            _ => 0,
        },
        row_count: rows,
    }
}

fn guards(min_rows: Option<i64>, ratio: Option<f64>) -> SwapGuards {
    SwapGuards {
        min_row_count: min_rows,
        min_row_ratio: ratio,
    }
}

fn managed<'a>(
    declared: &'a [IndexSpec],
    observed: &'a ServingObservation,
    load_managed: bool,
) -> GateTarget<'a> {
    GateTarget {
        name: "products_v2",
        exists: true,
        matches_spec: true,
        declared: Some(declared),
        load_managed,
        observed,
    }
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).expect("a valid time")
}

// ---- the gate ----

#[test]
fn gate_outcomes() {
    let declared = [hnsw()];
    let serving = observation(
        vec![built("embedding", "embedding", 1_000)],
        LoadState::Loaded,
        1_000,
    );
    let building = observation(
        vec![index(
            "embedding",
            "embedding",
            IndexBuild::InProgress,
            610_000,
            1_000_000,
        )],
        LoadState::NotLoad,
        1_000_000,
    );
    let unloaded = observation(
        vec![built("embedding", "embedding", 1_000)],
        LoadState::NotLoad,
        1_000,
    );
    let loading = observation(
        vec![built("embedding", "embedding", 1_000)],
        LoadState::Loading,
        1_000,
    );
    let no_index = observation(Vec::new(), LoadState::NotLoad, 1_000);
    let failed = ServingObservation {
        indexes: vec![ObservedIndex {
            fail_reason: "out of memory".to_string(),
            ..index("embedding", "embedding", IndexBuild::Failed, 0, 1_000)
        }],
        ..unloaded.clone()
    };
    // Finished but rows arrived since: total ahead of indexed.
    let behind = observation(
        vec![index(
            "embedding",
            "embedding",
            IndexBuild::Finished,
            900,
            1_000,
        )],
        LoadState::Loaded,
        1_000,
    );
    let half = observation(
        vec![built("embedding", "embedding", 480_112)],
        LoadState::Loaded,
        480_112,
    );
    let empty = observation(
        vec![built("embedding", "embedding", 0)],
        LoadState::Loaded,
        0,
    );

    let at_boundary = observation(
        vec![built("embedding", "embedding", 952_218)],
        LoadState::Loaded,
        952_218,
    );
    let unmanaged_mixed = observation(
        vec![
            built("embedding", "embedding", 1_000),
            index("title_idx", "title", IndexBuild::Unissued, 0, 1_000),
        ],
        LoadState::Loaded,
        1_000,
    );
    let unmanaged_plain = observation(Vec::new(), LoadState::Loaded, 5);
    let nothing = ServingObservation::default();
    let v1_loaded = GateCurrent {
        name: "products_v1",
        loaded: true,
        row_count: 1_002_334,
    };
    let v1_unloaded = GateCurrent {
        name: "products_v1",
        loaded: false,
        row_count: 0,
    };

    struct Case<'a> {
        name: &'a str,
        policy: SwitchPolicy,
        target: GateTarget<'a>,
        current: Option<GateCurrent<'a>>,
        guards: Option<SwapGuards>,
        expected: Gate,
    }
    let wait = |waits: &[&str]| Gate::Wait {
        waits: waits.iter().map(|w| w.to_string()).collect(),
    };
    let missing = GateTarget {
        exists: false,
        ..managed(&declared, &nothing, true)
    };
    let cases = [
        Case {
            name: "serving target, no guards",
            policy: SwitchPolicy::WhenTargetServing,
            target: managed(&declared, &serving, true),
            current: Some(v1_loaded.clone()),
            guards: None,
            expected: Gate::Swap,
        },
        Case {
            name: "target missing",
            policy: SwitchPolicy::WhenTargetServing,
            target: missing.clone(),
            current: Some(v1_loaded.clone()),
            guards: None,
            expected: wait(&["does not exist"]),
        },
        Case {
            name: "target missing, even for Immediate",
            policy: SwitchPolicy::Immediate,
            target: missing,
            current: None,
            guards: None,
            expected: wait(&["does not exist"]),
        },
        Case {
            name: "Collection not Ready",
            policy: SwitchPolicy::WhenTargetServing,
            target: GateTarget {
                matches_spec: false,
                ..managed(&declared, &serving, true)
            },
            current: Some(v1_loaded.clone()),
            guards: None,
            expected: wait(&["its Collection is not Ready"]),
        },
        Case {
            name: "index building and not loaded: both named with figures",
            policy: SwitchPolicy::WhenTargetServing,
            target: managed(&declared, &building, true),
            current: Some(v1_loaded.clone()),
            guards: None,
            expected: wait(&[
                "index embedding 61 % built (610,000 of 1,000,000 rows, 390,000 pending; \
                 state InProgress)",
                "not loaded",
            ]),
        },
        Case {
            name: "declared index not created",
            policy: SwitchPolicy::WhenTargetServing,
            target: managed(&declared, &no_index, true),
            current: Some(v1_loaded.clone()),
            guards: None,
            expected: wait(&["index embedding on embedding not created yet", "not loaded"]),
        },
        Case {
            name: "index failed",
            policy: SwitchPolicy::WhenTargetServing,
            target: managed(&declared, &failed, true),
            current: Some(v1_loaded.clone()),
            guards: None,
            expected: wait(&["index embedding failed: out of memory", "not loaded"]),
        },
        Case {
            name: "Finished but rows arrived since",
            policy: SwitchPolicy::WhenTargetServing,
            target: managed(&declared, &behind, true),
            current: Some(v1_loaded.clone()),
            guards: None,
            expected: wait(&[
                "index embedding 90 % built (900 of 1,000 rows, 100 pending; state Finished)",
            ]),
        },
        Case {
            name: "loading",
            policy: SwitchPolicy::WhenTargetServing,
            target: managed(&declared, &loading, true),
            current: Some(v1_loaded.clone()),
            guards: None,
            expected: wait(&["loading (40 %)"]),
        },
        Case {
            name: "load: Never, current loaded: wait for someone to load it",
            policy: SwitchPolicy::WhenTargetServing,
            target: managed(&declared, &unloaded, false),
            current: Some(v1_loaded.clone()),
            guards: None,
            expected: wait(&["not loaded (while products_v1 is)"]),
        },
        Case {
            name: "load: Never, current not loaded either: serves no less",
            policy: SwitchPolicy::WhenTargetServing,
            target: managed(&declared, &unloaded, false),
            current: Some(v1_unloaded.clone()),
            guards: None,
            expected: Gate::Swap,
        },
        Case {
            name: "load: Never, first binding",
            policy: SwitchPolicy::WhenTargetServing,
            target: managed(&declared, &unloaded, false),
            current: None,
            guards: None,
            expected: Gate::Swap,
        },
        Case {
            name: "WhileAliased, first binding: wait for the load the operator makes",
            policy: SwitchPolicy::WhenTargetServing,
            target: managed(&declared, &unloaded, true),
            current: None,
            guards: None,
            expected: wait(&["not loaded"]),
        },
        Case {
            name: "unmanaged: every engine index counts",
            policy: SwitchPolicy::WhenTargetServing,
            target: GateTarget {
                declared: None,
                ..managed(&declared, &unmanaged_mixed, false)
            },
            current: Some(v1_loaded.clone()),
            guards: None,
            expected: wait(&[
                "index title_idx 0 % built (0 of 1,000 rows, 1,000 pending; state Unissued)",
            ]),
        },
        Case {
            name: "unmanaged without indexes, loaded",
            policy: SwitchPolicy::WhenTargetServing,
            target: GateTarget {
                declared: None,
                ..managed(&declared, &unmanaged_plain, false)
            },
            current: Some(v1_loaded.clone()),
            guards: None,
            expected: Gate::Swap,
        },
        Case {
            name: "WhenTargetReady ignores indexes and load",
            policy: SwitchPolicy::WhenTargetReady,
            target: managed(&declared, &building, true),
            current: Some(v1_loaded.clone()),
            guards: None,
            expected: Gate::Swap,
        },
        Case {
            name: "WhenTargetReady still needs a Ready Collection",
            policy: SwitchPolicy::WhenTargetReady,
            target: GateTarget {
                matches_spec: false,
                ..managed(&declared, &serving, true)
            },
            current: None,
            guards: None,
            expected: wait(&["its Collection is not Ready"]),
        },
        Case {
            name: "Immediate ignores readiness",
            policy: SwitchPolicy::Immediate,
            target: GateTarget {
                matches_spec: false,
                ..managed(&declared, &building, true)
            },
            current: Some(v1_loaded.clone()),
            guards: None,
            expected: Gate::Swap,
        },
        Case {
            name: "ratio guard fails with the figures",
            policy: SwitchPolicy::WhenTargetServing,
            target: managed(&declared, &half, true),
            current: Some(v1_loaded.clone()),
            guards: Some(guards(None, Some(0.95))),
            expected: Gate::Blocked {
                message: "products_v2 has 480,112 rows, needs >= 95 % of products_v1's \
                          1,002,334 (952,218)"
                    .to_string(),
            },
        },
        Case {
            name: "ratio guard passes at the boundary",
            policy: SwitchPolicy::WhenTargetServing,
            target: managed(&declared, &at_boundary, true),
            current: Some(v1_loaded.clone()),
            guards: Some(guards(None, Some(0.95))),
            expected: Gate::Swap,
        },
        Case {
            name: "ratio guard does not apply to the first binding",
            policy: SwitchPolicy::WhenTargetServing,
            target: managed(&declared, &half, true),
            current: None,
            guards: Some(guards(None, Some(0.95))),
            expected: Gate::Swap,
        },
        Case {
            name: "absolute guard fails",
            policy: SwitchPolicy::WhenTargetServing,
            target: managed(&declared, &half, true),
            current: None,
            guards: Some(guards(Some(1_000_000), None)),
            expected: Gate::Blocked {
                message: "products_v2 has 480,112 rows, needs >= 1,000,000".to_string(),
            },
        },
        Case {
            name: "both guards fail, both named",
            policy: SwitchPolicy::WhenTargetServing,
            target: managed(&declared, &half, true),
            current: Some(v1_loaded.clone()),
            guards: Some(guards(Some(500_000), Some(0.5))),
            expected: Gate::Blocked {
                message: "products_v2 has 480,112 rows, needs >= 500,000; products_v2 has \
                          480,112 rows, needs >= 50 % of products_v1's 1,002,334 (501,167)"
                    .to_string(),
            },
        },
        Case {
            name: "an engine reporting 0 rows says so",
            policy: SwitchPolicy::WhenTargetServing,
            target: managed(&declared, &empty, true),
            current: Some(v1_unloaded.clone()),
            guards: Some(guards(Some(1), None)),
            expected: Gate::Blocked {
                message: "products_v2 has 0 rows, needs >= 1 (the engine reports 0 rows)"
                    .to_string(),
            },
        },
        Case {
            name: "ratio against an empty current target passes",
            policy: SwitchPolicy::WhenTargetServing,
            target: managed(&declared, &empty, true),
            current: Some(v1_unloaded.clone()),
            guards: Some(guards(None, Some(0.95))),
            expected: Gate::Swap,
        },
        Case {
            name: "guards wait until the target serves",
            policy: SwitchPolicy::WhenTargetServing,
            target: managed(&declared, &building, true),
            current: Some(v1_loaded.clone()),
            guards: Some(guards(Some(10_000_000), None)),
            expected: wait(&[
                "index embedding 61 % built (610,000 of 1,000,000 rows, 390,000 pending; \
                 state InProgress)",
                "not loaded",
            ]),
        },
        Case {
            name: "guards apply to Immediate too",
            policy: SwitchPolicy::Immediate,
            target: managed(&declared, &half, true),
            current: Some(v1_loaded),
            guards: Some(guards(None, Some(0.95))),
            expected: Gate::Blocked {
                message: "products_v2 has 480,112 rows, needs >= 95 % of products_v1's \
                          1,002,334 (952,218)"
                    .to_string(),
            },
        },
    ];
    for case in cases {
        let got = gate(
            case.policy,
            &case.target,
            case.current.as_ref(),
            case.guards.as_ref(),
        );
        assert_eq!(got, case.expected, "case: {}", case.name);
    }
}

#[test]
fn gate_message_names_the_target_and_each_wait() {
    let waiting = Gate::Wait {
        waits: vec!["index vec 61 % built".to_string(), "not loaded".to_string()],
    };
    assert_eq!(
        waiting.message("products_v2"),
        "waiting for products_v2: index vec 61 % built; not loaded"
    );
}

#[test]
fn figures_are_grouped_and_ratios_trimmed() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(1_000), "1,000");
    assert_eq!(thousands(1_002_334), "1,002,334");
    assert_eq!(thousands(-12_345), "-12,345");
    assert_eq!(ratio_percent(0.95), "95");
    assert_eq!(ratio_percent(0.955), "95.5");
    assert_eq!(ratio_percent(1.0), "100");
    assert_eq!(percent(610, 1_000), 61);
    assert_eq!(percent(0, 0), 100);
}

// ---- the Collection side ----

struct Pass {
    declared: Vec<IndexSpec>,
    load: Option<LoadSpec>,
    ready: bool,
    observed: ServingObservation,
    aliased: bool,
    awaited: bool,
    release_at: Option<Timestamp>,
    now: Timestamp,
}

impl Pass {
    fn new(policy: LoadPolicy, observed: ServingObservation) -> Self {
        Self {
            declared: vec![hnsw()],
            load: Some(LoadSpec {
                policy,
                release_delay: "10m".to_string(),
                replicas: Some(2),
                resource_groups: vec!["rg1".to_string()],
            }),
            ready: true,
            observed,
            aliased: false,
            awaited: false,
            release_at: None,
            now: at(0),
        }
    }

    fn plan(&self) -> CollectionServing {
        plan_collection_serving(&CollectionServingInput {
            ready: self.ready,
            declared: &self.declared,
            load: self.load.as_ref(),
            release_delay: Duration::from_secs(600),
            observed: &self.observed,
            aliased: self.aliased,
            awaited: self.awaited,
            release_at: self.release_at,
            now: self.now,
        })
    }
}

fn load_action() -> ServingAction {
    ServingAction::LoadCollection {
        replicas: Some(2),
        resource_groups: vec!["rg1".to_string()],
    }
}

fn verdict(status: bool, reason: &'static str, message: &str) -> ConditionVerdict {
    ConditionVerdict {
        status,
        reason,
        message: message.to_string(),
    }
}

#[test]
fn collection_serving_outcomes() {
    let fresh = observation(Vec::new(), LoadState::NotLoad, 0);
    let indexed_unloaded = observation(
        vec![built("embedding", "embedding", 1_000)],
        LoadState::NotLoad,
        1_000,
    );
    let indexed_loaded = observation(
        vec![built("embedding", "embedding", 1_000)],
        LoadState::Loaded,
        1_000,
    );
    let building = observation(
        vec![index(
            "embedding",
            "embedding",
            IndexBuild::InProgress,
            500,
            1_000,
        )],
        LoadState::NotLoad,
        1_000,
    );

    struct Case {
        name: &'static str,
        pass: Pass,
        actions: Vec<ServingAction>,
        indexed: Option<ConditionVerdict>,
        loaded: Option<ConditionVerdict>,
        serving: ConditionVerdict,
        release_at: Option<Timestamp>,
        recheck_after: Option<Duration>,
    }
    let cases = vec![
        Case {
            name: "not Ready: nothing to do, everything False",
            pass: Pass {
                ready: false,
                ..Pass::new(LoadPolicy::Always, fresh.clone())
            },
            actions: Vec::new(),
            indexed: Some(verdict(
                false,
                "NotReady",
                "the engine collection does not match the spec yet (see Ready)",
            )),
            loaded: Some(verdict(
                false,
                "NotReady",
                "the engine collection does not match the spec yet (see Ready)",
            )),
            serving: verdict(
                false,
                "NotReady",
                "the engine collection does not match the spec yet (see Ready)",
            ),
            release_at: None,
            recheck_after: None,
        },
        Case {
            name: "fresh, Always: create the index, load next pass",
            pass: Pass::new(LoadPolicy::Always, fresh.clone()),
            actions: vec![ServingAction::CreateIndex(hnsw())],
            indexed: Some(verdict(
                false,
                "IndexMissing",
                "index embedding on embedding not created yet",
            )),
            loaded: Some(verdict(
                false,
                "WaitingForIndexes",
                "not loaded: waiting for every declared index to be created",
            )),
            serving: verdict(
                false,
                "NotIndexed",
                "index embedding on embedding not created yet; not loaded",
            ),
            release_at: None,
            recheck_after: None,
        },
        Case {
            name: "building, Always: load while the index builds",
            pass: Pass::new(LoadPolicy::Always, building.clone()),
            actions: vec![load_action()],
            indexed: Some(verdict(
                false,
                "IndexBuilding",
                "index embedding 50 % built (500 of 1,000 rows, 500 pending; state InProgress)",
            )),
            loaded: Some(verdict(false, "Loading", "load requested")),
            serving: verdict(
                false,
                "NotIndexed",
                "index embedding 50 % built (500 of 1,000 rows, 500 pending; state \
                 InProgress); not loaded",
            ),
            release_at: None,
            recheck_after: None,
        },
        Case {
            name: "indexed and loaded: Serving",
            pass: Pass::new(LoadPolicy::Always, indexed_loaded.clone()),
            actions: Vec::new(),
            indexed: Some(verdict(
                true,
                "Built",
                "1 index(es) built for all 1,000 rows",
            )),
            loaded: Some(verdict(true, "Loaded", "loaded")),
            serving: verdict(true, "Serving", "indexed and loaded, 1,000 rows"),
            release_at: None,
            recheck_after: None,
        },
        Case {
            name: "Never: no load, no Loaded condition, not Serving",
            pass: Pass::new(LoadPolicy::Never, indexed_unloaded.clone()),
            actions: Vec::new(),
            indexed: Some(verdict(
                true,
                "Built",
                "1 index(es) built for all 1,000 rows",
            )),
            loaded: None,
            serving: verdict(false, "NotLoaded", "not loaded"),
            release_at: None,
            recheck_after: None,
        },
        Case {
            name: "Never, loaded by someone else: Serving, never released",
            pass: Pass::new(LoadPolicy::Never, indexed_loaded.clone()),
            actions: Vec::new(),
            indexed: Some(verdict(
                true,
                "Built",
                "1 index(es) built for all 1,000 rows",
            )),
            loaded: None,
            serving: verdict(true, "Serving", "indexed and loaded, 1,000 rows"),
            release_at: None,
            recheck_after: None,
        },
        Case {
            name: "no spec.load at all behaves as Never",
            pass: Pass {
                load: None,
                declared: Vec::new(),
                ..Pass::new(LoadPolicy::Always, indexed_unloaded.clone())
            },
            actions: Vec::new(),
            indexed: None,
            loaded: None,
            serving: verdict(false, "NotLoaded", "not loaded"),
            release_at: None,
            recheck_after: None,
        },
        Case {
            name: "WhileAliased, no alias: stays unloaded",
            pass: Pass::new(LoadPolicy::WhileAliased, indexed_unloaded.clone()),
            actions: Vec::new(),
            indexed: Some(verdict(
                true,
                "Built",
                "1 index(es) built for all 1,000 rows",
            )),
            loaded: Some(verdict(
                false,
                "NotAliased",
                "not loaded: no alias points to it or waits for it",
            )),
            serving: verdict(false, "NotLoaded", "not loaded"),
            release_at: None,
            recheck_after: None,
        },
        Case {
            name: "WhileAliased, an alias waits for it: load",
            pass: Pass {
                awaited: true,
                ..Pass::new(LoadPolicy::WhileAliased, indexed_unloaded.clone())
            },
            actions: vec![load_action()],
            indexed: Some(verdict(
                true,
                "Built",
                "1 index(es) built for all 1,000 rows",
            )),
            loaded: Some(verdict(false, "Loading", "load requested")),
            serving: verdict(false, "NotLoaded", "not loaded"),
            release_at: None,
            recheck_after: None,
        },
        Case {
            name: "WhileAliased, the last alias left: schedule the release",
            pass: Pass::new(LoadPolicy::WhileAliased, indexed_loaded.clone()),
            actions: Vec::new(),
            indexed: Some(verdict(
                true,
                "Built",
                "1 index(es) built for all 1,000 rows",
            )),
            loaded: Some(verdict(
                true,
                "ReleaseScheduled",
                &format!("loaded; no alias points to it, release due at {}", at(600)),
            )),
            serving: verdict(true, "Serving", "indexed and loaded, 1,000 rows"),
            release_at: Some(at(600)),
            recheck_after: Some(Duration::from_secs(600)),
        },
        Case {
            name: "WhileAliased, release scheduled, not due: keep it and wake up when due",
            pass: Pass {
                release_at: Some(at(600)),
                now: at(420),
                ..Pass::new(LoadPolicy::WhileAliased, indexed_loaded.clone())
            },
            actions: Vec::new(),
            indexed: Some(verdict(
                true,
                "Built",
                "1 index(es) built for all 1,000 rows",
            )),
            loaded: Some(verdict(
                true,
                "ReleaseScheduled",
                &format!("loaded; no alias points to it, release due at {}", at(600)),
            )),
            serving: verdict(true, "Serving", "indexed and loaded, 1,000 rows"),
            release_at: Some(at(600)),
            recheck_after: Some(Duration::from_secs(180)),
        },
        Case {
            name: "WhileAliased, release due: release",
            pass: Pass {
                release_at: Some(at(600)),
                now: at(600),
                ..Pass::new(LoadPolicy::WhileAliased, indexed_loaded.clone())
            },
            actions: vec![ServingAction::ReleaseCollection],
            indexed: Some(verdict(
                true,
                "Built",
                "1 index(es) built for all 1,000 rows",
            )),
            loaded: Some(verdict(
                false,
                "Released",
                "released: no alias has pointed to it for the release delay",
            )),
            serving: verdict(false, "NotLoaded", "released"),
            release_at: None,
            recheck_after: None,
        },
        Case {
            name: "WhileAliased, the alias came back inside the delay: cancel, no reload",
            pass: Pass {
                aliased: true,
                release_at: Some(at(600)),
                now: at(300),
                ..Pass::new(LoadPolicy::WhileAliased, indexed_loaded.clone())
            },
            actions: Vec::new(),
            indexed: Some(verdict(
                true,
                "Built",
                "1 index(es) built for all 1,000 rows",
            )),
            loaded: Some(verdict(true, "Loaded", "loaded")),
            serving: verdict(true, "Serving", "indexed and loaded, 1,000 rows"),
            release_at: None,
            recheck_after: None,
        },
        Case {
            name: "WhileAliased, released by someone else while aliased: load again",
            pass: Pass {
                aliased: true,
                ..Pass::new(LoadPolicy::WhileAliased, indexed_unloaded.clone())
            },
            actions: vec![load_action()],
            indexed: Some(verdict(
                true,
                "Built",
                "1 index(es) built for all 1,000 rows",
            )),
            loaded: Some(verdict(false, "Loading", "load requested")),
            serving: verdict(false, "NotLoaded", "not loaded"),
            release_at: None,
            recheck_after: None,
        },
        Case {
            name: "a second index, named, is matched by name",
            pass: Pass {
                declared: vec![hnsw(), inverted()],
                ..Pass::new(
                    LoadPolicy::Always,
                    observation(
                        vec![
                            built("embedding", "embedding", 10),
                            built("title_idx", "title", 10),
                        ],
                        LoadState::Loading,
                        10,
                    ),
                )
            },
            actions: Vec::new(),
            indexed: Some(verdict(true, "Built", "2 index(es) built for all 10 rows")),
            loaded: Some(verdict(false, "Loading", "loading (40 %)")),
            serving: verdict(false, "NotLoaded", "loading (40 %)"),
            release_at: None,
            recheck_after: None,
        },
    ];
    for case in cases {
        let got = case.pass.plan();
        assert_eq!(got.actions, case.actions, "actions: {}", case.name);
        assert_eq!(got.indexed, case.indexed, "Indexed: {}", case.name);
        assert_eq!(got.loaded, case.loaded, "Loaded: {}", case.name);
        assert_eq!(got.serving, case.serving, "Serving: {}", case.name);
        assert_eq!(got.release_at, case.release_at, "releaseAt: {}", case.name);
        assert_eq!(
            got.recheck_after, case.recheck_after,
            "recheck: {}",
            case.name
        );
    }
}

#[test]
fn a_failed_index_is_reported_not_recreated() {
    let failed = ServingObservation {
        indexes: vec![ObservedIndex {
            fail_reason: "dim mismatch".to_string(),
            ..index("embedding", "embedding", IndexBuild::Failed, 0, 100)
        }],
        ..observation(Vec::new(), LoadState::NotLoad, 100)
    };
    let got = Pass::new(LoadPolicy::Never, failed).plan();
    assert_eq!(got.actions, Vec::new());
    assert_eq!(
        got.indexed,
        Some(verdict(
            false,
            "IndexFailed",
            "index embedding failed: dim mismatch"
        ))
    );
}

// ---- holding swaps back in alias plans ----

fn key(name: &str) -> ObjectKey {
    ObjectKey {
        namespace: "default".to_string(),
        name: name.to_string(),
    }
}

fn alias_intent(target: &str, bound: Option<&str>) -> AliasIntent {
    AliasIntent {
        key: key("products"),
        seniority: crate::plan::Seniority {
            created: "2026-01-01T00:00:00Z".to_string(),
            key: key("products"),
        },
        database: "default".to_string(),
        alias: "products".to_string(),
        target: target.to_string(),
        switch_policy: SwitchPolicy::WhenTargetServing,
        deletion_policy: crate::crd::AliasDeletionPolicy::Delete,
        adopt: false,
        paused: false,
        deleting: false,
        bound: bound.map(str::to_string),
    }
}

fn alter(from: &str, to: &str) -> Action {
    Action::AlterAlias {
        key: key("products"),
        database: "default".to_string(),
        alias: "products".to_string(),
        from: from.to_string(),
        to: to.to_string(),
    }
}

#[test]
fn a_closed_gate_holds_the_swap_with_its_reason() {
    let intent = alias_intent("products_v2", Some("products_v1"));
    let planned = || (vec![alter("products_v1", "products_v2")], Verdict::Ready);
    let cases = [
        (Gate::Swap, planned()),
        (
            Gate::Wait {
                waits: vec!["not loaded".to_string()],
            },
            (
                Vec::new(),
                Verdict::NotReady {
                    reason: Reason::WaitingForTarget,
                    message: "waiting for products_v2: not loaded; alias products still \
                              points to products_v1"
                        .to_string(),
                },
            ),
        ),
        (
            Gate::Blocked {
                message: "products_v2 has 480,112 rows, needs >= 95 % of products_v1's \
                          1,002,334 (952,218)"
                    .to_string(),
            },
            (
                Vec::new(),
                Verdict::NotReady {
                    reason: Reason::SwapBlocked,
                    message: "products_v2 has 480,112 rows, needs >= 95 % of products_v1's \
                              1,002,334 (952,218); alias products still points to products_v1"
                        .to_string(),
                },
            ),
        ),
    ];
    for (gate, expected) in cases {
        assert_eq!(hold_alias(&intent, planned(), &gate), expected, "{gate:?}");
    }

    // Nothing to bind (already there, or a clean-up): the gate changes nothing.
    let nothing = (Vec::new(), Verdict::Ready);
    let blocked = Gate::Blocked {
        message: "x".to_string(),
    };
    assert_eq!(hold_alias(&intent, nothing.clone(), &blocked), nothing);
}

#[test]
fn a_held_swap_in_a_whole_plan_keeps_the_old_target_undropped() {
    let alias = alias_intent("products_v2", Some("products_v1"));
    let drop_v1 = Action::DropCollection {
        key: key("products-v1"),
        database: "default".to_string(),
        name: "products_v1".to_string(),
    };
    let other = Action::CreateAlias {
        key: key("other"),
        database: "default".to_string(),
        alias: "other".to_string(),
        target: "products_v1".to_string(),
    };
    let fresh = || Plan {
        actions: vec![
            alter("products_v1", "products_v2"),
            other.clone(),
            drop_v1.clone(),
        ],
        verdicts: BTreeMap::from([
            (key("products"), Verdict::Ready),
            (key("products-v1"), Verdict::Released),
            (key("other"), Verdict::Ready),
        ]),
    };

    let mut open = fresh();
    hold_swaps(
        &mut open,
        std::slice::from_ref(&alias),
        &BTreeMap::from([(key("products"), Gate::Swap)]),
    );
    assert_eq!(open, fresh());

    let mut held = fresh();
    let waiting = Gate::Wait {
        waits: vec!["loading (40 %)".to_string()],
    };
    hold_swaps(
        &mut held,
        std::slice::from_ref(&alias),
        &BTreeMap::from([(key("products"), waiting)]),
    );
    assert_eq!(held.actions, vec![other]);
    assert_eq!(
        held.verdicts[&key("products")],
        Verdict::NotReady {
            reason: Reason::WaitingForTarget,
            message: "waiting for products_v2: loading (40 %); alias products still points \
                      to products_v1"
                .to_string(),
        }
    );
    assert_eq!(
        held.verdicts[&key("products-v1")],
        Verdict::NotReady {
            reason: Reason::HasAliases,
            message: "collection products_v1 in database default is not dropped: alias \
                      products still points to it while its swap waits"
                .to_string(),
        }
    );
    assert_eq!(held.verdicts[&key("other")], Verdict::Ready);
}

#[test]
fn a_closed_gate_is_checked_at_most_every_five_seconds_backing_off_to_a_minute() {
    let cases = [
        (0, 5),
        (1, 5),
        (20, 5),
        (40, 10),
        (120, 30),
        (240, 60),
        (3_600, 60),
    ];
    for (waited, expected) in cases {
        assert_eq!(
            gate_recheck_after(Duration::from_secs(waited)),
            Duration::from_secs(expected),
            "after {waited} s"
        );
    }
}
