//! The fan-out hub with a per-channel sequencer.
//!
//! Committed events reach the hub out of order now and then: two
//! transactions commit seq 5 and 6 in order, but the task that committed 6
//! may publish first (and, with several nodes, NATS may lose or delay one).
//! Each channel with subscribers therefore keeps the next seq it expects;
//! events ahead of it wait in a small buffer, and a gap that persists past
//! `gap_timeout` is filled from the database through [`Backfill`]. So every
//! subscriber sees a channel's durable events exactly in seq order, without
//! gaps, and the database is the only source of truth.
//!
//! A backlog goes at the subscriber's pace. A subscription is *behind* in
//! a channel when it reads that channel's events itself instead of having
//! them queued: when it resumes after a seq, and when a backlog the server
//! created (a gap filled from the database after NATS lost events or
//! reconnected) would take more than half its queue. While behind, nothing
//! of the channel is queued for it; what it would have received is in the
//! store, and, for the latest events, in the channel's shared tail (kept
//! while anyone is behind, so a backlog that puts many subscribers behind
//! is read from the database once, not once each). It reads a page when its
//! consumer asks for more, so it holds one page of memory however far
//! behind it is, and only up to what the hub has sequenced, so membership
//! changes apply at the same seq as for everyone else. Once it has read
//! everything sequenced it is switched back to live delivery under the
//! registry lock: the channel's next event is queued for it, exactly once,
//! in order. A queue that overflows with *live* events puts the subscriber
//! behind too (a burst is not always the client's fault: a node's
//! publishes held during a NATS outage arrive at once); only a subscriber
//! that has not caught up within [`HubSettings::catch_up_within`] of such
//! an overflow is ended ([`EndReason::Overflow`]): that client is too slow
//! for the channel's pace, and resumes from its last seq.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use clacks_core::{ChannelEvent, ChannelId, EventPayload, Seq, UserId};
use futures::future::BoxFuture;
use rustc_hash::FxBuildHasher;

use crate::SharedEvent;
use crate::queue::{DeliveryQueue, Queued};
use crate::routing::{Routing, Topic};
use crate::subscription::{CatchUp, Cursor, Subscription, Work};

/// Where the hub and the subscriptions behind read what they missed: the
/// database.
pub trait Backfill: Send + Sync + 'static {
    /// Durable events with `seq > after`, ascending, at most `limit`.
    fn events_after(
        &self,
        channel: ChannelId,
        after: Seq,
        limit: u32,
    ) -> BoxFuture<'_, clacks_core::Result<Vec<ChannelEvent>>>;
    /// The channel's newest committed seq (`NotFound` once deleted).
    fn last_seq(&self, channel: ChannelId) -> BoxFuture<'_, clacks_core::Result<Seq>>;
    /// The users of the batched membership event at `seq` whose list the
    /// event left out (all, or only `only`): how a node that did not make
    /// the change learns which of its subscribers it affects.
    fn batch_users(
        &self,
        channel: ChannelId,
        seq: Seq,
        only: Option<UserId>,
    ) -> BoxFuture<'_, clacks_core::Result<Vec<UserId>>> {
        let _ = (channel, seq, only);
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Fills in the users of the batched membership events among `events`
/// whose list was left out (read back from the database, or received from
/// another node): all of them, or only `only`. One bounded read per bulk
/// request (at most the request's size), none for any other event.
pub(crate) async fn look_up_batches(
    backfill: &dyn Backfill,
    events: &mut [ChannelEvent],
    only: Option<&UserId>,
) -> clacks_core::Result<()> {
    for event in events {
        let (channel, seq) = (event.channel_id, event.seq);
        if let Some(batch) = event.payload.member_batch_mut()
            && batch.needs_lookup()
        {
            batch.affected = backfill.batch_users(channel, seq, only.cloned()).await?;
        }
    }
    Ok(())
}

/// What a subscription wants to receive.
#[derive(Debug, Clone)]
pub enum Interest {
    /// One channel.
    Channel(ChannelId),
    /// Every channel the user is a member of, following membership changes
    /// live: the initial set is given, joins add to it, leaves remove. The
    /// rest of the set, read after registering, comes with
    /// [`Hub::add_channels`].
    AllChannels(Vec<ChannelId>),
}

/// Why a subscription ended (after its last event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The subscriber is no longer a member of the (single) channel.
    Removed,
    /// The (single) channel was deleted.
    ChannelDeleted,
    /// The subscriber did not keep up with live events and its bounded
    /// queue filled.
    Overflow,
}

#[derive(Debug, Clone)]
pub enum Delivery {
    Event(Arc<SharedEvent>),
    End(EndReason),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HubStats {
    pub subscriptions: usize,
    pub channels: usize,
    /// Durable events waiting for a missing predecessor.
    pub pending_events: usize,
    /// (subscription, channel) pairs read by the subscription itself:
    /// resuming, or catching up on a backlog.
    pub behind: usize,
    /// Events kept in channels' shared tails for them.
    pub tail_events: usize,
}

/// Tuning of the hub.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// Live events queued per subscription before it is ended as too slow.
    pub queue_capacity: usize,
    /// How long an out-of-order event waits for its predecessor before the
    /// gap is filled from the database.
    pub gap_timeout: Duration,
    /// Events buffered per channel before the gap is filled at once.
    pub max_pending: usize,
    /// Latest events a channel keeps while some subscription is behind in
    /// it; one behind further reads the database itself.
    pub tail_capacity: usize,
    /// Most events a subscription that is behind reads at a time: the
    /// memory it holds, whatever the distance.
    pub page_size: usize,
    /// An event older than this when it reaches the hub is part of a
    /// backlog the server created (NATS was down and a node's publishes
    /// queued up meanwhile), not one a subscriber is too slow for.
    pub late_after: Duration,
    /// How long a subscriber whose queue overflowed with live events has to
    /// catch up before it is ended as too slow.
    pub catch_up_within: Duration,
}

impl Default for HubSettings {
    fn default() -> Self {
        HubSettings {
            queue_capacity: 1024,
            gap_timeout: Duration::from_millis(50),
            max_pending: 4096,
            tail_capacity: 4096,
            page_size: 256,
            late_after: Duration::from_millis(500),
            catch_up_within: Duration::from_secs(5),
        }
    }
}

struct Sub {
    user: UserId,
    all_channels: bool,
    queue: Arc<DeliveryQueue>,
    /// All-channels subscriptions until [`Hub::add_channels`]: the
    /// channels the user left meanwhile, with the `member_left` seq.
    /// Boxed: only all-channels subscriptions have one, briefly, and the
    /// map inline would weigh on every subscription's entry.
    #[expect(
        clippy::box_collection,
        reason = "a pointer, not 48 bytes, in every entry"
    )]
    left_while_listing: Option<Box<HashMap<ChannelId, Seq>>>,
    /// When its queue overflowed with live events, until it caught up.
    overflowed_at: Option<Instant>,
    /// The channels it is routed from (to unregister).
    routes: Routes,
}

/// The channels one subscription is routed from. Most subscriptions
/// follow one channel: that one is kept inline, and only an all-channels
/// subscription pays for a set (a map of one-element sets cost about
/// 150 bytes per subscription).
#[derive(Default)]
enum Routes {
    #[default]
    None,
    One(ChannelId),
    #[expect(
        clippy::box_collection,
        reason = "a pointer, not 48 bytes, in every entry"
    )]
    Many(Box<HashSet<ChannelId>>),
}

impl Routes {
    fn contains(&self, channel: ChannelId) -> bool {
        match self {
            Routes::None => false,
            Routes::One(one) => *one == channel,
            Routes::Many(many) => many.contains(&channel),
        }
    }

    fn insert(&mut self, channel: ChannelId) {
        match self {
            Routes::None => *self = Routes::One(channel),
            Routes::One(one) if *one == channel => {}
            Routes::One(one) => *self = Routes::Many(Box::new(HashSet::from([*one, channel]))),
            Routes::Many(many) => {
                many.insert(channel);
            }
        }
    }

    fn remove(&mut self, channel: ChannelId) {
        match self {
            Routes::One(one) if *one == channel => *self = Routes::None,
            Routes::Many(many) => {
                many.remove(&channel);
            }
            Routes::None | Routes::One(_) => {}
        }
    }

    fn into_vec(self) -> Vec<ChannelId> {
        match self {
            Routes::None => Vec::new(),
            Routes::One(one) => vec![one],
            Routes::Many(many) => many.into_iter().collect(),
        }
    }
}

/// Subscription ids. They are the hub's own counter, never a client's
/// choice, so a one-multiply hash serves (the fan-out looks one up per
/// event per subscriber) where SipHash guards maps keyed by client input.
type SubIds = HashSet<u64, FxBuildHasher>;

#[derive(Default)]
struct ChannelEntry {
    subs: SubIds,
    /// Present while some subscriptions among `subs` read this channel
    /// themselves (boxed: rare, and a node holds an entry per channel it
    /// follows).
    lagging: Option<Box<Lagging>>,
    /// The next durable seq to deliver; `None` until the baseline is known.
    next_seq: Option<Seq>,
    /// Durable events that arrived ahead of `next_seq`.
    pending: BTreeMap<Seq, Arc<SharedEvent>>,
    /// A backfill task for this channel is scheduled or running.
    backfilling: bool,
    /// Read everything after `next_seq` from the database even without a
    /// visible gap (after a NATS reconnect, events may be missing at the
    /// tail where no later event reveals them).
    catch_up: bool,
    /// The newest seq another node announced for the channel, when ahead
    /// of this node (its publish of that event was lost).
    announced: Option<Seq>,
    /// Users whose unstored `member_joined` (the channel's creation) was
    /// delivered: it reaches a node following both on the channel's and on
    /// the user's subject, and only one copy is delivered.
    /// Boxed: only a channel whose creation this node delivered has one.
    #[expect(
        clippy::box_collection,
        reason = "a pointer, not 48 bytes, in every entry"
    )]
    ephemeral_joins: Option<Box<HashSet<UserId>>>,
}

/// The subscriptions of a channel that read it themselves.
#[derive(Default)]
struct Lagging {
    /// Never empty: the entry drops its `Lagging` with the last one.
    behind: SubIds,
    /// The latest durable events delivered since, consecutive, shared by
    /// everyone behind.
    tail: VecDeque<Arc<SharedEvent>>,
}

