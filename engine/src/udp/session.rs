//! Sans-IO UDP session table shared by edge and hub.
//!
//! A session is one tunneled UDP flow: on the edge, the flow of one client address to one public
//! port; on the hub, the flow the edge opened under a session id. The edge allocates ids; both
//! sides expire sessions idle for `udpSessionIdleSecs`. Time comes in as `now` so the expiry
//! logic is tested by stepping a clock, not by sleeping.
//!
//! The table is bounded: at `max_sessions` a new session closes the least recently used one, and
//! a source address at `max_per_source` closes its own least recently used one. A flood from many
//! addresses thus recycles the idlest sessions instead of growing without bound, and one address
//! opening flow after flow only ever displaces its own.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hashlink::{LinkedHashMap, LinkedHashSet};

/// Caps of a [`SessionTable`]; both are at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TableLimits {
    pub max_sessions: usize,
    /// Sessions one source address may hold (only sessions opened with a source count).
    pub max_per_source: usize,
}

/// Why a session was closed to make room for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Eviction {
    /// Its source address held `max_per_source` sessions.
    PerSource,
    /// The table held `max_sessions`.
    Capacity,
}

/// A session closed to make room; the caller tells the peer.
#[derive(Debug)]
pub(crate) struct Evicted<V> {
    pub id: u32,
    pub value: V,
    pub reason: Eviction,
}

#[derive(Debug)]
struct Entry<K, V> {
    key: K,
    source: Option<IpAddr>,
    last_seen: Instant,
    value: V,
}

/// Sessions by id, least recently used first, with an index from the flow key (`K`) to the id
/// and, per source address, that address's sessions least recently used first.
#[derive(Debug)]
pub(crate) struct SessionTable<K, V> {
    by_key: HashMap<K, u32>,
    sessions: LinkedHashMap<u32, Entry<K, V>>,
    by_source: HashMap<IpAddr, LinkedHashSet<u32>>,
    next_id: u32,
    idle: Duration,
    limits: TableLimits,
}

impl<K: Hash + Eq + Clone, V> SessionTable<K, V> {
    pub(crate) fn new(idle: Duration, limits: TableLimits) -> Self {
        Self {
            by_key: HashMap::new(),
            sessions: LinkedHashMap::new(),
            by_source: HashMap::new(),
            next_id: 1,
            idle,
            limits: sanitise(limits),
        }
    }

    /// The session of `key`, refreshed (it becomes the most recently used).
    pub(crate) fn find(&mut self, key: &K, now: Instant) -> Option<u32> {
        let id = *self.by_key.get(key)?;
        self.touch(id, now).map(|_| id)
    }

    /// Opens a session for `key` (from `source`) under the next free id, closing the sessions
    /// it displaces (returned, for the caller to tell the peer). A session `key` already had is
    /// replaced and not returned.
    pub(crate) fn open(
        &mut self,
        key: K,
        source: Option<IpAddr>,
        now: Instant,
        make: impl FnOnce(u32) -> V,
    ) -> (u32, Vec<Evicted<V>>) {
        if let Some(old) = self.by_key.get(&key).copied() {
            self.remove(old);
        }
        let evicted = self.make_room(source);
        let id = self.allocate_id();
        self.put(id, key, source, now, make(id));
        (id, evicted)
    }

    /// Inserts a session under an id chosen by the peer (hub side), replacing the one with that
    /// id (returned first) and closing the sessions it displaces.
    pub(crate) fn insert(
        &mut self,
        id: u32,
        key: K,
        now: Instant,
        value: V,
    ) -> (Option<V>, Vec<Evicted<V>>) {
        let previous = self.remove(id);
        let evicted = self.make_room(None);
        self.put(id, key, None, now, value);
        (previous, evicted)
    }

    /// Changes the caps; sessions over the new ones are closed at once (returned).
    pub(crate) fn set_limits(&mut self, limits: TableLimits) -> Vec<Evicted<V>> {
        self.limits = sanitise(limits);
        let mut evicted = Vec::new();
        let crowded: Vec<IpAddr> = self
            .by_source
            .iter()
            .filter(|(_, ids)| ids.len() > self.limits.max_per_source)
            .map(|(source, _)| *source)
            .collect();
        for source in crowded {
            self.shrink_source(source, self.limits.max_per_source, &mut evicted);
        }
        self.shrink(self.limits.max_sessions, &mut evicted);
        evicted
    }

    pub(crate) fn limits(&self) -> TableLimits {
        self.limits
    }

    /// Changes the idle timeout (the hub pushes its `udpSessionIdleSecs`).
    pub(crate) fn set_idle(&mut self, idle: Duration) {
        self.idle = idle;
    }

    /// The session with this id, refreshed (it becomes the most recently used).
    pub(crate) fn touch(&mut self, id: u32, now: Instant) -> Option<&mut V> {
        let entry = self.sessions.to_back(&id)?;
        entry.last_seen = now;
        if let Some(ids) = entry.source.and_then(|s| self.by_source.get_mut(&s)) {
            ids.to_back(&id);
        }
        Some(&mut entry.value)
    }

