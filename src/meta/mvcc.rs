//! A map that keeps, per key, the values it had at each timestamp: the "snapshot KV" of the
//! Milvus meta table, in memory. Reads name a timestamp and see the newest version at or
//! before it; the group-commit writer adds versions above the committed timestamp that
//! readers do not see until they are durable, and removes them again if the commit fails.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;

use super::tso::Timestamp;

/// Versions of one key, oldest first. A `None` value is a deletion.
type Versions<V> = Vec<(Timestamp, Option<V>)>;

/// A hash map with per-key version history.
#[derive(Debug)]
pub struct MvccMap<K, V> {
    entries: HashMap<K, Versions<V>>,
    /// Keys with more than one version: the only ones compaction has to visit.
    with_history: HashSet<K>,
}

impl<K, V> Default for MvccMap<K, V> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            with_history: HashSet::new(),
        }
    }
}

impl<K: Eq + Hash + Clone, V> MvccMap<K, V> {
    /// The value of `key` as of `at`.
    pub fn get<Q>(&self, key: &Q, at: Timestamp) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        visible(self.entries.get(key)?, at)
    }

    /// Records that `key` has `value` from `ts` on. A version at the same timestamp is
    /// replaced; versions must otherwise be added in timestamp order.
    pub fn put(&mut self, key: K, ts: Timestamp, value: Option<V>) {
        let versions = self.entries.entry(key.clone()).or_default();
        match versions.last_mut() {
            Some((last_ts, last_value)) if *last_ts == ts => *last_value = value,
            _ => versions.push((ts, value)),
        }
        if versions.len() > 1 {
            self.with_history.insert(key);
        } else if versions.len() == 1 && versions[0].1.is_none() {
            // A deletion of a key that had no earlier version leaves nothing to remember.
            self.entries.remove(&key);
        }
    }

    /// Removes the versions of `key` newer than `ts` (a failed commit).
    pub fn rollback_after(&mut self, key: &K, ts: Timestamp) {
        if let Some(versions) = self.entries.get_mut(key) {
            versions.retain(|(version_ts, _)| *version_ts <= ts);
            if versions.is_empty() {
                self.entries.remove(key);
                self.with_history.remove(key);
            }
        }
    }

    /// Every key with a value as of `at`.
    pub fn iter_at(&self, at: Timestamp) -> impl Iterator<Item = (&K, &V)> {
        self.entries
            .iter()
            .filter_map(move |(key, versions)| visible(versions, at).map(|value| (key, value)))
    }

    /// Forgets history older than `horizon`: reads at or after it keep their answers.
    pub fn compact(&mut self, horizon: Timestamp) {
        let keys: Vec<K> = self.with_history.iter().cloned().collect();
        for key in keys {
            let Some(versions) = self.entries.get_mut(&key) else {
                self.with_history.remove(&key);
                continue;
            };
            if forget_before(versions, horizon) == 0 {
                self.entries.remove(&key);
            }
            match self.entries.get(&key) {
                Some(versions) if versions.len() > 1 => {}
                _ => {
                    self.with_history.remove(&key);
                }
            }
        }
    }

    /// Number of keys with any version (live or deleted).
    pub fn key_count(&self) -> usize {
        self.entries.len()
    }
}

/// Groups of members (the aliases of each collection) with per-member history: a change
/// of one member adds one version of that member only, so memory grows with the number of
/// changes, not with changes times group size.
#[derive(Debug)]
pub struct MvccSet<G, M> {
    groups: HashMap<G, BTreeMap<M, Versions<()>>>,
    /// Members with more than one version: the only ones compaction has to visit.
    with_history: HashSet<(G, M)>,
}

impl<G, M> Default for MvccSet<G, M> {
    fn default() -> Self {
        Self {
            groups: HashMap::new(),
            with_history: HashSet::new(),
        }
    }
}

/// The newest version at or before `at`.
fn visible<V>(versions: &Versions<V>, at: Timestamp) -> Option<&V> {
    versions
        .iter()
        .rev()
        .find(|(ts, _)| *ts <= at)
        .and_then(|(_, value)| value.as_ref())
}

/// Drops the versions older than `horizon` but the newest of them, which is still
/// visible there. Returns how many remain; 0 when only a deletion was left, which no
/// read at or after `horizon` can tell from no key at all.
fn forget_before<V>(versions: &mut Versions<V>, horizon: Timestamp) -> usize {
    let visible = versions
        .iter()
        .rposition(|(ts, _)| *ts <= horizon)
        .unwrap_or(0);
    versions.drain(..visible);
    if versions.len() == 1 && versions[0].1.is_none() {
        0
    } else {
        versions.len()
    }
}

impl<G: Eq + Hash + Clone, M: Ord + Hash + Clone> MvccSet<G, M> {
    /// The members of `group` as of `at`, in order.
    pub fn members(&self, group: &G, at: Timestamp) -> Vec<&M> {
        self.groups.get(group).map_or_else(Vec::new, |members| {
            members
                .iter()
                .filter(|(_, versions)| visible(versions, at).is_some())
                .map(|(member, _)| member)
                .collect()
        })
    }

