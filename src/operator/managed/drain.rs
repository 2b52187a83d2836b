//! How the StreamingNode StatefulSet is resized without ever removing a node that holds
//! a pchannel: how many nodes the pchannels ask for, the freeze → drain → scale-down
//! steps decided from the coordinator's WAL placement, and the status table with the
//! `WALPlacementReady` and `Draining` conditions. Pure: the controller reads the
//! placement and the pods, and applies the step.

use std::collections::{BTreeMap, BTreeSet};

use crate::client::{PlacedNode, WalPlacement};
use crate::crd::StreamingSpec;

/// StreamingNode replicas the placement asks for: enough nodes for every pchannel at
/// `maxPChannelsPerNode`, plus spares, within `[minReplicas, maxReplicas]`.
pub fn streaming_replicas(spec: &StreamingSpec) -> u32 {
    let per_node = spec.max_pchannels_per_node.max(1);
    let needed = spec.pchannels.div_ceil(per_node) + spec.spare_nodes;
    needed.clamp(spec.min_replicas, spec.max_replicas.max(spec.min_replicas))
}

/// Which StatefulSet pod a node address belongs to: a stable DNS name
/// `<statefulset>-<ordinal>.<…>` (what managed nodes advertise), or a pod IP of the
/// StatefulSet's pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ordinals {
    /// The StreamingNode StatefulSet's name.
    pub statefulset: String,
    /// Pod IP → ordinal, from the StatefulSet's pods.
    pub by_ip: BTreeMap<String, u32>,
}

impl Ordinals {
    /// Ordinals of `statefulset` known by DNS name only.
    pub fn named(statefulset: &str) -> Self {
        Self {
            statefulset: statefulset.to_string(),
            by_ip: BTreeMap::new(),
        }
    }

    /// The ordinal of a pod name `<statefulset>-<ordinal>`.
    pub fn of_pod(&self, pod: &str) -> Option<u32> {
        pod.strip_prefix(self.statefulset.as_str())?
            .strip_prefix('-')?
            .parse()
            .ok()
    }

    /// The ordinal of the pod at `address` (`host:port`), when it is one of ours.
    pub fn of(&self, address: &str) -> Option<u32> {
        let host = address
            .rsplit_once(':')
            .map_or(address, |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        if let Some(ordinal) = self.by_ip.get(host) {
            return Some(*ordinal);
        }
        self.of_pod(host.split('.').next()?)
    }

    /// The pod a node runs in: `<statefulset>-<ordinal>` for ours, else its address.
    pub fn pod(&self, address: &str) -> String {
        match self.of(address) {
            Some(ordinal) => format!("{}-{ordinal}", self.statefulset),
            None => address.to_string(),
        }
    }
}

/// What to do with the StreamingNode StatefulSet in this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScaleStep {
    /// Nothing to drain: keep (or scale up to) `replicas`.
    Steady {
        /// Replicas to apply.
        replicas: u32,
    },
    /// First step of a scale-down: freeze the nodes of the ordinals to remove, so that
    /// the balancer moves their pchannels away; keep `replicas` meanwhile.
    Freeze {
        /// Server IDs to freeze.
        server_ids: Vec<i64>,
        /// Replicas to keep.
        replicas: u32,
    },
    /// Frozen, but still holding pchannels (or some pchannel has no holder): wait.
    Draining {
        /// Replicas to keep.
        replicas: u32,
        /// `(ordinal, pchannels held)` of the nodes being drained.
        holding: Vec<(u32, usize)>,
    },
    /// The nodes to remove hold nothing: lower `replicas`.
    ScaleDown {
        /// The new replica count.
        replicas: u32,
    },
    /// Take server IDs off the freeze list (nodes that are gone, or that stay after an
    /// aborted scale-down), keeping `replicas`.
    Defreeze {
        /// Server IDs to defreeze.
        server_ids: Vec<i64>,
        /// Replicas to apply.
        replicas: u32,
    },
}

impl ScaleStep {
    /// The StatefulSet replicas this step applies.
    pub fn replicas(&self) -> u32 {
        match self {
            Self::Steady { replicas }
            | Self::Freeze { replicas, .. }
            | Self::Draining { replicas, .. }
            | Self::ScaleDown { replicas }
            | Self::Defreeze { replicas, .. } => *replicas,
        }
    }
}