impl ChannelEntry {
    /// The newest durable seq delivered here.
    fn position(&self) -> Option<Seq> {
        self.next_seq.map(|next| next - 1)
    }

    fn drop_behind(&mut self, id: u64) {
        if let Some(lagging) = &mut self.lagging
            && lagging.behind.remove(&id)
            && lagging.behind.is_empty()
        {
            self.lagging = None;
        }
    }

    fn is_behind(&self, id: u64) -> bool {
        self.lagging
            .as_ref()
            .is_some_and(|lagging| lagging.behind.contains(&id))
    }

    /// The subscriptions that read this channel themselves.
    fn behind(&self) -> impl Iterator<Item = u64> + '_ {
        self.lagging
            .iter()
            .flat_map(|lagging| lagging.behind.iter().copied())
    }

    fn fall_behind(&mut self, ids: impl IntoIterator<Item = u64>) {
        self.lagging.get_or_insert_default().behind.extend(ids);
    }

    /// The events kept for the subscriptions behind (none when nobody is).
    fn tail(&self) -> &VecDeque<Arc<SharedEvent>> {
        const NONE: &VecDeque<Arc<SharedEvent>> = &VecDeque::new();
        self.lagging.as_ref().map_or(NONE, |lagging| &lagging.tail)
    }
}

/// Where an event comes from, which decides what a full queue means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Published now: a full queue means the subscriber is too slow.
    Live,
    /// Read back from the database to fill a gap, or published late: a
    /// backlog the server created, which the subscriber reads at its pace.
    Backlog,
}

/// The users a membership event adds and removes (one, or a batch's).
fn membership_changes(payload: &EventPayload) -> (&[UserId], &[UserId]) {
    match payload {
        EventPayload::MemberJoined { user_id, .. } => (std::slice::from_ref(user_id), &[]),
        EventPayload::MembersJoined { batch, .. } => (batch.users(), &[]),
        EventPayload::MemberLeft { user_id } => (&[], std::slice::from_ref(user_id)),
        EventPayload::MembersLeft { batch } => (&[], batch.users()),
        _ => (&[], &[]),
    }
}

struct Registry {
    subs: HashMap<u64, Sub, FxBuildHasher>,
    channels: HashMap<ChannelId, ChannelEntry>,
    /// All-channels subscriptions by user, to follow their joins.
    all_by_user: HashMap<UserId, HashSet<u64>>,
    tail_capacity: usize,
    catch_up_within: Duration,
    /// The NATS subjects the node needs follow the keys of `channels` and
    /// `all_by_user`.
    routing: Arc<Routing>,
    /// Channels entered for a join of a user with an all-channels
    /// subscription here, whose events before this node's interest in them
    /// was live are read back once it is (see [`Hub::follow_joined`]).
    joined: Vec<ChannelId>,
    /// Channels this node stopped following, with the seq it would have
    /// handled next: a join below it is one already handled. Joins and
    /// leaves come twice over NATS (the channel's subject and the user's,
    /// by separate tasks), and the channel's subscription lingers after
    /// its entry is gone, so a late copy of an old join would otherwise
    /// enter the channel again and deliver the join (and the leave after
    /// it) a second time. Bounded: the oldest are forgotten first.
    departed: Departed,
}

/// Most channels [`Registry::departed`] remembers; a late copy of a join
/// arrives within the NATS subscription's linger, seconds, while forgetting
/// takes this many other channels leaving.
const DEPARTED_CAPACITY: usize = 16_384;

#[derive(Default)]
struct Departed {
    next_seq: HashMap<ChannelId, Seq>,
    order: std::collections::VecDeque<ChannelId>,
}

impl Departed {
    fn remember(&mut self, channel: ChannelId, next_seq: Seq) {
        if self.next_seq.insert(channel, next_seq).is_none() {
            self.order.push_back(channel);
        }
        while self.order.len() > DEPARTED_CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.next_seq.remove(&oldest);
            }
        }
    }

    fn forget(&mut self, channel: ChannelId) {
        if self.next_seq.remove(&channel).is_some() {
            self.order.retain(|c| *c != channel);
        }
    }

    /// Whether `seq` of `channel` was handled before this node stopped
    /// following it.
    fn handled(&self, channel: ChannelId, seq: Seq) -> bool {
        self.next_seq.get(&channel).is_some_and(|next| seq < *next)
    }
}

impl Registry {
    /// Records a membership change of `user` for their all-channels
    /// subscriptions still reading their channel list.
    fn note_membership(&mut self, user: &UserId, channel: ChannelId, left_at: Option<Seq>) {
        let Registry {
            subs, all_by_user, ..
        } = self;
        for id in all_by_user.get(user).into_iter().flatten() {
            if let Some(Sub {
                left_while_listing: Some(left),
                ..
            }) = subs.get_mut(id)
            {
                match left_at {
                    Some(seq) => left.insert(channel, seq),
                    None => left.remove(&channel),
                };
            }
        }
    }

    fn new(tail_capacity: usize, catch_up_within: Duration, routing: Arc<Routing>) -> Self {
        Registry {
            subs: HashMap::default(),
            channels: HashMap::new(),
            all_by_user: HashMap::new(),
            tail_capacity,
            catch_up_within,
            routing,
            joined: Vec::new(),
            departed: Departed::default(),
        }
    }

    /// The channel's entry, created (and its NATS interest asked for) if
    /// missing.
    fn enter(&mut self, channel: ChannelId) -> &mut ChannelEntry {
        let routing = &self.routing;
        let departed = &mut self.departed;
        self.channels.entry(channel).or_insert_with(|| {
            routing.want(Topic::Channel(channel), true);
            departed.forget(channel);
            ChannelEntry::default()
        })
    }

    /// Forgets a channel nobody here follows any more.
    fn leave_if_unfollowed(&mut self, channel: ChannelId) {
        if self
            .channels
            .get(&channel)
            .is_some_and(|entry| entry.subs.is_empty())
        {
            if let Some(next_seq) = self.channels.remove(&channel).and_then(|e| e.next_seq) {
                self.departed.remember(channel, next_seq);
            }
            self.routing.want(Topic::Channel(channel), false);
        }
    }

    /// Enters a channel at `next_seq` for a join that arrived while nobody
    /// here followed it.
    fn enter_joined(&mut self, channel: ChannelId, next_seq: Seq) {
        self.enter(channel).next_seq = Some(next_seq);
        if self.routing.enabled() {
            self.joined.push(channel);
        }
    }

    fn route(&mut self, id: u64, channel: ChannelId) {
        let Some(sub) = self.subs.get_mut(&id) else {
            return;
        };
        sub.routes.insert(channel);
        self.enter(channel).subs.insert(id);
    }

    fn unroute(&mut self, id: u64, channel: ChannelId) {
        if let Some(entry) = self.channels.get_mut(&channel) {
            entry.subs.remove(&id);
            entry.drop_behind(id);
            self.leave_if_unfollowed(channel);
        }
        if let Some(sub) = self.subs.get_mut(&id) {
            sub.routes.remove(channel);
        }
    }

    fn remove(&mut self, id: u64) {
        let Some(sub) = self.subs.remove(&id) else {
            return;
        };
        for channel in sub.routes.into_vec() {
            if let Some(entry) = self.channels.get_mut(&channel) {
                entry.subs.remove(&id);
                entry.drop_behind(id);
                self.leave_if_unfollowed(channel);
            }
        }
        sub.queue.close();
        if let Some(set) = self.all_by_user.get_mut(&sub.user) {
            set.remove(&id);
            if set.is_empty() {
                self.all_by_user.remove(&sub.user);
                self.routing.want(Topic::User(sub.user), false);
            }
        }
    }

    /// Queues `event` for one subscription; records an overflow.
    fn push(&self, id: u64, event: &Arc<SharedEvent>, ended: &mut Vec<(u64, Option<EndReason>)>) {
        if let Some(sub) = self.subs.get(&id)
            && !sub.queue.push(Queued::Event(event.clone()))
        {
            ended.push((id, None));
        }
    }

