//! The in-process bus: the embedded default for `smartsolar serve`.
//!
//! A small Kafka-shaped log kept in memory:
//! - each topic has `partitions` partitions; a message goes to the partition
//!   picked by a stable hash (FNV-1a) of its key, so one unit's messages keep
//!   their publish order;
//! - each consumer group has its own committed offset per partition, so every
//!   group sees every message; within a group the partitions are shared out
//!   round-robin among the live members and re-shared when one joins or leaves;
//! - a member that leaves (its [`Consumer`] is dropped) hands its partitions
//!   back, and the next owner starts at the group's *committed* offset, so
//!   whatever was delivered but not committed is delivered again;
//! - a partition keeps a message until every group that exists has committed
//!   it, and holds at most `capacity` messages: `publish` waits for room.
//!   A topic no group has subscribed to yet keeps everything (up to
//!   `capacity`, then `publish` waits), so nothing published before the first
//!   subscriber is lost. A group, once created, lives as long as the bus
//!   (like Kafka's committed offsets), so it keeps holding back trimming.
//!
//! Nothing is persisted: on process exit uncommitted messages are gone, as the
//! embedded topology accepts (the gateway only acknowledges a unit once
//! `publish` resolved, and units resend what was not acknowledged).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;

use crate::{Bus, BusError, Consumer, Delivery};

/// Settings of the in-process bus.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryBusConfig {
    /// Partitions per topic (the unit of parallelism within a group).
    pub partitions: u32,
    /// Messages a partition holds before `publish` waits.
    pub capacity: usize,
}

impl Default for MemoryBusConfig {
    fn default() -> Self {
        Self {
            partitions: 16,
            capacity: 10_000,
        }
    }
}

/// The in-process bus. Cheap to clone; clones share the same topics.
#[derive(Clone)]
pub struct MemoryBus {
    shared: Arc<Shared>,
}

struct Shared {
    config: MemoryBusConfig,
    // A std mutex, not a tokio one: it is never held across an await and the
    // critical sections are a few pointer moves, and `Drop` for a consumer
    // has to take it synchronously.
    state: Mutex<State>,
    /// Woken when a message is appended, a rebalance happens or the bus closes.
    data: Notify,
    /// Woken when a partition is trimmed (room to publish) or the bus closes.
    space: Notify,
}

#[derive(Default)]
struct State {
    topics: HashMap<String, Topic>,
    next_member: u64,
    closed: bool,
}

struct Topic {
    partitions: Vec<Partition>,
    groups: HashMap<String, Group>,
}

struct Partition {
    /// Offset of `log[0]`.
    base: u64,
    log: VecDeque<(Bytes, Bytes)>,
}

impl Partition {
    fn end(&self) -> u64 {
        self.base + self.log.len() as u64
    }
}

/// A consumer group's membership and offsets on one topic; shared with the disk bus.
pub(crate) struct Group {
    /// Next offset to deliver after a restart, per partition.
    pub(crate) committed: Vec<u64>,
    /// Live members, in join order.
    pub(crate) members: Vec<u64>,
    /// Owner of each partition (`None` while the group has no member).
    pub(crate) owner: Vec<Option<u64>>,
    /// The owner's fetch position per partition.
    pub(crate) position: Vec<u64>,
}

impl Group {
    fn new(partitions: &[Partition]) -> Self {
        // A new group starts at the oldest retained message ("earliest").
        Self::starting_at(partitions.iter().map(|p| p.base).collect())
    }

    /// A group whose committed offsets are `start`, without members yet.
    pub(crate) fn starting_at(start: Vec<u64>) -> Self {
        Self {
            committed: start.clone(),
            members: Vec::new(),
            owner: vec![None; start.len()],
            position: start,
        }
    }

    /// Shares the partitions round-robin among the members; a partition that
    /// changes owner restarts from the committed offset.
    /// Moves partition `p`'s committed offset to `next` if that is forward
    /// (a late commit from a former owner is harmless: it processed those
    /// messages). Returns whether it moved.
    pub(crate) fn advance(&mut self, p: usize, next: u64) -> bool {
        if next <= self.committed[p] {
            return false;
        }
        self.committed[p] = next;
        self.position[p] = self.position[p].max(next);
        true
    }