    /// Records that `member` is in `group` (`present`) or not from `ts` on; same rules as
    /// [`MvccMap::put`].
    pub fn put(&mut self, group: G, member: M, ts: Timestamp, present: bool) {
        let members = self.groups.entry(group.clone()).or_default();
        let versions = members.entry(member.clone()).or_default();
        let value = present.then_some(());
        match versions.last_mut() {
            Some((last_ts, last_value)) if *last_ts == ts => *last_value = value,
            _ => versions.push((ts, value)),
        }
        if versions.len() > 1 {
            self.with_history.insert((group, member));
        } else if versions.len() == 1 && versions[0].1.is_none() {
            members.remove(&member);
            if members.is_empty() {
                self.groups.remove(&group);
            }
        }
    }

    /// Removes the versions of one member newer than `ts` (a failed commit).
    pub fn rollback_after(&mut self, group: &G, member: &M, ts: Timestamp) {
        let Some(members) = self.groups.get_mut(group) else {
            return;
        };
        if let Some(versions) = members.get_mut(member) {
            versions.retain(|(version_ts, _)| *version_ts <= ts);
            if versions.is_empty() {
                members.remove(member);
                self.with_history.remove(&(group.clone(), member.clone()));
            }
        }
        if members.is_empty() {
            self.groups.remove(group);
        }
    }

    /// Forgets history older than `horizon`: reads at or after it keep their answers.
    pub fn compact(&mut self, horizon: Timestamp) {
        let keys: Vec<(G, M)> = self.with_history.iter().cloned().collect();
        for (group, member) in keys {
            let Some(members) = self.groups.get_mut(&group) else {
                self.with_history.remove(&(group, member));
                continue;
            };
            let remaining = match members.get_mut(&member) {
                Some(versions) => {
                    let remaining = forget_before(versions, horizon);
                    if remaining == 0 {
                        members.remove(&member);
                    }
                    remaining
                }
                None => 0,
            };
            if members.is_empty() {
                self.groups.remove(&group);
            }
            if remaining <= 1 {
                self.with_history.remove(&(group, member));
            }
        }
    }

    /// Versions kept over all members (live or deleted); for tests and memory checks.
    pub fn version_count(&self) -> usize {
        self.groups
            .values()
            .flat_map(|members| members.values())
            .map(Vec::len)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_see_the_version_at_their_timestamp() {
        let mut map = MvccMap::default();
        map.put("z", 10, Some("a"));
        map.put("z", 20, Some("b"));
        map.put("z", 30, None);
        assert_eq!(map.get("z", 5), None);
        assert_eq!(map.get("z", 10), Some(&"a"));
        assert_eq!(map.get("z", 25), Some(&"b"));
        assert_eq!(map.get("z", 30), None);
    }

    #[test]
    fn rollback_removes_uncommitted_versions() {
        let mut map = MvccMap::default();
        map.put("z", 10, Some(1));
        map.put("z", 20, Some(2));
        map.rollback_after(&"z", 10);
        assert_eq!(map.get("z", u64::MAX), Some(&1));
        map.put("y", 20, Some(3));
        map.rollback_after(&"y", 10);
        assert_eq!(map.key_count(), 1);
    }

    #[test]
    fn compaction_keeps_answers_at_and_after_the_horizon() {
        let mut map = MvccMap::default();
        map.put("z", 10, Some("a"));
        map.put("z", 20, Some("b"));
        map.put("z", 30, Some("c"));
        map.put("gone", 10, Some("x"));
        map.put("gone", 15, None);
        map.compact(25);
        assert_eq!(map.get("z", 25), Some(&"b"));
        assert_eq!(map.get("z", 30), Some(&"c"));
        assert_eq!(
            map.key_count(),
            1,
            "a key deleted before the horizon is forgotten"
        );
        assert_eq!(map.iter_at(u64::MAX).count(), 1);
    }

    #[test]
    fn set_members_keep_one_version_per_change() {
        let mut set = MvccSet::default();
        for (i, name) in ["c", "a", "b"].into_iter().enumerate() {
            set.put(7, name.to_string(), 10 + i as u64, true);
        }
        set.put(7, "a".to_string(), 20, false);
        assert_eq!(set.members(&7, 11), vec!["a", "c"]);
        assert_eq!(set.members(&7, 12), vec!["a", "b", "c"]);
        assert_eq!(set.members(&7, 20), vec!["b", "c"]);
        assert_eq!(
            set.version_count(),
            4,
            "one version per change, not per member"
        );
        set.put(7, "d".to_string(), 30, true);
        set.rollback_after(&7, &"d".to_string(), 20);
        assert_eq!(set.members(&7, u64::MAX), vec!["b", "c"]);
        set.compact(25);
        assert_eq!(set.version_count(), 2, "the dropped member is forgotten");
        assert_eq!(set.members(&7, 25), vec!["b", "c"]);
        set.put(7, "b".to_string(), 40, false);
        set.put(7, "c".to_string(), 41, false);
        set.compact(50);
        assert!(set.members(&7, 50).is_empty());
        assert_eq!(set.version_count(), 0);
    }
}