    /// Hands `event` (in order) to the channel's subscriptions and applies
    /// the membership change it carries.
    fn deliver(&mut self, event: &Arc<SharedEvent>, origin: Origin) {
        let channel = event.channel_id;
        let mut ended: Vec<(u64, Option<EndReason>)> = Vec::new();
        let Registry {
            subs,
            channels,
            tail_capacity,
            catch_up_within,
            ..
        } = self;
        if let Some(entry) = channels.get_mut(&channel) {
            let mut fell_behind = Vec::new();
            let mut overflowed = Vec::new();
            for id in &entry.subs {
                let Some(sub) = subs.get(id) else { continue };
                // Per event per subscriber: one pointer test when nobody
                // is behind.
                if entry.is_behind(*id) {
                    if sub
                        .overflowed_at
                        .is_some_and(|at| at.elapsed() > *catch_up_within)
                    {
                        // Still behind, long after live events overflowed
                        // its queue: too slow for this channel's pace.
                        ended.push((*id, None));
                        continue;
                    }
                    // It reads the channel itself, up to what is delivered
                    // here: there is more now.
                    sub.queue.wake();
                    continue;
                }
                let item = Queued::Event(event.clone());
                let queued = match origin {
                    Origin::Live => sub.queue.push(item),
                    Origin::Backlog => sub.queue.push_backlog(item),
                };
                if queued {
                    continue;
                }
                if !event.durable {
                    // Nothing to read back: typing and receipts are
                    // best-effort, and dropped for a subscriber this full.
                    metrics::counter!("clacks_ephemeral_dropped_total").increment(1);
                    continue;
                }
                sub.queue.push_last(Queued::Behind {
                    channel,
                    read_to: event.seq - 1,
                });
                fell_behind.push(*id);
                if origin == Origin::Live && sub.overflowed_at.is_none() {
                    overflowed.push(*id);
                }
            }
            if !fell_behind.is_empty() {
                metrics::counter!("clacks_backlogs_read_at_subscriber_pace_total")
                    .increment(fell_behind.len() as u64);
                entry.fall_behind(fell_behind);
            }
            let now = Instant::now();
            for id in overflowed {
                if let Some(sub) = subs.get_mut(&id) {
                    sub.overflowed_at = Some(now);
                }
            }
            if event.durable
                && let Some(lagging) = &mut entry.lagging
            {
                lagging.tail.push_back(event.clone());
                if lagging.tail.len() > *tail_capacity {
                    lagging.tail.pop_front();
                }
            }
        }
        let (joined, left) = membership_changes(&event.payload);
        for user_id in joined {
            self.note_membership(user_id, channel, None);
            let ids: Vec<u64> = self
                .all_by_user
                .get(user_id)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default();
            for id in ids {
                if !self
                    .subs
                    .get(&id)
                    .is_some_and(|s| s.routes.contains(channel))
                {
                    // The joiner's all-channels stream starts with the
                    // join itself.
                    self.route(id, channel);
                    self.push(id, event, &mut ended);
                }
            }
        }
        if !left.is_empty() {
            for user_id in left {
                self.note_membership(user_id, channel, Some(event.seq));
            }
            // A batch may hold thousands of users: the channel's local
            // subscriptions are matched against it, not the other way.
            let leavers: HashSet<&UserId> = left.iter().collect();
            let leaving: Vec<u64> = self
                .channels
                .get(&channel)
                .map(|e| {
                    e.subs
                        .iter()
                        .copied()
                        .filter(|id| !e.is_behind(*id))
                        .filter(|id| self.subs.get(id).is_some_and(|s| leavers.contains(&s.user)))
                        .collect()
                })
                .unwrap_or_default();
            for id in leaving {
                if self.subs.get(&id).is_some_and(|s| s.all_channels) {
                    self.unroute(id, channel);
                } else {
                    ended.push((id, Some(EndReason::Removed)));
                }
            }
        }
        if matches!(event.payload, EventPayload::ChannelDeleted) {
            let (subs, behind): (Vec<u64>, Vec<u64>) = self
                .channels
                .get(&channel)
                .map(|e| (e.subs.iter().copied().collect(), e.behind().collect()))
                .unwrap_or_default();
            for id in behind {
                // What it has not read yet is gone with the channel; the
                // deletion is the last thing it gets of it.
                if let Some(sub) = self.subs.get(&id) {
                    sub.queue.push_last(Queued::Event(event.clone()));
                }
            }
            for id in subs {
                if self.subs.get(&id).is_some_and(|s| s.all_channels) {
                    self.unroute(id, channel);
                } else {
                    ended.push((id, Some(EndReason::ChannelDeleted)));
                }
            }
        }
        for (id, reason) in ended {
            if let Some(sub) = self.subs.get(&id) {
                match reason {
                    Some(reason) => sub.queue.push_last(Queued::End(reason)),
                    None => {
                        sub.queue.overflow();
                        metrics::counter!("clacks_slow_consumer_overflows_total").increment(1);
                    }
                }
            }
            // Closing lets the stream drain what is queued and then end
            // with the recorded reason.
            self.remove(id);
        }
        metrics::counter!("clacks_events_routed_total").increment(1);
    }

    /// Delivers `event` if it is the next one, buffers it if it is early,
    /// drops it if it was delivered already. Returns whether a backfill
    /// should be scheduled.
    fn sequence(
        &mut self,
        event: Arc<SharedEvent>,
        max_pending: usize,
        origin: Origin,
    ) -> Sequenced {
        let channel = event.channel_id;
        let Some(entry) = self.channels.get_mut(&channel) else {
            // Nobody here listens to this channel, unless a user with an
            // all-channels subscription just joined it: their stream starts
            // at the join.
            let (joined, left) = membership_changes(&event.payload);
            for user_id in left {
                self.note_membership(user_id, channel, Some(event.seq));
            }
            if !self.departed.handled(channel, event.seq)
                && joined
                    .iter()
                    .any(|user| self.all_by_user.contains_key(user))
            {
                self.enter_joined(channel, event.seq + 1);
                self.deliver(&event, origin);
            }
            return Sequenced::Done;
        };
        let Some(next) = entry.next_seq else {
            entry.pending.insert(event.seq, event);
            return Sequenced::NeedsBackfill;
        };
        if event.seq < next {
            return Sequenced::Done;
        }
        if event.seq > next {
            entry.pending.insert(event.seq, event);
            if entry.pending.len() >= max_pending {
                return Sequenced::NeedsBackfillNow;
            }
            return Sequenced::NeedsBackfill;
        }
        entry.next_seq = Some(next + 1);
        self.deliver(&event, origin);
        self.flush(channel, origin);
        Sequenced::Done
    }

    /// Delivers buffered events that are now next in line.
    fn flush(&mut self, channel: ChannelId, origin: Origin) {
        loop {
            let Some(entry) = self.channels.get_mut(&channel) else {
                return;
            };
            let Some(next) = entry.next_seq else { return };
            // Drop what is already behind, then take the next one if here.
            while entry
                .pending
                .first_key_value()
                .is_some_and(|(seq, _)| *seq < next)
            {
                entry.pending.pop_first();
            }
            let Some(event) = entry.pending.remove(&next) else {
                return;
            };
            entry.next_seq = Some(next + 1);
            self.deliver(&event, origin);
        }
    }

    /// Wakes the subscriptions behind in `channel` (its position moved).
    fn wake_behind(&self, channel: ChannelId) {
        if let Some(entry) = self.channels.get(&channel) {
            for id in entry.behind() {
                if let Some(sub) = self.subs.get(&id) {
                    sub.queue.wake();
                }
            }
        }
    }
}

enum Sequenced {
    Done,
    NeedsBackfill,
    NeedsBackfillNow,
}

/// Why a channel is read back from the database (a metric label).
#[derive(Debug, Clone, Copy)]
enum FillReason {
    /// A later seq arrived: the ones before it are missing.
    Gap,
    /// NATS reconnected or reported a loss: anything may be missing.
    CatchUp,
    /// Another node announced a seq this node never received, and no
    /// later event revealed it.
    Tail,
}

impl FillReason {
    fn label(self) -> &'static str {
        match self {
            FillReason::Gap => "gap",
            FillReason::CatchUp => "catch_up",
            FillReason::Tail => "tail",
        }
    }
}

/// The node-local fan-out hub.
pub struct Hub {
    registry: RwLock<Registry>,
    routing: Arc<Routing>,
    next_id: AtomicU64,
    settings: HubSettings,
    backfill: Arc<dyn Backfill>,
    this: Weak<Hub>,
}