    /// Removes a member that left and shares its partitions out again.
    pub(crate) fn leave(&mut self, member: u64) {
        self.members.retain(|m| *m != member);
        self.rebalance();
    }

    pub(crate) fn rebalance(&mut self) {
        for p in 0..self.owner.len() {
            let new = if self.members.is_empty() {
                None
            } else {
                Some(self.members[p % self.members.len()])
            };
            if new != self.owner[p] {
                self.owner[p] = new;
                self.position[p] = self.committed[p];
            }
        }
    }
}

impl Topic {
    fn new(partitions: u32) -> Self {
        Self {
            partitions: (0..partitions)
                .map(|_| Partition {
                    base: 0,
                    log: VecDeque::new(),
                })
                .collect(),
            groups: HashMap::new(),
        }
    }

    /// Drops the messages of partition `p` every group has committed.
    /// Returns whether anything was dropped.
    fn trim(&mut self, p: usize) -> bool {
        let Some(min) = self.groups.values().map(|g| g.committed[p]).min() else {
            return false; // no group yet: keep everything
        };
        let part = &mut self.partitions[p];
        let mut trimmed = false;
        while part.base < min && !part.log.is_empty() {
            part.log.pop_front();
            part.base += 1;
            trimmed = true;
        }
        trimmed
    }
}

/// The partition a key goes to: FNV-1a, stable across runs and platforms.
pub fn partition_for(key: &[u8], partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(partitions.max(1))) as u32
}

impl MemoryBus {
    /// A bus with the given settings (`partitions` and `capacity` of 0 are raised to 1).
    pub fn new(mut config: MemoryBusConfig) -> Self {
        config.partitions = config.partitions.max(1);
        config.capacity = config.capacity.max(1);
        Self {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(State::default()),
                data: Notify::new(),
                space: Notify::new(),
            }),
        }
    }

    /// Closes the bus: pending and later `publish`/`recv` calls fail with
    /// [`BusError::Closed`].
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.data.notify_waiters();
        self.shared.space.notify_waiters();
    }

    /// Messages held (published, not yet committed by every group) on `topic`.
    pub fn backlog(&self, topic: &str) -> usize {
        self.shared
            .lock()
            .topics
            .get(topic)
            .map_or(0, |t| t.partitions.iter().map(|p| p.log.len()).sum())
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent state (every
        // critical section only moves whole values), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, topic: &str, key: &[u8], payload: &[u8]) -> Result<(), BusError> {
        let sh = &self.shared;
        let p = partition_for(key, sh.config.partitions) as usize;
        let mut entry = Some((Bytes::copy_from_slice(key), Bytes::copy_from_slice(payload)));
        let mut waited = false;
        loop {
            // Register interest before looking, so a trim between the look and
            // the await is not missed.
            let space = sh.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                let mut st = sh.lock();
                if st.closed {
                    return Err(BusError::Closed);
                }
                let partitions = sh.config.partitions;
                let t = st
                    .topics
                    .entry(topic.to_owned())
                    .or_insert_with(|| Topic::new(partitions));
                let part = &mut t.partitions[p];
                if part.log.len() < sh.config.capacity {
                    part.log
                        .push_back(entry.take().expect("entry is published once"));
                    drop(st);
                    metrics::counter!(crate::metrics::BUS_PUBLISHED, "bus" => "memory", "topic" => topic.to_owned())
                        .increment(1);
                    sh.data.notify_waiters();
                    return Ok(());
                }
            }
            if !waited {
                metrics::counter!(crate::metrics::BUS_PUBLISH_WAITS, "bus" => "memory", "topic" => topic.to_owned())
                    .increment(1);
                waited = true;
            }
            space.await;
        }
    }

    async fn subscribe(&self, topics: &[&str], group: &str) -> Result<Box<dyn Consumer>, BusError> {
        if topics.is_empty() {
            return Err(BusError::Config(
                "subscribe needs at least one topic".into(),
            ));
        }
        let sh = &self.shared;
        let mut st = sh.lock();
        if st.closed {
            return Err(BusError::Closed);
        }
        let member = st.next_member;
        st.next_member += 1;
        let partitions = sh.config.partitions;
        let mut names: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        names.sort();
        names.dedup();
        for name in &names {
            let t = st
                .topics
                .entry(name.clone())
                .or_insert_with(|| Topic::new(partitions));
            let parts = &t.partitions;
            let g = t
                .groups
                .entry(group.to_owned())
                .or_insert_with(|| Group::new(parts));
            g.members.push(member);
            g.rebalance();
        }
        drop(st);
        sh.data.notify_waiters();
        Ok(Box::new(MemoryConsumer {
            shared: Arc::clone(sh),
            member,
            group: group.to_owned(),
            topics: names,
            cursor: 0,
        }))
    }
}