/// Decides the next step towards `desired` StreamingNode replicas from `current` (the
/// StatefulSet's replicas; `None` before it exists) and the placement (`None` when the
/// coordinator cannot be asked: then nothing is ever removed).
///
/// A scale-down removes the highest ordinals, and only once every node of those ordinals
/// is frozen, holds no pchannel, and every one of the `pchannels` has a holder.
pub fn plan_streaming_scale(
    desired: u32,
    current: Option<u32>,
    placement: Option<&WalPlacement>,
    ordinals: &Ordinals,
    pchannels: u32,
) -> ScaleStep {
    let Some(current) = current else {
        return ScaleStep::Steady { replicas: desired };
    };
    let Some(placement) = placement else {
        return ScaleStep::Steady {
            replicas: current.max(desired),
        };
    };
    let live: BTreeSet<i64> = placement.nodes.iter().map(|n| n.server_id).collect();
    if desired >= current {
        // Frozen entries that should not be: nodes gone for good, or nodes that stay.
        let mut stale: Vec<i64> = placement
            .frozen
            .iter()
            .copied()
            .filter(|id| !live.contains(id))
            .collect();
        stale.extend(placement.nodes.iter().filter_map(|node| {
            let ordinal = ordinals.of(&node.address)?;
            (ordinal < desired && placement.frozen.contains(&node.server_id))
                .then_some(node.server_id)
        }));
        stale.sort_unstable();
        stale.dedup();
        return if stale.is_empty() {
            ScaleStep::Steady { replicas: desired }
        } else {
            ScaleStep::Defreeze {
                server_ids: stale,
                replicas: desired,
            }
        };
    }
    let victims: Vec<&PlacedNode> = placement
        .nodes
        .iter()
        .filter(|node| ordinals.of(&node.address).is_some_and(|o| o >= desired))
        .collect();
    let unfrozen: Vec<i64> = victims
        .iter()
        .filter(|node| !placement.frozen.contains(&node.server_id))
        .map(|node| node.server_id)
        .collect();
    if !unfrozen.is_empty() {
        return ScaleStep::Freeze {
            server_ids: unfrozen,
            replicas: current,
        };
    }
    let holding: Vec<(u32, usize)> = victims
        .iter()
        .filter(|node| !node.pchannels.is_empty())
        .filter_map(|node| Some((ordinals.of(&node.address)?, node.pchannels.len())))
        .collect();
    let held: usize = placement.nodes.iter().map(|n| n.pchannels.len()).sum();
    if !holding.is_empty() || held < pchannels as usize {
        return ScaleStep::Draining {
            replicas: current,
            holding,
        };
    }
    ScaleStep::ScaleDown { replicas: desired }
}

/// Condition type: every pchannel has a holder.
pub const WAL_PLACEMENT_READY: &str = "WALPlacementReady";
/// Condition type: streaming nodes are being emptied before a scale-down.
pub const DRAINING: &str = "Draining";

