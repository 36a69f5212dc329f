//! Sans-IO UDP session table shared by edge and hub.
//!
//! A session is one tunneled UDP flow: on the edge, the flow of one client address to one public
//! port; on the hub, the flow the edge opened under a session id. The edge allocates ids; both
//! sides expire sessions idle for `udpSessionIdleSecs`. Time comes in as `now` so the expiry
//! logic is tested by stepping a clock, not by sleeping.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The table refused a new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many UDP sessions ({0})")]
pub struct TableFull(pub usize);

#[derive(Debug)]
struct Entry<K, V> {
    key: K,
    last_seen: Instant,
    value: V,
}

/// Sessions by id, with an index from the flow key (`K`) to the id.
#[derive(Debug)]
pub struct SessionTable<K, V> {
    by_key: HashMap<K, u32>,
    sessions: HashMap<u32, Entry<K, V>>,
    next_id: u32,
    idle: Duration,
    max_sessions: usize,
}

impl<K: Hash + Eq + Clone, V> SessionTable<K, V> {
    pub fn new(idle: Duration, max_sessions: usize) -> Self {
        Self {
            by_key: HashMap::new(),
            sessions: HashMap::new(),
            next_id: 1,
            idle,
            max_sessions,
        }
    }

    /// The session of `key`, refreshed; or a new one with the next free id (`true` = new).
    pub fn get_or_insert_with(
        &mut self,
        key: &K,
        now: Instant,
        make: impl FnOnce(u32) -> V,
    ) -> Result<(u32, &mut V, bool), TableFull> {
        let existing = self
            .by_key
            .get(key)
            .copied()
            .filter(|id| self.sessions.contains_key(id));
        if let Some(id) = existing {
            let entry = self
                .sessions
                .get_mut(&id)
                .ok_or(TableFull(self.max_sessions))?;
            entry.last_seen = now;
            return Ok((id, &mut entry.value, false));
        }
        if self.sessions.len() >= self.max_sessions {
            return Err(TableFull(self.max_sessions));
        }
        let id = self.allocate_id();
        self.by_key.insert(key.clone(), id);
        let entry = self.sessions.entry(id).or_insert(Entry {
            key: key.clone(),
            last_seen: now,
            value: make(id),
        });
        Ok((id, &mut entry.value, true))
    }

    /// Inserts a session under an id chosen by the peer (hub side). Replaces an existing one.
    pub fn insert(
        &mut self,
        id: u32,
        key: K,
        now: Instant,
        value: V,
    ) -> Result<Option<V>, TableFull> {
        let previous = self.remove(id);
        if self.sessions.len() >= self.max_sessions {
            return Err(TableFull(self.max_sessions));
        }
        self.by_key.insert(key.clone(), id);
        self.sessions.insert(
            id,
            Entry {
                key,
                last_seen: now,
                value,
            },
        );
        Ok(previous)
    }

    /// Changes the idle timeout (the hub pushes its `udpSessionIdleSecs`).
    pub fn set_idle(&mut self, idle: Duration) {
        self.idle = idle;
    }

    /// The session with this id, refreshed.
    pub fn touch(&mut self, id: u32, now: Instant) -> Option<&mut V> {
        let entry = self.sessions.get_mut(&id)?;
        entry.last_seen = now;
        Some(&mut entry.value)
    }

    pub fn get(&self, id: u32) -> Option<&V> {
        self.sessions.get(&id).map(|entry| &entry.value)
    }

    pub fn key(&self, id: u32) -> Option<&K> {
        self.sessions.get(&id).map(|entry| &entry.key)
    }

    pub fn remove(&mut self, id: u32) -> Option<V> {
        let entry = self.sessions.remove(&id)?;
        if self.by_key.get(&entry.key) == Some(&id) {
            self.by_key.remove(&entry.key);
        }
        Some(entry.value)
    }

    /// Removes and returns the sessions idle for longer than the idle timeout.
    pub fn expire(&mut self, now: Instant) -> Vec<(u32, V)> {
        self.expire_with(now, |_| None)
    }