/// A member of a consumer group on the in-process bus. Dropping it leaves
/// the group; its uncommitted messages go to the remaining members.
struct MemoryConsumer {
    shared: Arc<Shared>,
    member: u64,
    group: String,
    topics: Vec<String>,
    /// Round-robin start over (topic, partition), so a busy partition does
    /// not starve the others.
    cursor: usize,
}

impl MemoryConsumer {
    fn try_take(&mut self, st: &mut State) -> Option<Delivery> {
        let per_topic = self.shared.config.partitions as usize;
        let slots = self.topics.len() * per_topic;
        for i in 0..slots {
            let slot = (self.cursor + i) % slots;
            let (ti, p) = (slot / per_topic, slot % per_topic);
            let name = &self.topics[ti];
            let Some(t) = st.topics.get_mut(name) else {
                continue;
            };
            let Some(g) = t.groups.get_mut(&self.group) else {
                continue;
            };
            if g.owner[p] != Some(self.member) {
                continue;
            }
            let part = &t.partitions[p];
            // Trimming never passes the group's committed offset, and the
            // position never falls below it, so `pos >= base`.
            let pos = g.position[p].max(part.base);
            if pos < part.end() {
                let (key, payload) = part.log[(pos - part.base) as usize].clone();
                g.position[p] = pos + 1;
                self.cursor = slot + 1;
                return Some(Delivery {
                    topic: name.clone(),
                    key,
                    payload,
                    partition: p as u32,
                    offset: pos,
                });
            }
        }
        None
    }
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn recv(&mut self) -> Result<Delivery, BusError> {
        let shared = Arc::clone(&self.shared);
        loop {
            let data = shared.data.notified();
            tokio::pin!(data);
            data.as_mut().enable();
            {
                let mut st = shared.lock();
                if st.closed {
                    return Err(BusError::Closed);
                }
                if let Some(d) = self.try_take(&mut st) {
                    drop(st);
                    metrics::counter!(crate::metrics::BUS_DELIVERED, "bus" => "memory", "topic" => d.topic.clone(), "group" => self.group.clone())
                        .increment(1);
                    return Ok(d);
                }
            }
            data.await;
        }
    }