    /// The value of session `id` (tests look sessions up without touching their LRU order).
    #[cfg(test)]
    pub(crate) fn get(&self, id: u32) -> Option<&V> {
        self.sessions.get(&id).map(|entry| &entry.value)
    }

    pub(crate) fn remove(&mut self, id: u32) -> Option<V> {
        let entry = self.sessions.remove(&id)?;
        if self.by_key.get(&entry.key) == Some(&id) {
            self.by_key.remove(&entry.key);
        }
        if let Some(source) = entry.source {
            if let Some(ids) = self.by_source.get_mut(&source) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_source.remove(&source);
                }
            }
        }
        Some(entry.value)
    }

    /// Removes and returns the least recently used session.
    pub(crate) fn pop_lru(&mut self) -> Option<(u32, V)> {
        let id = *self.sessions.front()?.0;
        self.remove(id).map(|value| (id, value))
    }

    /// Removes and returns the sessions idle for longer than the idle timeout.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(u32, V)> {
        self.expire_with(now, |_| None)
    }

    /// Like [`Self::expire`], where `other_activity` reports activity the table did not see
    /// (e.g. replies received by another task); the later of the two counts.
    pub(crate) fn expire_with(
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

    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Removes every session.
    pub(crate) fn drain(&mut self) -> Vec<(u32, V)> {
        self.by_key.clear();
        self.by_source.clear();
        self.sessions
            .drain()
            .map(|(id, entry)| (id, entry.value))
            .collect()
    }

    /// Closes what a new session from `source` displaces: the source's least recently used
    /// session when it is at its cap, else the table's when the table is full.
    fn make_room(&mut self, source: Option<IpAddr>) -> Vec<Evicted<V>> {
        let mut evicted = Vec::new();
        if let Some(source) = source {
            self.shrink_source(
                source,
                self.limits.max_per_source.saturating_sub(1),
                &mut evicted,
            );
        }
        self.shrink(self.limits.max_sessions.saturating_sub(1), &mut evicted);
        evicted
    }

    /// Closes `source`'s least recently used sessions until it holds at most `keep`.
    fn shrink_source(&mut self, source: IpAddr, keep: usize, evicted: &mut Vec<Evicted<V>>) {
        while self.source_len(source) > keep {
            let Some(id) = self
                .by_source
                .get(&source)
                .and_then(|ids| ids.front().copied())
            else {
                break;
            };
            if let Some(value) = self.remove(id) {
                evicted.push(Evicted {
                    id,
                    value,
                    reason: Eviction::PerSource,
                });
            }
        }
    }

    /// Closes the least recently used sessions until the table holds at most `keep`.
    fn shrink(&mut self, keep: usize, evicted: &mut Vec<Evicted<V>>) {
        while self.sessions.len() > keep {
            let Some((id, value)) = self.pop_lru() else {
                break;
            };
            evicted.push(Evicted {
                id,
                value,
                reason: Eviction::Capacity,
            });
        }
    }

    fn put(&mut self, id: u32, key: K, source: Option<IpAddr>, now: Instant, value: V) {
        self.by_key.insert(key.clone(), id);
        if let Some(source) = source {
            self.by_source.entry(source).or_default().insert(id);
        }
        self.sessions.insert(
            id,
            Entry {
                key,
                source,
                last_seen: now,
                value,
            },
        );
    }

    fn source_len(&self, source: IpAddr) -> usize {
        self.by_source.get(&source).map_or(0, LinkedHashSet::len)
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

/// Caps below 1 would make every insert evict the session it just made room for.
fn sanitise(limits: TableLimits) -> TableLimits {
    TableLimits {
        max_sessions: limits.max_sessions.max(1),
        max_per_source: limits.max_per_source.max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE_A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const SOURCE_B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn limits(max_sessions: usize, max_per_source: usize) -> TableLimits {
        TableLimits {
            max_sessions,
            max_per_source,
        }
    }

    fn table<K: Hash + Eq + Clone, V>(max_sessions: usize) -> SessionTable<K, V> {
        SessionTable::new(Duration::from_secs(60), limits(max_sessions, max_sessions))
    }

    fn ids<V>(evicted: &[Evicted<V>]) -> Vec<(u32, Eviction)> {
        evicted.iter().map(|e| (e.id, e.reason)).collect()
    }

    #[test]
    fn same_key_same_session_and_new_key_new_id() {
        let now = Instant::now();
        let mut table: SessionTable<&str, u8> = table(10);
        let (a, evicted) = table.open("a", None, now, |_| 1);
        assert!(evicted.is_empty());
        assert_eq!(table.find(&"a", now), Some(a));
        let (b, _) = table.open("b", None, now, |_| 3);
        assert_ne!(a, b);
        assert_eq!(table.get(a), Some(&1));
        assert_eq!(table.find(&"c", now), None);
    }

    #[test]
    fn idle_sessions_expire_and_activity_keeps_them() {
        let start = Instant::now();
        let idle = Duration::from_secs(60);
        let mut table: SessionTable<&str, ()> = SessionTable::new(idle, limits(10, 10));
        let (quiet, _) = table.open("quiet", None, start, |_| ());
        let (busy, _) = table.open("busy", None, start, |_| ());
        assert!(table.touch(busy, start + Duration::from_secs(50)).is_some());
        let expired = table.expire(start + idle);
        assert_eq!(
            expired.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            vec![quiet]
        );
        assert_eq!(table.len(), 1);
        // The same client gets a fresh session after expiry.
        assert_eq!(table.find(&"quiet", start + idle), None);
        let (again, _) = table.open("quiet", None, start + idle, |_| ());
        assert_ne!(again, quiet);
    }

    #[test]
    fn a_full_table_closes_its_least_recently_used_session() {
        let now = Instant::now();
        let mut table: SessionTable<u32, u32> = table(3);
        let (one, _) = table.open(1, None, now, |id| id);
        let (two, _) = table.open(2, None, now, |id| id);
        let (three, _) = table.open(3, None, now, |id| id);
        // Using 1 makes 2 the least recently used.
        assert_eq!(table.find(&1, now), Some(one));
        let (four, evicted) = table.open(4, None, now, |id| id);
        assert_eq!(ids(&evicted), vec![(two, Eviction::Capacity)]);
        assert_eq!(evicted[0].value, two);
        assert_eq!(table.len(), 3);
        assert_eq!(table.find(&2, now), None);
        // A reply (touch by id) counts as use too.
        assert!(table.touch(three, now).is_some());
        let (_, evicted) = table.open(5, None, now, |id| id);
        assert_eq!(ids(&evicted), vec![(one, Eviction::Capacity)]);
        assert!(table.get(four).is_some());
    }

    #[test]
    fn a_crowded_source_displaces_only_its_own_sessions() {
        let now = Instant::now();
        let mut table: SessionTable<(IpAddr, u16), ()> =
            SessionTable::new(Duration::from_secs(60), limits(100, 2));
        let (b, _) = table.open((SOURCE_B, 1), Some(SOURCE_B), now, |_| ());
        let (a1, _) = table.open((SOURCE_A, 1), Some(SOURCE_A), now, |_| ());
        let (a2, _) = table.open((SOURCE_A, 2), Some(SOURCE_A), now, |_| ());
        assert_eq!(table.find(&(SOURCE_A, 1), now), Some(a1));
        let (a3, evicted) = table.open((SOURCE_A, 3), Some(SOURCE_A), now, |_| ());
        assert_eq!(ids(&evicted), vec![(a2, Eviction::PerSource)]);
        let (_, evicted) = table.open((SOURCE_A, 4), Some(SOURCE_A), now, |_| ());
        assert_eq!(ids(&evicted), vec![(a1, Eviction::PerSource)]);
        assert!(table.get(b).is_some() && table.get(a3).is_some());
        assert_eq!(table.len(), 3);
        // Removing the last session of a source forgets the source.
        table.remove(b);
        assert!(!table.by_source.contains_key(&SOURCE_B));
    }

    #[test]
    fn lower_limits_apply_at_once() {
        let now = Instant::now();
        let mut table: SessionTable<(IpAddr, u16), ()> =
            SessionTable::new(Duration::from_secs(60), limits(10, 10));
        for port in 0..4 {
            table.open((SOURCE_A, port), Some(SOURCE_A), now, |_| ());
        }
        for port in 0..4 {
            table.open((SOURCE_B, port), Some(SOURCE_B), now, |_| ());
        }
        let evicted = table.set_limits(limits(3, 2));
        assert_eq!(table.len(), 3);
        assert_eq!(evicted.len(), 5);
        assert_eq!(
            evicted
                .iter()
                .filter(|e| e.reason == Eviction::PerSource)
                .count(),
            4
        );
        // Caps below one are taken as one.
        table.set_limits(limits(0, 0));
        assert_eq!(table.len(), 1);
        table.open((SOURCE_A, 9), Some(SOURCE_A), now, |_| ());
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn ids_skip_zero_and_live_ones() {
        let now = Instant::now();
        let mut table: SessionTable<u32, ()> = table(3);
        table.next_id = u32::MAX;
        let (first, _) = table.open(1, None, now, |_| ());
        let (second, _) = table.open(2, None, now, |_| ());
        assert_eq!((first, second), (u32::MAX, 1));
        table.next_id = 1;
        let (third, _) = table.open(3, None, now, |_| ());
        assert_eq!(third, 2, "1 is still live");
    }

    #[test]
    fn peer_chosen_ids_replace_and_evict() {
        let now = Instant::now();
        let mut table: SessionTable<&str, u8> = table(2);
        assert_eq!(table.insert(7, "x", now, 1).0, None);
        let (previous, evicted) = table.insert(7, "y", now, 2);
        assert_eq!(previous, Some(1));
        assert!(evicted.is_empty());
        assert_eq!(table.find(&"y", now), Some(7));
        table.insert(8, "z", now, 3);
        let (_, evicted) = table.insert(9, "w", now, 4);
        assert_eq!(ids(&evicted), vec![(7, Eviction::Capacity)]);
        assert_eq!(table.pop_lru().map(|(id, _)| id), Some(8));
        assert_eq!(table.drain().len(), 1);
        assert_eq!(table.len(), 0);
    }
}