    /// Like [`Self::expire`], where `other_activity` reports activity the table did not see
    /// (e.g. replies received by another task); the later of the two counts.
    pub fn expire_with(
        &mut self,
        now: Instant,
        other_activity: impl Fn(&V) -> Option<Instant>,
    ) -> Vec<(u32, V)> {
        let idle = self.idle;
        let expired: Vec<u32> = self
            .sessions
            .iter()
            .filter(|(_, entry)| {
                let last = other_activity(&entry.value)
                    .map_or(entry.last_seen, |other| other.max(entry.last_seen));
                now.saturating_duration_since(last) >= idle
            })
            .map(|(&id, _)| id)
            .collect();
        expired
            .into_iter()
            .filter_map(|id| self.remove(id).map(|value| (id, value)))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Removes every session.
    pub fn drain(&mut self) -> Vec<(u32, V)> {
        self.by_key.clear();
        self.sessions
            .drain()
            .map(|(id, entry)| (id, entry.value))
            .collect()
    }

    /// Next id not in use; 0 is never used, ids wrap after `u32::MAX`.
    fn allocate_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if id != 0 && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_session_and_new_key_new_id() {
        let now = Instant::now();
        let mut table: SessionTable<&str, u8> = SessionTable::new(Duration::from_secs(60), 10);
        let (a, _, new_a) = table.get_or_insert_with(&"a", now, |_| 1).unwrap();
        let (a2, _, new_a2) = table.get_or_insert_with(&"a", now, |_| 2).unwrap();
        let (b, _, new_b) = table.get_or_insert_with(&"b", now, |_| 3).unwrap();
        assert!(new_a && !new_a2 && new_b);
        assert_eq!(a, a2);
        assert_ne!(a, b);
        assert_eq!(table.get(a), Some(&1));
    }

    #[test]
    fn idle_sessions_expire_and_activity_keeps_them() {
        let start = Instant::now();
        let idle = Duration::from_secs(60);
        let mut table: SessionTable<&str, ()> = SessionTable::new(idle, 10);
        let (quiet, _, _) = table.get_or_insert_with(&"quiet", start, |_| ()).unwrap();
        let (busy, _, _) = table.get_or_insert_with(&"busy", start, |_| ()).unwrap();
        assert!(table.touch(busy, start + Duration::from_secs(50)).is_some());
        let expired = table.expire(start + idle);
        assert_eq!(
            expired.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            vec![quiet]
        );
        assert_eq!(table.len(), 1);
        // The same client gets a fresh session after expiry.
        let (again, _, new) = table
            .get_or_insert_with(&"quiet", start + idle, |_| ())
            .unwrap();
        assert!(new);
        assert_ne!(again, quiet);
    }

    #[test]
    fn table_is_bounded_and_ids_skip_zero_and_live_ones() {
        let now = Instant::now();
        let mut table: SessionTable<u32, ()> = SessionTable::new(Duration::from_secs(1), 2);
        table.next_id = u32::MAX;
        let (first, _, _) = table.get_or_insert_with(&1, now, |_| ()).unwrap();
        let (second, _, _) = table.get_or_insert_with(&2, now, |_| ()).unwrap();
        assert_eq!((first, second), (u32::MAX, 1));
        assert_eq!(
            table.get_or_insert_with(&3, now, |_| ()).unwrap_err(),
            TableFull(2)
        );
        table.remove(first);
        table.next_id = 1;
        let (third, _, _) = table.get_or_insert_with(&3, now, |_| ()).unwrap();
        assert_eq!(third, 2, "1 is still live");
    }

    #[test]
    fn peer_chosen_ids_replace() {
        let now = Instant::now();
        let mut table: SessionTable<&str, u8> = SessionTable::new(Duration::from_secs(1), 4);
        assert_eq!(table.insert(7, "x", now, 1).unwrap(), None);
        assert_eq!(table.insert(7, "y", now, 2).unwrap(), Some(1));
        assert_eq!(table.key(7), Some(&"y"));
        assert_eq!(table.drain().len(), 1);
        assert!(table.is_empty());
    }
}
