//! The placement decision, as a pure function: given where every pchannel is and how every
//! node is doing, which channels must be (re)assigned and where. The coordinator persists
//! and carries out what this returns; keeping it pure makes it table-testable.
//!
//! Policy (`pchannelCountFair`, sticky): a channel stays where it is while its node is
//! available; channels without a live holder go to the least loaded available node (ties:
//! lower server ID) below the per-node cap; a frozen node's channels move off, and with
//! rebalancing on, channels move from the most to the least loaded node while they differ
//! by more than one, both within a limit of voluntary moves per round. A node whose lease
//! lapsed but is still within its grace period keeps its channels (it may be fencing itself
//! right now); only once it is gone do they move.

use std::collections::BTreeMap;

/// How a registered node can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Leased and not frozen: may hold and receive channels.
    Available,
    /// Leased but frozen (draining before a scale-down): its channels move off.
    Frozen,
    /// Lease lapsed, grace period running: its channels wait.
    Lost,
}

/// A pchannel as the balancer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelView {
    /// The channel name.
    pub name: String,
    /// The node it is assigned (or being assigned) to; `None`: never assigned.
    pub node: Option<i64>,
    /// The assignment is not confirmed (ASSIGNING after a failure, UNAVAILABLE, never
    /// assigned): it has to be driven again even if it stays on its node.
    pub unsettled: bool,
}

/// Limits of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Most channels a node takes; `None`: no limit.
    pub max_per_node: Option<usize>,
    /// Most voluntary moves (off frozen nodes, rebalancing) in one round.
    pub max_moves: usize,
    /// Whether channels move between available nodes to even the counts.
    pub allow_rebalance: bool,
}

/// One decision: drive `channel` to `node` (a new term).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The channel.
    pub channel: String,
    /// Its target node.
    pub node: i64,
}