impl Hub {
    pub fn new(settings: HubSettings, backfill: Arc<dyn Backfill>) -> Arc<Self> {
        let settings = HubSettings {
            queue_capacity: settings.queue_capacity.max(1),
            max_pending: settings.max_pending.max(1),
            tail_capacity: settings.tail_capacity.max(1),
            page_size: settings.page_size.clamp(1, u32::MAX as usize),
            ..settings
        };
        let routing = Arc::new(Routing::default());
        Arc::new_cyclic(|this| Hub {
            registry: RwLock::new(Registry::new(
                settings.tail_capacity,
                settings.catch_up_within,
                routing.clone(),
            )),
            routing,
            next_id: AtomicU64::new(1),
            settings,
            backfill,
            this: this.clone(),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.registry
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a subscription. Events published after this returns are
    /// delivered to it, in seq order per channel, starting after the
    /// channel's baseline (see [`Hub::set_baseline`]).
    pub fn subscribe(&self, user: UserId, interest: Interest) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let queue = DeliveryQueue::new(self.settings.queue_capacity);
        let (channels, all_channels) = match interest {
            Interest::Channel(c) => (vec![c], false),
            Interest::AllChannels(cs) => (cs, true),
        };
        let mut registry = self.write();
        registry.subs.insert(
            id,
            Sub {
                user: user.clone(),
                all_channels,
                queue: queue.clone(),
                left_while_listing: all_channels.then(Box::default),
                overflowed_at: None,
                routes: Routes::None,
            },
        );
        for channel in &channels {
            registry.route(id, *channel);
        }
        if all_channels {
            let routing = registry.routing.clone();
            registry
                .all_by_user
                .entry(user)
                .or_insert_with_key(|user| {
                    routing.want(Topic::User(user.clone()), true);
                    HashSet::new()
                })
                .insert(id);
        }
        drop(registry);
        for channel in channels {
            self.schedule_backfill_if_unbased(channel);
        }
        Subscription::new(id, queue, self.this.clone())
    }

    /// Adds the user's channels, read after the subscription registered,
    /// to an all-channels subscription, each with the seq it was read at.
    /// A channel whose `member_left` (a later seq) arrived in between is
    /// left out: it was delivered before the subscription was routed there.
    ///
    /// Returns the channels that had no baseline. Their baseline is the
    /// seq they were listed at, set by the caller, but an event committed
    /// after the list was read and published before this call found no
    /// route here and was dropped: the caller reads their seqs again
    /// (after this call) and passes them to
    /// [`Hub::committed_since_listing`].
    #[must_use = "channels without a baseline may have missed events"]
    pub fn add_channels(
        &self,
        subscription: &Subscription,
        channels: &[(ChannelId, Seq)],
    ) -> Vec<ChannelId> {
        let mut registry = self.write();
        let Some(sub) = registry.subs.get_mut(&subscription.id) else {
            return Vec::new();
        };
        let left = sub.left_while_listing.take().unwrap_or_default();
        let added: Vec<ChannelId> = channels
            .iter()
            .filter(|(channel, read_at)| left.get(channel).is_none_or(|left_at| left_at <= read_at))
            .map(|(channel, _)| *channel)
            .collect();
        for channel in &added {
            registry.route(subscription.id, *channel);
        }
        let unbased: Vec<ChannelId> = added
            .into_iter()
            .filter(|channel| {
                registry
                    .channels
                    .get(channel)
                    .is_some_and(|entry| entry.next_seq.is_none())
            })
            .collect();
        drop(registry);
        for channel in &unbased {
            self.schedule_backfill_if_unbased(*channel);
        }
        unbased
    }

    /// Makes `subscription` start `channel` after seq `after`: it reads
    /// what follows from the store, page by page as it is consumed, then
    /// continues live with no gap and no duplicate. Returns how many
    /// events that is now (what this node has sequenced beyond `after`),
    /// or `None` when the subscription does not follow the channel.
    pub fn resume(
        &self,
        subscription: &mut Subscription,
        channel: ChannelId,
        after: Seq,
    ) -> Option<u64> {
        let id = subscription.id;
        let mut registry = self.write();
        let (user, all_channels) = registry
            .subs
            .get(&id)
            .map(|sub| (sub.user.clone(), sub.all_channels))?;
        let entry = registry
            .channels
            .get_mut(&channel)
            .filter(|entry| entry.subs.contains(&id))?;
        entry.fall_behind([id]);
        // Under the registry lock: nothing of the channel is queued for
        // it from now on, and what was (since it registered) it reads back.
        subscription.queue.purge(channel);
        let position = entry.position();
        drop(registry);
        subscription
            .catch_up(user, !all_channels)
            .cursors
            .push_back(Cursor::new(channel, after, position.unwrap_or(after)));
        Some(position.map_or(0, |position| (position - after).max(0).unsigned_abs()))
    }

    /// The state a subscription needs to read channels itself.
    pub(crate) fn catch_up_for(&self, id: u64) -> Option<CatchUp> {
        self.read()
            .subs
            .get(&id)
            .map(|sub| CatchUp::new(sub.user.clone(), !sub.all_channels))
    }

    /// What a subscription behind should read next: its channels in turn,
    /// each from the shared tail when it covers the cursor, else from the
    /// store, never beyond what this hub has delivered. A channel read to
    /// the end is switched to live delivery (or, after the subscriber left
    /// it, dropped) here, under the lock that orders deliveries.
    pub(crate) fn advance(&self, id: u64, catch_up: &mut CatchUp) -> Option<Work> {
        let page = self.settings.page_size;
        let mut registry = self.write();
        for _ in 0..catch_up.cursors.len() {
            let cursor = catch_up.cursors.pop_front()?;
            let Some(entry) = registry
                .channels
                .get_mut(&cursor.channel)
                .filter(|entry| entry.subs.contains(&id))
            else {
                // No longer followed (deleted, or unsubscribed).
                continue;
            };
            let Some(position) = entry.position() else {
                // No baseline yet: woken when it is set.
                catch_up.cursors.push_back(cursor);
                continue;
            };
            if cursor.read_to > position {
                // Ahead of this node (it resumed with a seq still on its
                // way here): woken as the channel moves.
                catch_up.cursors.push_back(cursor);
                continue;
            }
            if cursor.read_to == position {
                entry.drop_behind(id);
                if cursor.left {
                    registry.unroute(id, cursor.channel);
                }
                if let Some(sub) = registry.subs.get_mut(&id) {
                    // Caught up: a later overflow gets a fresh chance.
                    sub.overflowed_at = None;
                }
                continue;
            }
            let tail_start = entry.tail().front().map(|event| event.seq);
            let from_tail: Vec<Arc<SharedEvent>> = match tail_start {
                Some(first) if first <= cursor.read_to + 1 => {
                    let skip = usize::try_from(cursor.read_to + 1 - first).unwrap_or(usize::MAX);
                    entry.tail().iter().skip(skip).take(page).cloned().collect()
                }
                _ => Vec::new(),
            };
            let work = if from_tail.is_empty() {
                // Up to where the tail starts, or to the position.
                let until = tail_start
                    .filter(|first| *first > cursor.read_to + 1)
                    .map_or(position, |first| (first - 1).min(position));
                let limit =
                    u32::try_from((until - cursor.read_to).min(page as Seq)).unwrap_or(u32::MAX);
                Work::Read {
                    channel: cursor.channel,
                    after: cursor.read_to,
                    limit,
                    backfill: self.backfill.clone(),
                }
            } else {
                Work::Tail(cursor.channel, from_tail)
            };
            // Next time another channel goes first.
            catch_up.cursors.push_back(cursor);
            return Some(work);
        }
        None
    }

    /// Tells the hub the newest seq committed in `channel`, read from the
    /// store *after* a subscription registered: later events are delivered,
    /// earlier ones are history. Ignored when the channel already has one.
    pub fn set_baseline(&self, channel: ChannelId, last_committed: Seq) {
        let mut registry = self.write();
        if let Some(entry) = registry.channels.get_mut(&channel)
            && entry.next_seq.is_none()
        {
            entry.next_seq = Some(last_committed + 1);
            registry.flush(channel, Origin::Live);
            registry.wake_behind(channel);
        }
    }

    /// The newest durable seq delivered for `channel` on this node (0 when
    /// unknown): the position ephemeral events carry.
    pub fn last_seq(&self, channel: ChannelId) -> Seq {
        self.read()
            .channels
            .get(&channel)
            .and_then(ChannelEntry::position)
            .unwrap_or(0)
    }

    /// Routes an event received from another node: a batched membership
    /// change that does not list its users is completed from the database
    /// first, if this node has anyone it could concern (a subscriber of the
    /// channel, or an all-channels subscriber).
    pub async fn publish_remote(&self, mut event: ChannelEvent) {
        let lookup = event
            .payload
            .member_batch()
            .is_some_and(|batch| batch.needs_lookup())
            && {
                let registry = self.read();
                registry.channels.contains_key(&event.channel_id)
                    || !registry.all_by_user.is_empty()
            };
        if lookup {
            let mut retry = Duration::from_millis(50);
            // Until it is known, nobody can be told who left: later events
            // of the channel wait in the sequencer meanwhile.
            while let Err(e) =
                look_up_batches(&*self.backfill, std::slice::from_mut(&mut event), None).await
            {
                tracing::warn!(channel = %event.channel_id, seq = event.seq, error = %e, "reading a membership batch failed; retrying");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(5));
            }
        }
        self.publish(event);
    }

    /// Routes a committed event to its channel's subscriptions, in seq order.
    pub fn publish(&self, event: ChannelEvent) {
        // Only a durable event can be read back; a late ephemeral one is
        // queued like any other.
        let late = event.durable
            && clacks_core::now_ms().saturating_sub(event.at)
                > i64::try_from(self.settings.late_after.as_millis()).unwrap_or(i64::MAX);
        let origin = if late { Origin::Backlog } else { Origin::Live };
        let event = SharedEvent::new(event);
        let channel = event.channel_id;
        let mut registry = self.write();
        if !event.durable {
            if let EventPayload::MemberJoined { user_id, .. } = &event.payload {
                if !registry.channels.contains_key(&channel)
                    && registry.all_by_user.contains_key(user_id)
                {
                    // A channel created with the user in it: their "all
                    // channels" subscriptions follow it from its position on.
                    registry.enter_joined(channel, event.seq + 1);
                }
                if let Some(entry) = registry.channels.get_mut(&channel)
                    && !entry
                        .ephemeral_joins
                        .get_or_insert_default()
                        .insert(user_id.clone())
                {
                    return;
                }
            }
            if registry.channels.contains_key(&channel) {
                registry.deliver(&event, origin);
            }
            let joined = std::mem::take(&mut registry.joined);
            drop(registry);
            self.follow_joined(joined);
            return;
        }
        let outcome = registry.sequence(event, self.settings.max_pending, origin);
        let joined = std::mem::take(&mut registry.joined);
        drop(registry);
        self.follow_joined(joined);
        match outcome {
            Sequenced::Done => {}
            Sequenced::NeedsBackfill => self.schedule_backfill(channel, self.settings.gap_timeout),
            Sequenced::NeedsBackfillNow => self.schedule_backfill(channel, Duration::ZERO),
        }
    }

    /// The node's NATS interests, kept by the NatsBus.
    pub(crate) fn routing(&self) -> &Arc<Routing> {
        &self.routing
    }

    /// Waits until NATS delivers to this node every channel (and user) its
    /// subscriptions registered so far need; see [`Routing::ready`]. A
    /// subscriber reads its baseline from the database after this, so that
    /// an event committed after that read reaches this node live.
    pub async fn interest_ready(&self) -> bool {
        self.routing.ready().await
    }

    /// Whether this node receives only the channels it follows (NATS with
    /// interest-based routing), rather than every event or none.
    pub fn routes_by_interest(&self) -> bool {
        self.routing.enabled()
    }

    /// Channels this node started following for a join it received while
    /// no interest in them was live: events committed after the join and
    /// published before the interest was registered never reached it. Once
    /// the interest is live, the channel's newest seq is read and what lies
    /// between is read back.
    fn follow_joined(&self, joined: Vec<ChannelId>) {
        if joined.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let hub = self.this.clone();
        runtime.spawn(async move {
            let Some(strong) = hub.upgrade() else { return };
            strong.routing.ready().await;
            let mut tails = Vec::with_capacity(joined.len());
            for channel in joined {
                match strong.backfill.last_seq(channel).await {
                    Ok(last) => tails.push((channel, last)),
                    Err(clacks_core::Error::NotFound(_)) => {}
                    Err(e) => {
                        // A later event or an announcement reveals the gap.
                        tracing::warn!(channel = %channel, error = %e, "cannot read the newest seq of a joined channel");
                    }
                }
            }
            strong.fill_up_to(&tails, Duration::ZERO);
        });
    }

    /// Reads what may have been missed in every subscribed channel from the
    /// database (after a NATS reconnect or a reported loss).
    pub fn catch_up_all(&self) {
        let channels: Vec<ChannelId> = {
            let mut registry = self.write();
            registry
                .channels
                .iter_mut()
                .filter(|(_, entry)| entry.next_seq.is_some())
                .map(|(channel, entry)| {
                    entry.catch_up = true;
                    *channel
                })
                .collect()
        };
        metrics::counter!("clacks_catch_ups_total").increment(1);
        for channel in channels {
            self.schedule_backfill(channel, Duration::ZERO);
        }
    }

    /// Newest seqs other nodes announce for the channels they published to
    /// recently. A channel this node serves and has not reached is filled
    /// from the database (after a short wait, in case the event is only
    /// slower than the announcement): a lost publish of a channel's last
    /// event shows no gap, as nothing comes after it.
    pub fn announced(&self, tails: &[(ChannelId, Seq)]) {
        self.fill_up_to(tails, self.settings.gap_timeout);
    }

    /// Newest seqs read from the store, after [`Hub::add_channels`], for
    /// the channels it returned without a baseline. Their baseline is the
    /// seq the channel list was read at (the membership it reflects), so
    /// an event committed between the list and the routing found no route
    /// here and was dropped: what lies between is read back now.
    pub fn committed_since_listing(&self, tails: &[(ChannelId, Seq)]) {
        self.fill_up_to(tails, Duration::ZERO);
    }

    fn fill_up_to(&self, tails: &[(ChannelId, Seq)], delay: Duration) {
        let mut behind = Vec::new();
        {
            let mut registry = self.write();
            for &(channel, seq) in tails {
                if let Some(entry) = registry.channels.get_mut(&channel)
                    && entry.position().is_some_and(|position| seq > position)
                {
                    entry.announced = entry.announced.max(Some(seq));
                    behind.push(channel);
                }
            }
        }
        for channel in behind {
            self.schedule_backfill(channel, delay);
        }
    }

    pub fn stats(&self) -> HubStats {
        let registry = self.read();
        let channels = registry.channels.values();
        HubStats {
            subscriptions: registry.subs.len(),
            channels: registry.channels.len(),
            pending_events: channels.clone().map(|c| c.pending.len()).sum(),
            behind: channels.clone().map(|c| c.behind().count()).sum(),
            tail_events: channels.map(|c| c.tail().len()).sum(),
        }
    }

    pub(crate) fn unsubscribe(&self, id: u64) {
        self.write().remove(id);
    }

    fn schedule_backfill_if_unbased(&self, channel: ChannelId) {
        let unbased = self
            .read()
            .channels
            .get(&channel)
            .is_some_and(|e| e.next_seq.is_none());
        if unbased {
            // The subscriber normally sets the baseline at once; this is the
            // safety net if it cannot.
            self.schedule_backfill(channel, self.settings.gap_timeout * 4);
        }
    }

    /// Fills a gap (or a missing baseline) of `channel` from the database
    /// after `delay`, unless it closes by itself first.
    fn schedule_backfill(&self, channel: ChannelId, delay: Duration) {
        {
            let mut registry = self.write();
            let Some(entry) = registry.channels.get_mut(&channel) else {
                return;
            };
            if entry.backfilling {
                return;
            }
            entry.backfilling = true;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let hub = self.this.clone();
        runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            let mut retry = Duration::from_millis(100);
            loop {
                let Some(strong) = hub.upgrade() else { return };
                match strong.backfill_once(channel).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(channel = %channel, error = %e, "backfill from the database failed; retrying");
                        drop(strong);
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
    }

    async fn backfill_once(&self, channel: ChannelId) -> clacks_core::Result<()> {
        let state = {
            let mut registry = self.write();
            registry.channels.get_mut(&channel).map(|e| {
                (
                    e.next_seq,
                    e.pending.first_key_value().map(|(seq, _)| *seq),
                    std::mem::take(&mut e.catch_up),
                    e.announced.take(),
                )
            })
        };
        let Some((next, first_pending, catch_up, announced)) = state else {
            return Ok(());
        };
        match next {
            None => {
                // Subscribers set the baseline right after registering; this
                // runs only if one could not. Events that arrived since the
                // registration are kept; without any, the database decides.
                let last = match first_pending {
                    Some(first) => first - 1,
                    None => match self.backfill.last_seq(channel).await {
                        Ok(last) => last,
                        Err(clacks_core::Error::NotFound(_)) => 0,
                        Err(e) => return Err(e),
                    },
                };
                tracing::warn!(channel = %channel, baseline = last, "channel subscribed without a baseline; guessed one");
                metrics::counter!("clacks_backfills_total", "kind" => "baseline").increment(1);
                let mut registry = self.write();
                if let Some(entry) = registry.channels.get_mut(&channel) {
                    entry.backfilling = false;
                    if entry.next_seq.is_none() {
                        entry.next_seq = Some(last + 1);
                    }
                    registry.flush(channel, Origin::Live);
                    registry.wake_behind(channel);
                }
            }
            Some(next) => {
                const CATCH_UP_BATCH: Seq = 10_000;
                let (wanted, reason) = match (first_pending, announced) {
                    (Some(first), _) => (first - next, FillReason::Gap),
                    (None, _) if catch_up => (CATCH_UP_BATCH, FillReason::CatchUp),
                    (None, Some(announced)) => (announced + 1 - next, FillReason::Tail),
                    (None, None) => (0, FillReason::Gap),
                };
                let mut more = false;
                if wanted > 0 {
                    let limit = u32::try_from(wanted.min(CATCH_UP_BATCH)).unwrap_or(u32::MAX);
                    let mut missing =
                        match self.backfill.events_after(channel, next - 1, limit).await {
                            Ok(events) => events,
                            Err(clacks_core::Error::NotFound(_)) => Vec::new(),
                            Err(e) => return Err(e),
                        };
                    look_up_batches(&*self.backfill, &mut missing, None).await?;
                    metrics::counter!("clacks_backfills_total", "kind" => reason.label())
                        .increment(1);
                    metrics::counter!("clacks_backfilled_events_total")
                        .increment(missing.len() as u64);
                    if matches!(reason, FillReason::Tail) && !missing.is_empty() {
                        metrics::counter!("clacks_tail_fills_total").increment(1);
                    }
                    more = catch_up && missing.len() as Seq >= wanted;
                    let mut registry = self.write();
                    for event in missing {
                        let _ =
                            registry.sequence(SharedEvent::new(event), usize::MAX, Origin::Backlog);
                    }
                    if more && let Some(entry) = registry.channels.get_mut(&channel) {
                        entry.catch_up = true;
                    }
                }
                let mut registry = self.write();
                let again = registry.channels.get_mut(&channel).is_some_and(|entry| {
                    entry.backfilling = false;
                    // Still a gap (the database did not have it yet, or it
                    // was larger than one batch), more to catch up on, or a
                    // newer announcement.
                    entry.catch_up
                        || entry
                            .announced
                            .is_some_and(|seq| Some(seq) > entry.position())
                        || entry
                            .pending
                            .first_key_value()
                            .is_some_and(|(seq, _)| Some(*seq) != entry.next_seq)
                });
                drop(registry);
                if again {
                    let delay = if more {
                        Duration::ZERO
                    } else {
                        self.settings.gap_timeout
                    };
                    self.schedule_backfill(channel, delay);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clacks_core::{Message, MessageId, Role, Sender};
    use futures::StreamExt;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    #[test]
    fn routes_hold_one_channel_inline_and_more_in_a_set() {
        let (a, b) = (ChannelId(1), ChannelId(2));
        let mut routes = Routes::default();
        assert!(!routes.contains(a));
        routes.insert(a);
        routes.insert(a);
        assert!(matches!(routes, Routes::One(c) if c == a));
        routes.insert(b);
        assert!(matches!(routes, Routes::Many(_)));
        assert!(routes.contains(a) && routes.contains(b));
        routes.remove(a);
        assert!(!routes.contains(a) && routes.contains(b));
        assert_eq!(routes.into_vec(), vec![b]);
        let mut one = Routes::default();
        one.insert(a);
        one.remove(b);
        assert!(one.contains(a));
        one.remove(a);
        assert!(matches!(one, Routes::None));
        assert!(one.into_vec().is_empty());
    }

    fn message(channel: i64, seq: Seq) -> ChannelEvent {
        ChannelEvent {
            channel_id: ChannelId(channel),
            seq,
            durable: true,
            at: clacks_core::now_ms(),
            payload: EventPayload::MessageCreated {
                message: Message {
                    id: MessageId(seq),
                    channel_id: ChannelId(channel),
                    seq,
                    sender: Sender::System,
                    client_message_id: None,
                    content: format!("m{seq}"),
                    created_at: 0,
                    edited_at: None,
                    deleted_at: None,
                    parent_id: None,
                    reply_count: 0,
                    last_reply_at: None,
                    mentions: Vec::new(),
                },
            },
        }
    }

    fn event(channel: i64, seq: Seq, payload: EventPayload) -> ChannelEvent {
        ChannelEvent {
            channel_id: ChannelId(channel),
            seq,
            durable: true,
            at: clacks_core::now_ms(),
            payload,
        }
    }

    fn joined(channel: i64, seq: Seq, who: &str) -> ChannelEvent {
        event(
            channel,
            seq,
            EventPayload::MemberJoined {
                user_id: user(who),
                role: Role::member(),
            },
        )
    }

    fn left(channel: i64, seq: Seq, who: &str) -> ChannelEvent {
        event(
            channel,
            seq,
            EventPayload::MemberLeft { user_id: user(who) },
        )
    }

    fn seq_of(d: Delivery) -> Seq {
        match d {
            Delivery::Event(e) => e.seq,
            Delivery::End(r) => panic!("ended: {r:?}"),
        }
    }

    async fn next_within(sub: &mut Subscription) -> Option<Delivery> {
        tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("a delivery within 5 s")
    }

    /// A database stand-in: every committed event, and how often it was
    /// read.
    #[derive(Default)]
    struct Log {
        events: Mutex<Vec<ChannelEvent>>,
        reads: AtomicUsize,
        /// The full user lists of truncated batches, as `member_batches`.
        batches: Mutex<HashMap<(ChannelId, Seq), Vec<UserId>>>,
        batch_reads: AtomicUsize,
    }

    impl Log {
        fn with(events: impl IntoIterator<Item = ChannelEvent>) -> Arc<Log> {
            let log = Arc::new(Log::default());
            log.commit(events);
            log
        }

        fn commit(&self, events: impl IntoIterator<Item = ChannelEvent>) {
            for mut event in events {
                // Stored as the database stores it: a batch too large to
                // list keeps its users aside.
                let (channel, seq) = (event.channel_id, event.seq);
                if let Some(batch) = event.payload.member_batch_mut()
                    && batch.truncated
                {
                    let users = std::mem::take(&mut batch.affected);
                    self.batches.lock().unwrap().insert((channel, seq), users);
                }
                self.events.lock().unwrap().push(event);
            }
        }

        fn reads(&self) -> usize {
            self.reads.load(Ordering::SeqCst)
        }
    }

    impl Backfill for Log {
        fn events_after(
            &self,
            channel: ChannelId,
            after: Seq,
            limit: u32,
        ) -> BoxFuture<'_, clacks_core::Result<Vec<ChannelEvent>>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let events: Vec<_> = self
                .events
                .lock()
                .unwrap()
                .iter()
                .filter(|e| e.channel_id == channel && e.seq > after)
                .take(limit as usize)
                .cloned()
                .collect();
            Box::pin(async move { Ok(events) })
        }

        fn batch_users(
            &self,
            channel: ChannelId,
            seq: Seq,
            only: Option<UserId>,
        ) -> BoxFuture<'_, clacks_core::Result<Vec<UserId>>> {
            self.batch_reads.fetch_add(1, Ordering::SeqCst);
            let users: Vec<UserId> = self
                .batches
                .lock()
                .unwrap()
                .get(&(channel, seq))
                .into_iter()
                .flatten()
                .filter(|u| only.as_ref().is_none_or(|only| only == *u))
                .cloned()
                .collect();
            Box::pin(async move { Ok(users) })
        }

        fn last_seq(&self, channel: ChannelId) -> BoxFuture<'_, clacks_core::Result<Seq>> {
            let last = self
                .events
                .lock()
                .unwrap()
                .iter()
                .filter(|e| e.channel_id == channel)
                .map(|e| e.seq)
                .max()
                .unwrap_or(0);
            Box::pin(async move { Ok(last) })
        }
    }

    fn hub_with(log: &Arc<Log>, settings: HubSettings) -> Arc<Hub> {
        Hub::new(settings, log.clone())
    }

    fn small_hub(queue_capacity: usize) -> (Arc<Hub>, Arc<Log>) {
        let log = Arc::new(Log::default());
        let hub = hub_with(
            &log,
            HubSettings {
                queue_capacity,
                ..HubSettings::default()
            },
        );
        (hub, log)
    }

    #[tokio::test]
    async fn routes_by_channel() {
        let (hub, _log) = small_hub(16);
        let mut one = hub.subscribe(user("a"), Interest::Channel(ChannelId(1)));
        let mut two = hub.subscribe(user("b"), Interest::Channel(ChannelId(2)));
        hub.set_baseline(ChannelId(1), 0);
        hub.set_baseline(ChannelId(2), 0);
        hub.publish(message(1, 1));
        hub.publish(message(2, 1));
        hub.publish(message(1, 2));
        assert_eq!(seq_of(one.next().await.unwrap()), 1);
        assert_eq!(seq_of(one.next().await.unwrap()), 2);
        assert_eq!(seq_of(two.next().await.unwrap()), 1);
        assert_eq!(hub.last_seq(ChannelId(1)), 2);
        drop(one);
        drop(two);
        assert_eq!(hub.stats(), HubStats::default(), "dropping unregisters");
    }

    #[tokio::test]
    async fn reorders_and_drops_duplicates() {
        let (hub, _log) = small_hub(16);
        let mut sub = hub.subscribe(user("a"), Interest::Channel(ChannelId(1)));
        hub.set_baseline(ChannelId(1), 3);
        hub.publish(message(1, 3)); // history: dropped
        hub.publish(message(1, 5)); // early: waits for 4
        hub.publish(message(1, 4));
        hub.publish(message(1, 4)); // duplicate
        hub.publish(message(1, 6));
        for expected in 4..=6 {
            assert_eq!(seq_of(sub.next().await.unwrap()), expected);
        }
        assert_eq!(hub.stats().pending_events, 0);
    }

    #[tokio::test]
    async fn fills_gaps_and_baselines_from_the_database() {
        let log = Log::with((1..=10).map(|s| message(1, s)));
        let hub = hub_with(
            &log,
            HubSettings {
                gap_timeout: Duration::from_millis(10),
                ..HubSettings::default()
            },
        );
        // No baseline given and nothing arrived: the hub asks the database.
        let mut sub = hub.subscribe(user("a"), Interest::Channel(ChannelId(1)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(hub.last_seq(ChannelId(1)), 10);
        // 11 and 12 were committed, but only 13 reaches this node.
        log.commit([message(1, 11), message(1, 12), message(1, 13)]);
        hub.publish(message(1, 13));
        for expected in 11..=13 {
            assert_eq!(seq_of(next_within(&mut sub).await.unwrap()), expected);
        }
    }

    #[tokio::test]
    async fn catch_up_reads_a_silent_tail() {
        let log = Log::with((1..=3).map(|s| message(1, s)));
        let hub = hub_with(&log, HubSettings::default());
        let mut sub = hub.subscribe(user("a"), Interest::Channel(ChannelId(1)));
        hub.set_baseline(ChannelId(1), 3);
        // 4 and 5 were committed elsewhere and their NATS messages lost;
        // nothing later reveals the gap.
        log.commit([message(1, 4), message(1, 5)]);
        hub.catch_up_all();
        for expected in 4..=5 {
            assert_eq!(seq_of(next_within(&mut sub).await.unwrap()), expected);
        }
    }

    #[tokio::test]
    async fn an_announced_tail_is_filled_without_a_later_event() {
        let log = Log::with((1..=3).map(|s| message(1, s)));
        let hub = hub_with(
            &log,
            HubSettings {
                gap_timeout: Duration::from_millis(10),
                ..HubSettings::default()
            },
        );
        let mut sub = hub.subscribe(user("a"), Interest::Channel(ChannelId(1)));
        hub.set_baseline(ChannelId(1), 3);
        // Seqs this node has: nothing to read.
        hub.announced(&[(ChannelId(1), 3), (ChannelId(9), 50)]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            log.reads(),
            0,
            "an announcement this node has reached reads nothing"
        );
        // Another node committed 4 and its publish was lost; it says so.
        log.commit([message(1, 4)]);
        hub.announced(&[(ChannelId(1), 4)]);
        assert_eq!(seq_of(next_within(&mut sub).await.unwrap()), 4);
        assert_eq!(log.reads(), 1);
    }

    /// A burst of live events larger than a subscriber's queue (a node's
    /// publishes held during a NATS outage arrive at once) does not end
    /// it: it reads the rest of the burst itself, then goes live again.
    #[tokio::test]
    async fn a_live_burst_past_the_queue_is_read_at_the_subscribers_pace() {
        let (hub, log) = small_hub(4);
        let mut reader = hub.subscribe(user("reader"), Interest::Channel(ChannelId(1)));
        let mut fast = hub.subscribe(user("fast"), Interest::Channel(ChannelId(1)));
        hub.set_baseline(ChannelId(1), 0);
        for seq in 1..=10 {
            log.commit([message(1, seq)]);
            hub.publish(message(1, seq));
            assert_eq!(seq_of(fast.next().await.unwrap()), seq);
        }
        for seq in 1..=10 {
            assert_eq!(seq_of(next_within(&mut reader).await.unwrap()), seq);
        }
        log.commit([message(1, 11)]);
        hub.publish(message(1, 11));
        assert_eq!(seq_of(next_within(&mut reader).await.unwrap()), 11);
        // Asking for more, with nothing left to read, puts it back live.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), reader.next())
                .await
                .is_err()
        );
        assert_eq!(hub.stats().behind, 0, "live again");
        assert_eq!(hub.stats().subscriptions, 2);
    }

    /// A subscriber still behind `catch_up_within` after live events
    /// overflowed its queue is too slow for the channel: it is ended with
    /// an overflow after what it holds, and no one else is.
    #[tokio::test]
    async fn a_subscriber_that_does_not_catch_up_is_ended_alone() {
        let log = Arc::new(Log::default());
        let hub = hub_with(
            &log,
            HubSettings {
                queue_capacity: 4,
                catch_up_within: Duration::from_millis(50),
                ..HubSettings::default()
            },
        );
        let mut slow = hub.subscribe(user("slow"), Interest::Channel(ChannelId(1)));
        let mut fast = hub.subscribe(user("fast"), Interest::Channel(ChannelId(1)));
        hub.set_baseline(ChannelId(1), 0);
        for seq in 1..=10 {
            log.commit([message(1, seq)]);
            hub.publish(message(1, seq));
            assert_eq!(seq_of(fast.next().await.unwrap()), seq);
        }
        assert_eq!(hub.stats().subscriptions, 2, "behind, not ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
        log.commit([message(1, 11)]);
        hub.publish(message(1, 11));
        assert_eq!(seq_of(fast.next().await.unwrap()), 11);
        assert_eq!(hub.stats().subscriptions, 1);
        let mut seqs = Vec::new();
        let end = loop {
            match next_within(&mut slow).await {
                Some(Delivery::Event(event)) => seqs.push(event.seq),
                other => break other,
            }
        };
        assert_eq!(seqs, vec![1, 2, 3, 4], "what its queue held");
        assert!(matches!(end, Some(Delivery::End(EndReason::Overflow))));
        assert!(slow.next().await.is_none());
    }

    /// A resume thousands of events behind: read a page at a time as the
    /// consumer asks, while live events keep coming and the queue is tiny,
    /// then live, every event exactly once and in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_resume_reads_pages_at_the_consumers_pace_then_goes_live() {
        const STORED: Seq = 5_000;
        const LIVE: Seq = 300;
        let log = Log::with((1..=STORED).map(|s| message(1, s)));
        let hub = hub_with(
            &log,
            HubSettings {
                queue_capacity: 8,
                page_size: 100,
                tail_capacity: 64,
                ..HubSettings::default()
            },
        );
        let mut sub = hub.subscribe(user("a"), Interest::Channel(ChannelId(1)));
        hub.set_baseline(ChannelId(1), STORED);
        assert_eq!(hub.resume(&mut sub, ChannelId(1), 0), Some(STORED as u64));
        let writer = {
            let (hub, log) = (hub.clone(), log.clone());
            tokio::spawn(async move {
                for seq in STORED + 1..=STORED + LIVE {
                    log.commit([message(1, seq)]);
                    hub.publish(message(1, seq));
                    tokio::time::sleep(Duration::from_micros(300)).await;
                }
            })
        };
        let mut got = Vec::new();
        while got.last().copied().unwrap_or(0) < STORED + LIVE {
            got.push(seq_of(next_within(&mut sub).await.unwrap()));
            if got.len() % 97 == 0 {
                // A consumer slower than the writer now and then.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        writer.await.unwrap();
        assert_eq!(got, (1..=STORED + LIVE).collect::<Vec<_>>());
        let stats = sub.replay_stats();
        assert!(stats.replayed >= STORED as u64, "{stats:?}");
        assert!(
            stats.largest_buffer <= 100,
            "never more than a page: {stats:?}"
        );
        assert_eq!(hub.stats().behind, 0, "caught up and live");
        // Live from here on: queued by the hub.
        log.commit([message(1, STORED + LIVE + 1)]);
        hub.publish(message(1, STORED + LIVE + 1));
        assert_eq!(
            seq_of(next_within(&mut sub).await.unwrap()),
            STORED + LIVE + 1
        );
    }

    /// A client that resumes with a seq this node has not sequenced yet
    /// (it saw it through another node) gets nothing twice.
    #[tokio::test]
    async fn a_resume_ahead_of_the_node_waits_for_it() {
        let log = Log::with((1..=7).map(|s| message(1, s)));
        let hub = hub_with(&log, HubSettings::default());
        let mut sub = hub.subscribe(user("a"), Interest::Channel(ChannelId(1)));
        hub.set_baseline(ChannelId(1), 5);
        assert_eq!(hub.resume(&mut sub, ChannelId(1), 7), Some(0));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), sub.next())
                .await
                .is_err()
        );
        for seq in 6..=8 {
            hub.publish(message(1, seq));
        }
        assert_eq!(seq_of(next_within(&mut sub).await.unwrap()), 8);
    }

    /// A gap filled from the database after NATS lost thousands of events:
    /// read once for the channel, shared by every subscriber through the
    /// tail, and none of them is closed for a backlog the server created.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backlog_is_read_once_and_at_each_subscribers_pace() {
        const LOST: Seq = 3_000;
        let log = Log::with((1..=3).map(|s| message(1, s)));
        let hub = hub_with(
            &log,
            HubSettings {
                queue_capacity: 64,
                page_size: 50,
                ..HubSettings::default()
            },
        );
        let mut subs: Vec<Subscription> = (0..10)
            .map(|i| hub.subscribe(user(&format!("u{i}")), Interest::Channel(ChannelId(1))))
            .collect();
        hub.set_baseline(ChannelId(1), 3);
        log.commit((4..4 + LOST).map(|s| message(1, s)));
        hub.catch_up_all();
        let readers: Vec<_> = subs
            .drain(..)
            .enumerate()
            .map(|(i, mut sub)| {
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    while got.last().copied().unwrap_or(0) < 3 + LOST {
                        got.push(seq_of(next_within(&mut sub).await.unwrap()));
                        if i == 0 && got.len() % 10 == 0 {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                    (got, sub.replay_stats())
                })
            })
            .collect();
        for reader in readers {
            let (got, stats) = reader.await.unwrap();
            assert_eq!(got, (4..4 + LOST).collect::<Vec<_>>());
            assert!(stats.largest_buffer <= 50, "{stats:?}");
        }
        assert_eq!(
            log.reads(),
            1,
            "one read for the channel, none per subscriber"
        );
        assert_eq!(hub.stats().behind, 0);
        assert_eq!(
            hub.stats().tail_events,
            0,
            "the tail goes once nobody needs it"
        );
    }

    /// Events that reach the hub late (a node's publishes queued up while
    /// NATS was down, then flushed at once) are the server's backlog too.
    #[tokio::test]
    async fn a_burst_of_late_events_does_not_overflow_a_subscriber() {
        let log = Arc::new(Log::default());
        let hub = hub_with(
            &log,
            HubSettings {
                queue_capacity: 8,
                ..HubSettings::default()
            },
        );
        let mut sub = hub.subscribe(user("a"), Interest::Channel(ChannelId(1)));
        hub.set_baseline(ChannelId(1), 0);
        let late: Vec<ChannelEvent> = (1..=200)
            .map(|seq| ChannelEvent {
                at: clacks_core::now_ms() - 3_000,
                ..message(1, seq)
            })
            .collect();
        log.commit(late.clone());
        for event in late {
            hub.publish(event);
        }
        for expected in 1..=200 {
            assert_eq!(seq_of(next_within(&mut sub).await.unwrap()), expected);
        }
        assert_eq!(log.reads(), 0, "read from the shared tail");
    }

    /// A batch of `count` users `u0..`, plus `extra`, too large to list.
    fn batch(count: usize, extra: &[&str]) -> clacks_core::MemberBatch {
        let mut users: Vec<UserId> = (0..count).map(|n| user(&format!("u{n}"))).collect();
        users.extend(extra.iter().map(|who| user(who)));
        let batch = clacks_core::MemberBatch::of(users);
        assert!(batch.truncated);
        batch
    }

    #[tokio::test]
    async fn batches_follow_joins_and_leaves_live() {
        let (hub, log) = small_hub(16);
        let mut all = hub.subscribe(user("a"), Interest::AllChannels(vec![]));
        let mut single = hub.subscribe(user("b"), Interest::Channel(ChannelId(1)));
        hub.set_baseline(ChannelId(1), 0);
        let joins = EventPayload::MembersJoined {
            batch: batch(500, &["a"]),
            role: Role::member(),
        };
        hub.publish(event(1, 1, joins));
        hub.publish(message(1, 2));
        assert_eq!(seq_of(all.next().await.unwrap()), 1, "the batched join");
        assert_eq!(seq_of(all.next().await.unwrap()), 2);
        assert_eq!(seq_of(single.next().await.unwrap()), 1);
        assert_eq!(seq_of(single.next().await.unwrap()), 2);
        let leaves = EventPayload::MembersLeft {
            batch: batch(500, &["a", "b"]),
        };
        hub.publish(event(1, 3, leaves));
        hub.publish(message(1, 4));
        assert_eq!(seq_of(single.next().await.unwrap()), 3);
        assert!(matches!(
            single.next().await,
            Some(Delivery::End(EndReason::Removed))
        ));
        assert_eq!(seq_of(all.next().await.unwrap()), 3);
        hub.publish(message(2, 1));
        assert!(
            tokio::time::timeout(Duration::from_millis(100), all.next())
                .await
                .is_err(),
            "nothing after the batched leave"
        );
        assert_eq!(log.batch_reads.load(Ordering::SeqCst), 0, "known live");
    }

    #[tokio::test]
    async fn a_batch_read_back_from_the_database_is_completed_before_it_is_applied() {
        let log = Arc::new(Log::default());
        let hub = hub_with(&log, HubSettings::default());
        let mut single = hub.subscribe(user("b"), Interest::Channel(ChannelId(1)));
        hub.set_baseline(ChannelId(1), 0);
        let leaves = EventPayload::MembersLeft {
            batch: batch(300, &["b"]),
        };
        log.commit([event(1, 1, leaves), message(1, 2)]);
        // Seq 1 was lost on the way: seq 2 reveals the gap, the database
        // fills it without the users, and the hub looks them up.
        hub.publish(message(1, 2));
        assert_eq!(seq_of(next_within(&mut single).await.unwrap()), 1);
        assert!(matches!(
            next_within(&mut single).await,
            Some(Delivery::End(EndReason::Removed))
        ));
        assert_eq!(log.batch_reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_remote_batch_is_completed_only_where_it_could_concern_someone() {
        let log = Arc::new(Log::default());
        let hub = hub_with(&log, HubSettings::default());
        let joins = EventPayload::MembersJoined {
            batch: batch(300, &["a"]),
            role: Role::member(),
        };
        log.commit([event(1, 1, joins)]);
        let stored = log.events.lock().unwrap()[0].clone();
        hub.publish_remote(stored.clone()).await;
        assert_eq!(log.batch_reads.load(Ordering::SeqCst), 0, "nobody here");
        let mut all = hub.subscribe(user("a"), Interest::AllChannels(vec![]));
        let mut stored = stored;
        stored.seq = 1;
        hub.publish_remote(stored).await;
        assert_eq!(log.batch_reads.load(Ordering::SeqCst), 1);
        assert_eq!(seq_of(next_within(&mut all).await.unwrap()), 1, "a joined");
    }

    #[tokio::test]
    async fn a_subscriber_reading_a_batch_back_checks_only_itself() {
        let log = Arc::new(Log::default());
        // A tail of one: what the subscriber reads comes from the database.
        let hub = hub_with(
            &log,
            HubSettings {
                tail_capacity: 1,
                ..HubSettings::default()
            },
        );
        let mut single = hub.subscribe(user("b"), Interest::Channel(ChannelId(1)));
        hub.set_baseline(ChannelId(1), 0);
        hub.resume(&mut single, ChannelId(1), 0);
        let leaves = event(
            1,
            2,
            EventPayload::MembersLeft {
                batch: batch(300, &["b"]),
            },
        );
        let events = [message(1, 1), leaves, message(1, 3)];
        log.commit(events.clone());
        for event in events {
            hub.publish(event);
        }
        assert_eq!(seq_of(next_within(&mut single).await.unwrap()), 1);
        assert_eq!(seq_of(next_within(&mut single).await.unwrap()), 2);
        assert!(matches!(
            next_within(&mut single).await,
            Some(Delivery::End(EndReason::Removed))
        ));
        assert_eq!(log.batch_reads.load(Ordering::SeqCst), 1, "one point read");
    }

    #[tokio::test]
    async fn membership_follows_joins_and_leaves() {
        let (hub, _log) = small_hub(16);
        let mut all = hub.subscribe(user("a"), Interest::AllChannels(vec![ChannelId(1)]));
        let mut single = hub.subscribe(user("a"), Interest::Channel(ChannelId(1)));
        hub.set_baseline(ChannelId(1), 0);
        hub.publish(message(2, 1));
        hub.publish(joined(2, 2, "a"));
        hub.publish(message(2, 3));
        assert_eq!(seq_of(all.next().await.unwrap()), 2, "the join itself");
        assert_eq!(seq_of(all.next().await.unwrap()), 3);

        hub.publish(left(1, 1, "a"));
        hub.publish(message(1, 2));
        assert_eq!(
            seq_of(single.next().await.unwrap()),
            1,
            "the leave is delivered"
        );
        assert!(matches!(
            single.next().await,
            Some(Delivery::End(EndReason::Removed))
        ));
        assert_eq!(
            seq_of(all.next().await.unwrap()),
            1,
            "the all stream sees the leave"
        );
        hub.publish(message(2, 4));
        assert_eq!(
            seq_of(all.next().await.unwrap()),
            4,
            "and nothing more of channel 1"
        );
    }

    /// An all-channels subscription reads its channel list after it
    /// registers. A leave that arrives in between, later than the list,
    /// keeps that channel out; an earlier one (the list already reflects
    /// it, the user rejoined) does not.
    #[tokio::test]
    async fn a_leave_while_the_channel_list_is_read_is_not_missed() {
        let (hub, _log) = small_hub(16);
        // Another subscriber keeps channel 1 sequenced.
        let _other = hub.subscribe(user("b"), Interest::Channel(ChannelId(1)));
        hub.set_baseline(ChannelId(1), 4);
        let mut all = hub.subscribe(user("a"), Interest::AllChannels(Vec::new()));
        // The list is read: channel 1 at seq 4, channel 2 at seq 7; then a
        // leaves channel 1 (seq 5), and an old leave of channel 2 (seq 6,
        // before a rejoin the list saw) is published late.
        hub.publish(event(1, 5, EventPayload::MemberLeft { user_id: user("a") }));
        hub.publish(event(2, 6, EventPayload::MemberLeft { user_id: user("a") }));
        let unbased = hub.add_channels(&all, &[(ChannelId(1), 4), (ChannelId(2), 7)]);
        assert_eq!(unbased, vec![ChannelId(2)], "channel 1 has its baseline");
        hub.set_baseline(ChannelId(2), 7);
        hub.publish(message(1, 6));
        hub.publish(message(2, 8));
        assert_eq!(
            seq_of(all.next().await.unwrap()),
            8,
            "channel 2 is followed, channel 1 is not"
        );
        assert_eq!(hub.stats().subscriptions, 2);
    }

    /// An event committed after an all-channels subscription read its
    /// channel list, and published before the list was routed, finds no
    /// route and is dropped. The channel comes back without a baseline; its
    /// baseline stays the listed seq (the membership the list reflects)
    /// and, its seq read again after routing being newer, what lies
    /// between is read back and delivered.
    #[tokio::test]
    async fn an_event_between_the_channel_list_and_its_routing_is_replayed() {
        let log = Log::with([]);
        let hub = hub_with(&log, HubSettings::default());
        let mut all = hub.subscribe(user("a"), Interest::AllChannels(Vec::new()));
        // The list says channel 1 is at seq 0; then seq 1 commits and is
        // published before the list is routed.
        log.commit([message(1, 1)]);
        hub.publish(message(1, 1));
        let unbased = hub.add_channels(&all, &[(ChannelId(1), 0)]);
        assert_eq!(unbased, vec![ChannelId(1)]);
        hub.set_baseline(ChannelId(1), 0);
        hub.committed_since_listing(&[(ChannelId(1), 1)]);
        assert_eq!(hub.resume(&mut all, ChannelId(1), 0), Some(0));
        assert_eq!(seq_of(next_within(&mut all).await.unwrap()), 1);
        hub.publish(message(1, 2));
        assert_eq!(seq_of(next_within(&mut all).await.unwrap()), 2);
    }

    /// Membership changes read back by a subscription behind apply at
    /// their seq, as they would live: history before the resume is
    /// replayed as it is, a later removal ends a single-channel stream
    /// after the leave, and an all-channels stream skips what happened
    /// while the user was away.
    #[tokio::test]
    async fn membership_changes_apply_at_their_seq_while_behind() {
        let history = [
            message(1, 1),
            left(1, 2, "a"),
            joined(1, 3, "a"),
            message(1, 4),
        ];
        let log = Log::with(history);
        let hub = hub_with(&log, HubSettings::default());
        let mut single = hub.subscribe(user("a"), Interest::Channel(ChannelId(1)));
        let mut all = hub.subscribe(user("a"), Interest::AllChannels(vec![ChannelId(1)]));
        hub.set_baseline(ChannelId(1), 4);
        assert_eq!(hub.resume(&mut single, ChannelId(1), 0), Some(4));
        assert_eq!(hub.resume(&mut all, ChannelId(1), 0), Some(4));
        // While both are behind, the user leaves, and comes back.
        let later = [
            message(1, 5),
            left(1, 6, "a"),
            message(1, 7),
            joined(1, 8, "a"),
            message(1, 9),
        ];
        log.commit(later.clone());
        for event in later {
            hub.publish(event);
        }
        let mut seen = Vec::new();
        loop {
            match next_within(&mut single).await.unwrap() {
                Delivery::Event(event) => seen.push(event.seq),
                Delivery::End(reason) => {
                    assert_eq!(reason, EndReason::Removed);
                    break;
                }
            }
        }
        assert_eq!(seen, vec![1, 2, 3, 4, 5, 6], "ends after its removal");
        assert!(single.next().await.is_none());
        let mut seen = Vec::new();
        while seen.last().copied().unwrap_or(0) < 9 {
            seen.push(seq_of(next_within(&mut all).await.unwrap()));
        }
        assert_eq!(seen, vec![1, 2, 3, 4, 5, 6, 8, 9], "nothing while away");
        // Live again, and still following the channel.
        hub.publish(message(1, 10));
        assert_eq!(seq_of(next_within(&mut all).await.unwrap()), 10);
    }

    /// A channel deleted while a subscription reads it: nothing after the
    /// deletion, and the single-channel stream ends.
    #[tokio::test]
    async fn a_deletion_ends_a_subscription_behind() {
        let log = Log::with((1..=1_000).map(|s| message(1, s)));
        let hub = hub_with(
            &log,
            HubSettings {
                page_size: 10,
                ..HubSettings::default()
            },
        );
        let mut sub = hub.subscribe(user("a"), Interest::Channel(ChannelId(1)));
        hub.set_baseline(ChannelId(1), 1_000);
        hub.resume(&mut sub, ChannelId(1), 0).unwrap();
        for seq in 1..=5 {
            assert_eq!(seq_of(next_within(&mut sub).await.unwrap()), seq);
        }
        let mut deleted = event(1, 1_000, EventPayload::ChannelDeleted);
        deleted.durable = false;
        hub.publish(deleted);
        let mut last = 5;
        loop {
            match next_within(&mut sub).await.unwrap() {
                Delivery::Event(event) if matches!(event.payload, EventPayload::ChannelDeleted) => {
                }
                Delivery::Event(event) => {
                    assert_eq!(
                        event.seq,
                        last + 1,
                        "the rest of the page in hand, in order"
                    );
                    last = event.seq;
                }
                Delivery::End(reason) => {
                    assert_eq!(reason, EndReason::ChannelDeleted);
                    break;
                }
            }
        }
        assert!(
            last <= 10,
            "nothing read after the deletion (got to {last})"
        );
        assert_eq!(hub.stats(), HubStats::default());
    }

    /// With interest-based routing, the hub asks for a channel's subject
    /// while someone follows it, and for the user subject of an
    /// all-channels subscription. A join received on the user's subject
    /// for a channel nobody here followed: the events after it, published
    /// before this node's interest was live, are read back once it is.
    #[tokio::test]
    async fn a_join_to_an_unfollowed_channel_is_followed_from_the_join_on() {
        let log = Log::with([message(2, 1), joined(2, 2, "a")]);
        let hub = hub_with(&log, HubSettings::default());
        let routing = hub.routing().clone();
        routing.enable();
        let mut all = hub.subscribe(user("a"), Interest::AllChannels(Vec::new()));
        let single = hub.subscribe(user("b"), Interest::Channel(ChannelId(1)));
        let (wants, _) = routing.take();
        assert_eq!(wants.get(&Topic::User(user("a"))), Some(&true));
        assert_eq!(wants.get(&Topic::Channel(ChannelId(1))), Some(&true));
        assert_eq!(wants.len(), 2);
        drop(single);
        assert_eq!(
            routing.take().0.get(&Topic::Channel(ChannelId(1))),
            Some(&false),
            "the last subscriber left"
        );

        // Committed after the join, never received: NATS had no interest.
        log.commit([message(2, 3), message(2, 4)]);
        hub.publish(joined(2, 2, "a"));
        assert_eq!(
            routing.take().0.get(&Topic::Channel(ChannelId(2))),
            Some(&true)
        );
        // Not connected: nothing to wait for, the database has the rest.
        for expected in 2..=4 {
            assert_eq!(seq_of(next_within(&mut all).await.unwrap()), expected);
        }
        hub.publish(message(2, 5));
        assert_eq!(seq_of(next_within(&mut all).await.unwrap()), 5);
        drop(all);
        let (wants, _) = routing.take();
        assert_eq!(wants.get(&Topic::User(user("a"))), Some(&false));
        assert_eq!(wants.get(&Topic::Channel(ChannelId(2))), Some(&false));
    }

    /// A channel's creation reaches a node following both the channel and
    /// a member's user subject twice; it is delivered once.
    #[tokio::test]
    async fn a_creation_join_received_twice_is_delivered_once() {
        let (hub, _log) = small_hub(16);
        let mut all = hub.subscribe(user("a"), Interest::AllChannels(Vec::new()));
        let mut created = joined(3, 0, "a");
        created.durable = false;
        hub.publish(created.clone());
        hub.publish(created);
        assert_eq!(seq_of(next_within(&mut all).await.unwrap()), 0);
        hub.publish(message(3, 1));
        assert_eq!(seq_of(next_within(&mut all).await.unwrap()), 1);
    }

    /// Joins and leaves come twice (the channel's subject and the user's,
    /// relayed by separate tasks): a late copy of a join the node already
    /// handled, arriving after the leave that followed it emptied the
    /// channel's entry, must not enter it again.
    #[tokio::test]
    async fn a_late_copy_of_a_handled_join_does_not_enter_the_channel_again() {
        let (hub, _log) = small_hub(16);
        let mut all = hub.subscribe(user("a"), Interest::AllChannels(Vec::new()));
        for event in [
            joined(3, 10, "a"),
            left(3, 11, "a"),
            joined(3, 12, "a"),
            left(3, 13, "a"),
        ] {
            hub.publish(event);
        }
        for seq in 10..=13 {
            assert_eq!(seq_of(next_within(&mut all).await.unwrap()), seq);
        }
        // The other subject's copies, late.
        hub.publish(joined(3, 12, "a"));
        hub.publish(left(3, 13, "a"));
        hub.publish(message(3, 14));
        assert!(
            tokio::time::timeout(Duration::from_millis(300), all.next())
                .await
                .is_err(),
            "nothing more for a non-member"
        );
        // A new join past what was handled enters again.
        hub.publish(joined(3, 15, "a"));
        assert_eq!(seq_of(next_within(&mut all).await.unwrap()), 15);
        hub.publish(message(3, 16));
        assert_eq!(seq_of(next_within(&mut all).await.unwrap()), 16);
    }

    #[tokio::test]
    async fn a_resume_needs_a_followed_channel() {
        let (hub, _log) = small_hub(16);
        let mut sub = hub.subscribe(user("a"), Interest::Channel(ChannelId(1)));
        assert_eq!(hub.resume(&mut sub, ChannelId(2), 0), None);
    }
}
