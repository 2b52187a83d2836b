//! A map that keeps, per key, the values it had at each timestamp: the "snapshot KV" of the
//! Milvus meta table, in memory. Reads name a timestamp and see the newest version at or
//! before it; the group-commit writer adds versions above the committed timestamp that
//! readers do not see until they are durable, and removes them again if the commit fails.

use std::collections::{HashMap, HashSet};
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
        let versions = self.entries.get(key)?;
        versions
            .iter()
            .rev()
            .find(|(ts, _)| *ts <= at)
            .and_then(|(_, value)| value.as_ref())
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
        self.entries.iter().filter_map(move |(key, versions)| {
            versions
                .iter()
                .rev()
                .find(|(ts, _)| *ts <= at)
                .and_then(|(_, value)| value.as_ref())
                .map(|value| (key, value))
        })
    }

    /// Forgets history older than `horizon`: reads at or after it keep their answers.
    pub fn compact(&mut self, horizon: Timestamp) {
        let keys: Vec<K> = self.with_history.iter().cloned().collect();
        for key in keys {
            let Some(versions) = self.entries.get_mut(&key) else {
                self.with_history.remove(&key);
                continue;
            };
            // The newest version at or before the horizon is still visible there.
            let visible = versions
                .iter()
                .rposition(|(ts, _)| *ts <= horizon)
                .unwrap_or(0);
            versions.drain(..visible);
            if versions.len() == 1 && versions[0].1.is_none() {
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
}