/// Decides the assignments of one round; the result is ordered by channel name.
pub fn balance(
    channels: &[ChannelView],
    nodes: &BTreeMap<i64, NodeState>,
    policy: Policy,
) -> Vec<Assignment> {
    let cap = policy.max_per_node.unwrap_or(usize::MAX);
    // Load of every available node: the channels that stay on it.
    let mut load: BTreeMap<i64, usize> = nodes
        .iter()
        .filter(|(_, state)| **state == NodeState::Available)
        .map(|(id, _)| (*id, 0))
        .collect();
    let mut decided: BTreeMap<String, i64> = BTreeMap::new();
    let mut orphans = Vec::new();
    let mut frozen = Vec::new();
    let mut sorted: Vec<&ChannelView> = channels.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for channel in &sorted {
        match channel
            .node
            .and_then(|id| nodes.get(&id).map(|state| (id, *state)))
        {
            Some((id, NodeState::Available)) => {
                *load.entry(id).or_default() += 1;
                if channel.unsettled {
                    decided.insert(channel.name.clone(), id);
                }
            }
            Some((_, NodeState::Lost)) => {}
            Some((id, NodeState::Frozen)) => {
                frozen.push((channel.name.clone(), id, channel.unsettled))
            }
            None => orphans.push(channel.name.clone()),
        }
    }
    let least_loaded = |load: &BTreeMap<i64, usize>| {
        load.iter()
            .filter(|(_, count)| **count < cap)
            .min_by_key(|(id, count)| (**count, **id))
            .map(|(id, _)| *id)
    };
    for name in orphans {
        if let Some(target) = least_loaded(&load) {
            *load.entry(target).or_default() += 1;
            decided.insert(name, target);
        }
    }
    let mut moves = 0;
    for (name, holder, unsettled) in frozen {
        match least_loaded(&load) {
            Some(target) if moves < policy.max_moves => {
                moves += 1;
                *load.entry(target).or_default() += 1;
                decided.insert(name, target);
            }
            // No room or no moves left: it stays for now (re-driven if it has to be).
            _ => {
                if unsettled {
                    decided.insert(name, holder);
                }
            }
        }
    }
    if policy.allow_rebalance {
        // Channels that stay on available nodes and were not touched this round.
        let mut movable: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for channel in &sorted {
            if let Some(id) = channel.node
                && load.contains_key(&id)
                && !decided.contains_key(&channel.name)
            {
                movable.entry(id).or_default().push(channel.name.clone());
            }
        }
        while moves < policy.max_moves {
            let Some((&busiest, &most)) = load.iter().max_by_key(|(id, count)| (**count, **id))
            else {
                break;
            };
            let Some(idlest) = least_loaded(&load) else {
                break;
            };
            if most <= load[&idlest] + 1 {
                break;
            }
            let Some(name) = movable.get_mut(&busiest).and_then(Vec::pop) else {
                break;
            };
            moves += 1;
            *load.entry(busiest).or_default() -= 1;
            *load.entry(idlest).or_default() += 1;
            decided.insert(name, idlest);
        }
    }
    decided
        .into_iter()
        .map(|(channel, node)| Assignment { channel, node })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use NodeState::*;

    fn ch(name: &str, node: Option<i64>) -> ChannelView {
        ChannelView {
            name: name.into(),
            node,
            unsettled: false,
        }
    }

    fn unsettled(name: &str, node: Option<i64>) -> ChannelView {
        ChannelView {
            unsettled: true,
            ..ch(name, node)
        }
    }

    fn nodes(list: &[(i64, NodeState)]) -> BTreeMap<i64, NodeState> {
        list.iter().copied().collect()
    }

    const FREE: Policy = Policy {
        max_per_node: None,
        max_moves: 2,
        allow_rebalance: false,
    };

    fn pairs(result: Vec<Assignment>) -> Vec<(String, i64)> {
        result.into_iter().map(|a| (a.channel, a.node)).collect()
    }

    #[test]
    fn balancing_table() {
        struct Case {
            what: &'static str,
            channels: Vec<ChannelView>,
            nodes: BTreeMap<i64, NodeState>,
            policy: Policy,
            want: Vec<(&'static str, i64)>,
        }
        let cases = vec![
            Case {
                what: "fresh channels spread evenly, ties to the lower server ID",
                channels: vec![
                    unsettled("a", None),
                    unsettled("b", None),
                    unsettled("c", None),
                ],
                nodes: nodes(&[(1, Available), (2, Available)]),
                policy: FREE,
                want: vec![("a", 1), ("b", 2), ("c", 1)],
            },
            Case {
                what: "sticky: settled channels on available nodes stay even when uneven",
                channels: vec![ch("a", Some(1)), ch("b", Some(1)), ch("c", Some(1))],
                nodes: nodes(&[(1, Available), (2, Available)]),
                policy: FREE,
                want: vec![],
            },
            Case {
                what: "channels of a gone node go to the least loaded (no move limit)",
                channels: vec![
                    ch("a", Some(9)),
                    ch("b", Some(9)),
                    ch("c", Some(9)),
                    ch("d", Some(1)),
                ],
                nodes: nodes(&[(1, Available), (2, Available)]),
                policy: Policy {
                    max_moves: 0,
                    ..FREE
                },
                want: vec![("a", 2), ("b", 1), ("c", 2)],
            },
            Case {
                what: "a lost node within its grace keeps its channels",
                channels: vec![ch("a", Some(3)), unsettled("b", Some(3))],
                nodes: nodes(&[(1, Available), (3, Lost)]),
                policy: FREE,
                want: vec![],
            },
            Case {
                what: "a frozen node drains within the move limit",
                channels: vec![ch("a", Some(2)), ch("b", Some(2)), ch("c", Some(2))],
                nodes: nodes(&[(1, Available), (2, Frozen)]),
                policy: FREE,
                want: vec![("a", 1), ("b", 1)],
            },
            Case {
                what: "the cap leaves channels unplaced rather than overloading",
                channels: vec![
                    unsettled("a", None),
                    unsettled("b", None),
                    unsettled("c", None),
                ],
                nodes: nodes(&[(1, Available)]),
                policy: Policy {
                    max_per_node: Some(2),
                    ..FREE
                },
                want: vec![("a", 1), ("b", 1)],
            },
            Case {
                what: "an unsettled channel on an available node is re-driven in place",
                channels: vec![unsettled("a", Some(2)), ch("b", Some(1))],
                nodes: nodes(&[(1, Available), (2, Available)]),
                policy: FREE,
                want: vec![("a", 2)],
            },
            Case {
                what: "rebalancing evens counts within the move limit",
                channels: vec![
                    ch("a", Some(1)),
                    ch("b", Some(1)),
                    ch("c", Some(1)),
                    ch("d", Some(1)),
                    ch("e", Some(1)),
                    ch("f", Some(1)),
                ],
                nodes: nodes(&[(1, Available), (2, Available), (3, Available)]),
                policy: Policy {
                    allow_rebalance: true,
                    max_moves: 3,
                    ..FREE
                },
                want: vec![("d", 2), ("e", 3), ("f", 2)],
            },
            Case {
                what: "nothing is placed on frozen or lost nodes",
                channels: vec![unsettled("a", None)],
                nodes: nodes(&[(1, Frozen), (2, Lost)]),
                policy: FREE,
                want: vec![],
            },
        ];
        for case in cases {
            let got = pairs(balance(&case.channels, &case.nodes, case.policy));
            let want: Vec<(String, i64)> = case
                .want
                .into_iter()
                .map(|(name, node)| (name.to_string(), node))
                .collect();
            assert_eq!(got, want, "{}", case.what);
        }
    }

    #[test]
    fn a_balanced_layout_is_a_fixed_point() {
        let channels: Vec<ChannelView> = (0..16)
            .map(|i| unsettled(&format!("dml_{i:02}"), None))
            .collect();
        let available = nodes(&[(1, Available), (2, Available), (3, Available)]);
        let policy = Policy {
            allow_rebalance: true,
            ..FREE
        };
        let first = balance(&channels, &available, policy);
        assert_eq!(first.len(), 16);
        let placed: Vec<ChannelView> = first.iter().map(|a| ch(&a.channel, Some(a.node))).collect();
        assert_eq!(balance(&placed, &available, policy), vec![]);
    }
}