/// The status table and the `WALPlacementReady` / `Draining` conditions for this pass.
pub fn streaming_status(
    placement: Option<&WalPlacement>,
    step: &ScaleStep,
    desired: u32,
    ordinals: &Ordinals,
    pchannels: u32,
) -> (
    crate::crd::StreamingStatus,
    Vec<crate::operator::status::Wanted>,
) {
    let statefulset = ordinals.statefulset.as_str();
    use crate::crd::{PChannelPlacement, StreamingNodePlacement, StreamingStatus};
    use crate::operator::status::{Truth, Wanted};
    let mut status = StreamingStatus {
        desired_replicas: desired,
        replicas: step.replicas(),
        ..Default::default()
    };
    let placement_condition = match placement {
        None => Wanted::new(
            WAL_PLACEMENT_READY,
            Truth::Unknown,
            "PlacementUnknown",
            "the coordinator's WAL placement could not be read",
        ),
        Some(placement) => {
            status.assignment_version = placement.version;
            let mut held = 0usize;
            for node in &placement.nodes {
                let pod = ordinals.pod(&node.address);
                held += node.pchannels.len();
                status.nodes.push(StreamingNodePlacement {
                    pod: pod.clone(),
                    server_id: node.server_id,
                    frozen: placement.frozen.contains(&node.server_id),
                    pchannels: node.pchannels.len() as u32,
                });
                for (name, term) in &node.pchannels {
                    status.pchannels.push(PChannelPlacement {
                        name: name.clone(),
                        term: *term,
                        pod: Some(pod.clone()),
                    });
                }
            }
            status.nodes.sort_by(|a, b| a.pod.cmp(&b.pod));
            status.pchannels.sort_by(|a, b| a.name.cmp(&b.name));
            if held >= pchannels as usize {
                Wanted::new(
                    WAL_PLACEMENT_READY,
                    Truth::True,
                    "AllAssigned",
                    format!(
                        "{pchannels} pchannels on {} streaming nodes",
                        placement.nodes.len()
                    ),
                )
            } else {
                Wanted::new(
                    WAL_PLACEMENT_READY,
                    Truth::False,
                    "Unassigned",
                    format!(
                        "{} of {pchannels} pchannels have no holder",
                        pchannels as usize - held
                    ),
                )
            }
        }
    };
    let draining = match step {
        ScaleStep::Freeze { server_ids, .. } => Wanted::new(
            DRAINING,
            Truth::True,
            "Freezing",
            format!(
                "scaling down to {desired}: freezing server IDs {server_ids:?} so that their \
                 pchannels move"
            ),
        ),
        ScaleStep::Draining { holding, .. } => Wanted::new(
            DRAINING,
            Truth::True,
            "WaitingForPChannels",
            if holding.is_empty() {
                format!("scaling down to {desired}: waiting until every pchannel has a holder")
            } else {
                let held: Vec<String> = holding
                    .iter()
                    .map(|(ordinal, count)| format!("{statefulset}-{ordinal} holds {count}"))
                    .collect();
                format!("scaling down to {desired}: waiting for {}", held.join(", "))
            },
        ),
        _ => Wanted::new(
            DRAINING,
            Truth::False,
            "Idle",
            "no streaming node is being drained",
        ),
    };
    (status, vec![placement_condition, draining])
}

#[cfg(test)]
mod tests {
    use super::*;
    const STS: &str = "wal-streamingnode";

    fn node(id: i64, ordinal: u32, channels: &[&str]) -> PlacedNode {
        PlacedNode {
            server_id: id,
            address: format!("{STS}-{ordinal}.{STS}.ns.svc:22222"),
            pchannels: channels.iter().map(|c| (c.to_string(), 1)).collect(),
        }
    }

    fn placement(nodes: Vec<PlacedNode>, frozen: &[i64]) -> WalPlacement {
        WalPlacement {
            version: 1,
            nodes,
            frozen: frozen.iter().copied().collect(),
        }
    }

    #[test]
    fn replicas_follow_pchannels_per_node_plus_spares() {
        let spec = |p, per, spare, min, max| StreamingSpec {
            pchannels: p,
            max_pchannels_per_node: per,
            spare_nodes: spare,
            min_replicas: min,
            max_replicas: max,
            wal_storage: None,
            resources: None,
        };
        assert_eq!(streaming_replicas(&spec(16, 4, 1, 1, 16)), 5);
        assert_eq!(streaming_replicas(&spec(16, 4, 0, 1, 16)), 4);
        assert_eq!(streaming_replicas(&spec(17, 4, 0, 1, 16)), 5);
        assert_eq!(streaming_replicas(&spec(2, 4, 0, 3, 16)), 3, "min");
        assert_eq!(streaming_replicas(&spec(64, 1, 1, 1, 8)), 8, "max");
    }

    #[test]
    fn ordinals_come_from_stable_addresses_or_pod_ips() {
        let mut ordinals = Ordinals::named(STS);
        assert_eq!(
            ordinals.of("wal-streamingnode-3.wal-streamingnode.ns.svc:22222"),
            Some(3)
        );
        assert_eq!(ordinals.of("wal-streamingnode-12:22222"), Some(12));
        assert_eq!(ordinals.of("other-3.x:1"), None);
        assert_eq!(ordinals.of("wal-streamingnode-x.y:1"), None);
        assert_eq!(ordinals.of("10.0.0.7:22222"), None);
        ordinals.by_ip.insert("10.0.0.7".into(), 5);
        ordinals.by_ip.insert("fd00::7".into(), 6);
        assert_eq!(ordinals.of("10.0.0.7:22222"), Some(5));
        assert_eq!(ordinals.of("[fd00::7]:22222"), Some(6));
        assert_eq!(ordinals.pod("10.0.0.7:22222"), "wal-streamingnode-5");
        assert_eq!(ordinals.pod("10.0.0.8:22222"), "10.0.0.8:22222");
    }