    async fn commit(&mut self, delivery: &Delivery) -> Result<(), BusError> {
        let sh = &self.shared;
        let mut st = sh.lock();
        if st.closed {
            return Err(BusError::Closed);
        }
        let p = delivery.partition as usize;
        let t = st
            .topics
            .get_mut(&delivery.topic)
            .ok_or_else(|| BusError::Config(format!("unknown topic {}", delivery.topic)))?;
        let g = t
            .groups
            .get_mut(&self.group)
            .ok_or_else(|| BusError::Config(format!("not subscribed to {}", delivery.topic)))?;
        if p >= g.committed.len() {
            return Err(BusError::Config(format!("no partition {p}")));
        }
        g.advance(p, delivery.offset + 1);
        let trimmed = t.trim(p);
        drop(st);
        metrics::counter!(crate::metrics::BUS_COMMITTED, "bus" => "memory", "topic" => delivery.topic.clone(), "group" => self.group.clone())
            .increment(1);
        if trimmed {
            sh.space.notify_waiters();
        }
        Ok(())
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        for name in &self.topics {
            if let Some(g) = st
                .topics
                .get_mut(name)
                .and_then(|t| t.groups.get_mut(&self.group))
            {
                g.leave(self.member);
            }
        }
        drop(st);
        self.shared.data.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Duration;
    use tokio::time::timeout;

    fn bus(partitions: u32, capacity: usize) -> MemoryBus {
        MemoryBus::new(MemoryBusConfig {
            partitions,
            capacity,
        })
    }

    async fn recv_n(c: &mut Box<dyn Consumer>, n: usize) -> Vec<Delivery> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(
                timeout(Duration::from_secs(5), c.recv())
                    .await
                    .expect("message within 5 s")
                    .expect("recv"),
            );
        }
        out
    }

    async fn nothing_more(c: &mut Box<dyn Consumer>) {
        assert!(
            timeout(Duration::from_millis(50), c.recv()).await.is_err(),
            "no further message expected"
        );
    }

    #[tokio::test]
    async fn same_key_keeps_publish_order_and_same_partition() {
        let b = bus(4, 1000);
        let mut c = b.subscribe(&["mo"], "g").await.unwrap();
        for i in 0..100u32 {
            let key = format!("imei-{}", i % 7);
            b.publish("mo", key.as_bytes(), &i.to_be_bytes())
                .await
                .unwrap();
        }
        let got = recv_n(&mut c, 100).await;
        let mut last: HashMap<Bytes, (u32, u32)> = HashMap::new();
        for d in got {
            let v = u32::from_be_bytes(d.payload[..].try_into().unwrap());
            assert_eq!(d.partition, partition_for(&d.key, 4));
            if let Some((prev, part)) = last.insert(d.key.clone(), (v, d.partition)) {
                assert!(prev < v, "order broken for {:?}: {prev} then {v}", d.key);
                assert_eq!(part, d.partition);
            }
        }
        assert_eq!(last.len(), 7);
        nothing_more(&mut c).await;
    }

    #[tokio::test]
    async fn every_group_sees_every_message() {
        let b = bus(4, 1000);
        let mut a = b.subscribe(&["mo"], "ingest").await.unwrap();
        let mut z = b.subscribe(&["mo"], "archive").await.unwrap();
        for i in 0..50u32 {
            b.publish("mo", format!("k{i}").as_bytes(), &i.to_be_bytes())
                .await
                .unwrap();
        }
        for c in [&mut a, &mut z] {
            let got: HashSet<_> = recv_n(c, 50).await.into_iter().map(|d| d.payload).collect();
            assert_eq!(got.len(), 50);
            nothing_more(c).await;
        }
    }

    #[tokio::test]
    async fn partitions_are_shared_within_a_group() {
        let b = bus(8, 1000);
        let mut m1 = b.subscribe(&["mo"], "g").await.unwrap();
        let mut m2 = b.subscribe(&["mo"], "g").await.unwrap();
        let n = 200u32;
        for i in 0..n {
            b.publish("mo", format!("imei{i}").as_bytes(), &i.to_be_bytes())
                .await
                .unwrap();
        }
        // Drain both members concurrently until all n arrived.
        let mut seen1 = Vec::new();
        let mut seen2 = Vec::new();
        while seen1.len() + seen2.len() < n as usize {
            tokio::select! {
                d = m1.recv() => seen1.push(d.unwrap()),
                d = m2.recv() => seen2.push(d.unwrap()),
                _ = tokio::time::sleep(Duration::from_secs(5)) => panic!("stalled"),
            }
        }
        assert!(
            !seen1.is_empty() && !seen2.is_empty(),
            "both members get work"
        );
        let p1: HashSet<u32> = seen1.iter().map(|d| d.partition).collect();
        let p2: HashSet<u32> = seen2.iter().map(|d| d.partition).collect();
        assert!(
            p1.is_disjoint(&p2),
            "a partition has one owner: {p1:?} {p2:?}"
        );
        let all: HashSet<_> = seen1
            .iter()
            .chain(&seen2)
            .map(|d| d.payload.clone())
            .collect();
        assert_eq!(all.len(), n as usize, "each message delivered once");
        nothing_more(&mut m1).await;
        nothing_more(&mut m2).await;
    }

    #[tokio::test]
    async fn uncommitted_messages_are_redelivered_after_a_member_drops() {
        let b = bus(2, 1000);
        let mut m1 = b.subscribe(&["mo"], "g").await.unwrap();
        for i in 0..10u32 {
            b.publish("mo", b"same-unit", &i.to_be_bytes())
                .await
                .unwrap();
        }
        let got = recv_n(&mut m1, 10).await;
        // Commit the first 4 only, then "crash".
        m1.commit(&got[3]).await.unwrap();
        drop(m1);
        let mut m2 = b.subscribe(&["mo"], "g").await.unwrap();
        let again = recv_n(&mut m2, 6).await;
        let vals: Vec<u32> = again
            .iter()
            .map(|d| u32::from_be_bytes(d.payload[..].try_into().unwrap()))
            .collect();
        assert_eq!(vals, vec![4, 5, 6, 7, 8, 9]);
        nothing_more(&mut m2).await;
    }

    #[tokio::test]
    async fn remaining_member_takes_over_a_dropped_members_partitions() {
        let b = bus(4, 1000);
        let mut m1 = b.subscribe(&["mo"], "g").await.unwrap();
        let m2 = b.subscribe(&["mo"], "g").await.unwrap();
        for i in 0..40u32 {
            b.publish("mo", format!("u{i}").as_bytes(), &i.to_be_bytes())
                .await
                .unwrap();
        }
        // m2 never reads; once it leaves, m1 must get everything.
        drop(m2);
        let got: HashSet<_> = recv_n(&mut m1, 40)
            .await
            .into_iter()
            .map(|d| d.payload)
            .collect();
        assert_eq!(got.len(), 40);
    }

    #[tokio::test]
    async fn publish_waits_when_full_until_a_commit_makes_room() {
        let b = bus(1, 3);
        let mut c = b.subscribe(&["mo"], "g").await.unwrap();
        for i in 0..3u8 {
            b.publish("mo", b"k", &[i]).await.unwrap();
        }
        let b2 = b.clone();
        let blocked = tokio::spawn(async move { b2.publish("mo", b"k", &[3]).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !blocked.is_finished(),
            "publish must wait while the partition is full"
        );
        let d = recv_n(&mut c, 1).await;
        // Delivered but uncommitted still takes room.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!blocked.is_finished());
        c.commit(&d[0]).await.unwrap();
        timeout(Duration::from_secs(5), blocked)
            .await
            .expect("publish resumes after commit")
            .unwrap()
            .unwrap();
        let rest = recv_n(&mut c, 3).await;
        assert_eq!(
            rest.iter().map(|d| d.payload[0]).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }

    #[tokio::test]
    async fn messages_published_before_any_subscriber_are_kept() {
        let b = bus(4, 100);
        for i in 0..20u32 {
            b.publish("mo", format!("u{i}").as_bytes(), &i.to_be_bytes())
                .await
                .unwrap();
        }
        assert_eq!(b.backlog("mo"), 20);
        let mut c = b.subscribe(&["mo"], "late").await.unwrap();
        let got: HashSet<_> = recv_n(&mut c, 20)
            .await
            .into_iter()
            .map(|d| d.payload)
            .collect();
        assert_eq!(got.len(), 20);
    }

    #[tokio::test]
    async fn a_slow_group_holds_messages_for_itself_only() {
        let b = bus(1, 100);
        let mut fast = b.subscribe(&["mo"], "fast").await.unwrap();
        let mut slow = b.subscribe(&["mo"], "slow").await.unwrap();
        for i in 0..5u8 {
            b.publish("mo", b"k", &[i]).await.unwrap();
        }
        let got = recv_n(&mut fast, 5).await;
        fast.commit(&got[4]).await.unwrap();
        assert_eq!(b.backlog("mo"), 5, "slow group has not committed");
        let got = recv_n(&mut slow, 5).await;
        slow.commit(&got[4]).await.unwrap();
        assert_eq!(b.backlog("mo"), 0);
    }

    #[tokio::test]
    async fn close_fails_waiters() {
        let b = bus(1, 1);
        let mut c = b.subscribe(&["mo"], "g").await.unwrap();
        let b2 = b.clone();
        let r = tokio::spawn(async move { c.recv().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        b2.close();
        assert!(matches!(r.await.unwrap(), Err(BusError::Closed)));
        assert!(matches!(
            b.publish("mo", b"k", b"v").await,
            Err(BusError::Closed)
        ));
    }

    #[tokio::test]
    async fn one_consumer_on_several_topics() {
        let b = bus(2, 100);
        let mut c = b.subscribe(&["a", "b"], "g").await.unwrap();
        b.publish("a", b"k", b"1").await.unwrap();
        b.publish("b", b"k", b"2").await.unwrap();
        let topics: HashSet<String> = recv_n(&mut c, 2)
            .await
            .into_iter()
            .map(|d| d.topic)
            .collect();
        assert_eq!(topics, HashSet::from(["a".to_owned(), "b".to_owned()]));
    }
}