    /// Name, desired, current replicas, placement, expected step.
    type ScaleRow = (
        &'static str,
        u32,
        Option<u32>,
        Option<WalPlacement>,
        ScaleStep,
    );

    #[test]
    fn scale_steps() {
        let a = ["ch_0", "ch_1"];
        let b = ["ch_2", "ch_3"];
        let c = ["ch_4"];
        let three = || vec![node(10, 0, &a), node(11, 1, &b), node(12, 2, &c)];
        let drained = || {
            vec![
                node(10, 0, &["ch_0", "ch_1", "ch_4"]),
                node(11, 1, &b),
                node(12, 2, &[]),
            ]
        };
        let rows: Vec<ScaleRow> = vec![
            ("create", 3, None, None, ScaleStep::Steady { replicas: 3 }),
            (
                "steady",
                3,
                Some(3),
                Some(placement(three(), &[])),
                ScaleStep::Steady { replicas: 3 },
            ),
            (
                "scale up",
                4,
                Some(3),
                Some(placement(three(), &[])),
                ScaleStep::Steady { replicas: 4 },
            ),
            (
                "no placement: never scale down",
                2,
                Some(3),
                None,
                ScaleStep::Steady { replicas: 3 },
            ),
            (
                "scale down freezes the highest ordinal first",
                2,
                Some(3),
                Some(placement(three(), &[])),
                ScaleStep::Freeze {
                    server_ids: vec![12],
                    replicas: 3,
                },
            ),
            (
                "frozen but holding: wait",
                2,
                Some(3),
                Some(placement(three(), &[12])),
                ScaleStep::Draining {
                    replicas: 3,
                    holding: vec![(2, 1)],
                },
            ),
            (
                "drained but a pchannel has no holder yet: wait",
                2,
                Some(3),
                Some(placement(
                    vec![node(10, 0, &a), node(11, 1, &b), node(12, 2, &[])],
                    &[12],
                )),
                ScaleStep::Draining {
                    replicas: 3,
                    holding: vec![],
                },
            ),
            (
                "drained: scale down",
                2,
                Some(3),
                Some(placement(drained(), &[12])),
                ScaleStep::ScaleDown { replicas: 2 },
            ),
            (
                "a restarted victim registers anew: freeze its new id",
                2,
                Some(3),
                Some(placement(
                    vec![
                        node(10, 0, &["ch_0", "ch_1", "ch_4"]),
                        node(11, 1, &b),
                        node(13, 2, &[]),
                    ],
                    &[12],
                )),
                ScaleStep::Freeze {
                    server_ids: vec![13],
                    replicas: 3,
                },
            ),
            (
                "after the scale-down: the gone node leaves the freeze list",
                2,
                Some(2),
                Some(placement(
                    vec![node(10, 0, &["ch_0", "ch_1", "ch_4"]), node(11, 1, &b)],
                    &[12],
                )),
                ScaleStep::Defreeze {
                    server_ids: vec![12],
                    replicas: 2,
                },
            ),
            (
                "aborted scale-down: the kept node is defrozen",
                3,
                Some(3),
                Some(placement(three(), &[12])),
                ScaleStep::Defreeze {
                    server_ids: vec![12],
                    replicas: 3,
                },
            ),
            (
                "a node of another StatefulSet is never a victim",
                1,
                Some(2),
                Some(placement(
                    vec![
                        node(10, 0, &["ch_0", "ch_1", "ch_2", "ch_3", "ch_4"]),
                        PlacedNode {
                            server_id: 20,
                            address: "elsewhere-1.x:22222".into(),
                            pchannels: vec![],
                        },
                    ],
                    &[],
                )),
                ScaleStep::ScaleDown { replicas: 1 },
            ),
        ];
        for (name, desired, current, placed, expected) in rows {
            let step =
                plan_streaming_scale(desired, current, placed.as_ref(), &Ordinals::named(STS), 5);
            assert_eq!(step, expected, "{name}");
        }
    }
}
