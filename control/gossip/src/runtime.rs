//! The runtime loop that drives foca: one task owns the foca instance and the
//! UDP socket, feeds it packets, timers and commands, sends what it produces
//! and turns its notifications into member-table changes, the local health
//! score (`awareness`) and TCP pings of members whose probe failed (`ping`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU8, NonZeroUsize};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use foca::{
    AccumulatingRuntime, Foca, Incarnation, OwnedNotification, PostcardCodec, State, Timer,
};
use foca_rand::rngs::StdRng;
use foca_rand::SeedableRng;
use rand::RngCore;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::awareness::{Health, MAX_MULTIPLIER};
use crate::broadcast::{Inbox, IntentHandler};
use crate::config::GossipConfig;
use crate::crypto::{Keyring, OVERHEAD};
use crate::error::GossipError;
use crate::identity::NodeId;
use crate::members::{MemberEvent, MemberStatus, Table};
use crate::wire::{Intent, MemberState, Request, Response, UDP_FOCA, UDP_INTENT};

type Swim = Foca<NodeId, PostcardCodec, StdRng, IntentHandler>;

/// Largest UDP datagram this node sends.
pub(crate) const MAX_UDP: usize = 1400;

/// What the handle and the TCP server ask of the loop.
pub(crate) enum Command {
    /// Merge a peer's push-pull state.
    Merge {
        states: Vec<MemberState>,
        reply: oneshot::Sender<()>,
    },
    /// Replace the local tags and announce them.
    SetTags {
        tags: BTreeMap<String, String>,
        reply: oneshot::Sender<()>,
    },
    /// Leave gracefully, then stop.
    Leave { reply: oneshot::Sender<()> },
    /// Turn a failed member Left everywhere.
    ForceLeave {
        name: String,
        reply: oneshot::Sender<Result<(), GossipError>>,
    },
    /// A TCP ping says `target` is suspected at `incarnation`; reply with
    /// this node's alive state (after refuting, if `target` is this node),
    /// or why not.
    Ping {
        target: NodeId,
        incarnation: Incarnation,
        reply: oneshot::Sender<Result<(NodeId, Incarnation), String>>,
    },
    /// A member answered our TCP ping: it is alive as `id` at
    /// `incarnation`.
    Alive {
        id: NodeId,
        incarnation: Incarnation,
    },
}

/// State shared by the handle, the loop and the TCP server.
pub(crate) struct Shared {
    pub(crate) cfg: GossipConfig,
    pub(crate) local_addr: SocketAddr,
    table: Mutex<Table>,
    keyring: RwLock<Keyring>,
    events: broadcast::Sender<MemberEvent>,
    changes: watch::Sender<u64>,
    cmd: mpsc::Sender<Command>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The loop's health score, for [`crate::Gossip::health_score`].
    health_score: AtomicU32,
    /// Fault injection for tests: drop every UDP packet received.
    #[cfg(test)]
    pub(crate) drop_inbound_udp: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub(crate) fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn keyring(&self) -> RwLockReadGuard<'_, Keyring> {
        self.keyring.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn keyring_mut(&self) -> RwLockWriteGuard<'_, Keyring> {
        self.keyring.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn stopped(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    pub(crate) fn is_stopped(&self) -> bool {
        *self.stop.borrow()
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<MemberEvent> {
        self.events.subscribe()
    }

    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub(crate) fn health_score(&self) -> u32 {
        self.health_score.load(Ordering::Relaxed)
    }

    /// Sends a command to the loop; fails once the loop has stopped.
    pub(crate) async fn send(&self, cmd: Command) -> Result<(), GossipError> {
        if self.is_stopped() {
            return Err(GossipError::Shutdown);
        }
        self.cmd.send(cmd).await.map_err(|_| GossipError::Shutdown)
    }

    /// Asks everything to stop and waits for the loop and the listener.
    pub(crate) async fn shutdown(&self) {
        self.stop.send_replace(true);
        let tasks: Vec<_> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
    }

    pub(crate) fn request_stop(&self) {
        self.stop.send_replace(true);
    }

    fn publish(&self, events: Vec<MemberEvent>) {
        if events.is_empty() {
            return;
        }
        for e in events {
            tracing::debug!(member = %e.member.name, kind = ?e.kind, status = %e.member.status, "member event");
            let _ = self.events.send(e);
        }
        self.changes.send_modify(|v| *v += 1);
    }
}

async fn bind(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), GossipError> {
    let mut attempt = 0;
    loop {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|source| GossipError::Bind { addr, source })?;
        let port = udp.local_addr()?.port();
        let tcp_addr = SocketAddr::new(addr.ip(), port);
        match TcpListener::bind(tcp_addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(_) if addr.port() == 0 && attempt < 20 => attempt += 1,
            Err(source) => {
                return Err(GossipError::Bind {
                    addr: tcp_addr,
                    source,
                });
            }
        }
    }
}

fn foca_config(cfg: &GossipConfig) -> foca::Config {
    let mut c = foca::Config::new_lan(NonZeroU32::MIN);
    c.probe_period = cfg.probe_interval;
    c.probe_rtt = cfg.probe_timeout;
    c.suspect_to_down_after = cfg.suspicion_timeout(1);
    c.max_transmissions = NonZeroU8::new(10).unwrap_or(NonZeroU8::MIN);
    c.max_packet_size = NonZeroUsize::new(MAX_UDP - OVERHEAD - 1).unwrap_or(NonZeroUsize::MIN);
    // foca must remember a dead identity at least as long as the member table
    // does, or stale gossip could bring it back to life.
    let remember = c.remove_down_after.unwrap_or_default().max(cfg.reap_after);
    c.remove_down_after = Some(remember);
    if let Some(g) = c.periodic_gossip.as_mut() {
        g.frequency = cfg.gossip_interval;
    }
    c
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Binds the gossip port and starts the loop and the TCP server.
pub(crate) async fn start(cfg: GossipConfig) -> Result<Arc<Shared>, GossipError> {
    cfg.validate()?;
    let keyring = Keyring::new(&cfg.keys)?;
    let (udp, tcp) = bind(cfg.bind).await?;
    let local_addr = udp.local_addr()?;
    let advertise = match cfg.advertise {
        Some(a) if a.port() == 0 => SocketAddr::new(a.ip(), local_addr.port()),
        Some(a) => a,
        None if local_addr.ip().is_unspecified() => {
            return Err(GossipError::Config {
                field: "advertise",
                reason: format!(
                    "bound to {local_addr}, which other members cannot reach; set an advertise address"
                ),
            });
        }
        None => local_addr,
    };
    let id = NodeId::new(cfg.node_name.clone(), advertise);
    let table = Table::new(id.clone(), cfg.tags.clone());

    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (stop, _) = watch::channel(false);
    let (events, _) = broadcast::channel(1024);
    let (changes, _) = watch::channel(0);
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        local_addr,
        table: Mutex::new(table),
        keyring: RwLock::new(keyring),
        events,
        changes,
        cmd: cmd_tx,
        stop,
        tasks: Mutex::new(Vec::new()),
        health_score: AtomicU32::new(0),
        #[cfg(test)]
        drop_inbound_udp: Default::default(),
    });

    let handler = IntentHandler::default();
    let inbox = handler.inbox.clone();
    let mut seed = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut seed);
    let foca_cfg = foca_config(&cfg);
    let foca = Foca::with_custom_broadcast(
        id,
        foca_cfg.clone(),
        StdRng::from_seed(seed),
        PostcardCodec,
        handler,
    );
    let (timers, timer_rx) = mpsc::unbounded_channel();
    let mut lp = Loop {
        shared: shared.clone(),
        foca,
        rt: AccumulatingRuntime::new(),
        foca_cfg,
        socket: udp,
        inbox,
        timers,
        health: Health::new(MAX_MULTIPLIER),
    };
    let intent = shared.table().local_tags_intent();
    lp.add_broadcast(&intent);

    let server = tokio::spawn(crate::tcp::serve(tcp, shared.clone()));
    // Subscribed before spawning, so a stop requested before the loop first
    // runs is still seen.
    let main = tokio::spawn(lp.run(cmd_rx, timer_rx, shared.stopped()));
    shared
        .tasks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend([main, server]);
    tracing::info!(node = %cfg.node_name, %local_addr, %advertise, encrypted = !cfg.keys.is_empty(), "gossip pool started");
    Ok(shared)
}

/// Exchanges full state with `addr` and merges the reply; returns nothing
/// useful but success.
pub(crate) async fn push_pull(
    shared: &Shared,
    addr: SocketAddr,
    join: bool,
) -> Result<(), GossipError> {
    let members = shared.table().states();
    match crate::tcp::request(shared, addr, &Request::PushPull { join, members }).await? {
        Response::PushPull { members } => {
            let (reply, rx) = oneshot::channel();
            shared
                .send(Command::Merge {
                    states: members,
                    reply,
                })
                .await?;
            rx.await.map_err(|_| GossipError::Shutdown)
        }
        Response::Error(e) => Err(GossipError::Protocol(format!(
            "the remote node refused: {e}"
        ))),
        other => Err(GossipError::Protocol(format!("unexpected reply {other:?}"))),
    }
}

struct Loop {
    shared: Arc<Shared>,
    foca: Swim,
    rt: AccumulatingRuntime<NodeId>,
    foca_cfg: foca::Config,
    socket: UdpSocket,
    inbox: Arc<Mutex<Inbox>>,
    timers: mpsc::UnboundedSender<Timer<NodeId>>,
    health: Health<NodeId>,
}

impl Loop {
    async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Command>,
        mut timer_rx: mpsc::UnboundedReceiver<Timer<NodeId>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut buf = vec![0u8; 65_536];
        let reap_every = (self.shared.cfg.reap_after / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(5));
        let mut reap = tokio::time::interval(reap_every);
        let pp = self.shared.cfg.push_pull_interval;
        let mut push_pull = tokio::time::interval_at(tokio::time::Instant::now() + pp, pp);
        let rc = self.shared.cfg.reconnect_interval;
        let mut reconnect = tokio::time::interval_at(tokio::time::Instant::now() + rc, rc);
        loop {
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, from)) => self.handle_packet(&buf[..n], from),
                    Err(e) => tracing::debug!(error = %e, "gossip UDP receive failed"),
                },
                Some(timer) = timer_rx.recv() => self.handle_timer(timer),
                Some(cmd) = cmds.recv() => {
                    if self.command(cmd).await {
                        break;
                    }
                }
                _ = reap.tick() => self.reap(),
                _ = push_pull.tick() => self.push_pull_with_one(MemberStatus::Alive),
                _ = reconnect.tick() => self.push_pull_with_one(MemberStatus::Failed),
            }
            self.flush().await;
        }
        tracing::debug!(node = %self.shared.cfg.node_name, "gossip loop stopped");
    }

    fn handle_timer(&mut self, timer: Timer<NodeId>) {
        if let Timer::ChangeSuspectToDown {
            member_id,
            incarnation,
            ..
        } = &timer
        {
            if !suspicion_stands(self.foca.iter_membership_state(), member_id, *incarnation) {
                // Refuted meanwhile. foca 2.0.0 would still send the member
                // its TurnUndead courtesy message, as if it had declared it
                // down, and the live member would rejoin under a new
                // identity.
                return;
            }
        }
        if let Err(e) = self.foca.handle_timer(timer, &mut self.rt) {
            tracing::debug!(error = %e, "foca timer");
        }
    }

    fn handle_packet(&mut self, data: &[u8], from: SocketAddr) {
        #[cfg(test)]
        if self.shared.drop_inbound_udp.load(Ordering::Relaxed) {
            return;
        }
        let plain = match self.shared.keyring().open(data) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%from, error = %e, "dropping gossip packet");
                return;
            }
        };
        let res = match plain.split_first() {
            Some((&UDP_FOCA, rest)) => self.foca.handle_data(rest, &mut self.rt),
            Some((&UDP_INTENT, rest)) => self.foca.add_broadcast(rest).map(|_| ()),
            _ => {
                tracing::debug!(%from, "dropping gossip packet of unknown kind");
                return;
            }
        };
        if let Err(e) = res {
            tracing::debug!(%from, error = %e, "dropping gossip packet");
        }
    }

    /// Runs one command; true when the loop must stop.
    async fn command(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Merge { states, reply } => {
                self.merge(states);
                let _ = reply.send(());
            }
            Command::SetTags { tags, reply } => {
                let (intent, events) = self.shared.table().set_local_tags(tags);
                self.shared.publish(events);
                self.disseminate(&intent).await;
                let _ = reply.send(());
            }
            Command::ForceLeave { name, reply } => {
                let _ = reply.send(self.force_leave(&name).await);
            }
            Command::Ping {
                target,
                incarnation,
                reply,
            } => {
                let _ = reply.send(self.answer_ping(&target, incarnation));
            }
            Command::Alive { id, incarnation } => self.alive(id, incarnation),
            Command::Leave { reply } => {
                self.leave().await;
                let _ = reply.send(());
                return true;
            }
        }
        false
    }

    /// Answers a TCP ping that suspects `target` at `incarnation`. If that
    /// is this node's identity, foca refutes the suspicion (a higher
    /// incarnation, gossiped at once); the reply is the alive state to
    /// show the prober.
    fn answer_ping(
        &mut self,
        target: &NodeId,
        incarnation: Incarnation,
    ) -> Result<(NodeId, Incarnation), String> {
        let me = self.foca.identity().clone();
        if target.name != me.name {
            return Err(format!("this is node {:?}, not {:?}", me.name, target.name));
        }
        if *target == me {
            tracing::debug!(
                incarnation,
                "a member's probe of this node failed; refuting its suspicion"
            );
            let suspect = foca::Member::new(me.clone(), incarnation, State::Suspect);
            if let Err(e) = self
                .foca
                .apply_many(std::iter::once(suspect), true, &mut self.rt)
            {
                tracing::debug!(error = %e, "foca refute suspicion");
            }
            // foca's incarnation is not public: its sends spreading the
            // refutation show it to `health`. Without any, the refuted
            // incarnation plus one is a floor foca has reached.
            self.notifications();
            if *self.foca.identity() == me {
                self.health.refuted(&me, incarnation.saturating_add(1));
                self.store_health();
            }
        }
        let id = self.foca.identity().clone();
        let incarnation = self.health.incarnation(&id);
        Ok((id, incarnation))
    }

    /// A member we suspected answered a TCP ping: apply and spread its
    /// alive state, which outranks the suspicion.
    fn alive(&mut self, id: NodeId, incarnation: Incarnation) {
        if !self.shared.table().is_current_or_newer(&id) {
            return;
        }
        let m = foca::Member::new(id, incarnation, State::Alive);
        if let Err(e) = self.foca.apply_many(std::iter::once(m), true, &mut self.rt) {
            tracing::debug!(error = %e, "foca apply TCP ping answer");
        }
        self.notifications();
    }

    /// A probe of `id` failed: if foca now suspects it, ask it over TCP.
    fn ping_suspect(&self, id: NodeId) {
        let suspected = self
            .foca
            .iter_membership_state()
            .find(|m| *m.id() == id && m.state() == State::Suspect)
            .map(|m| m.incarnation());
        if let Some(incarnation) = suspected {
            crate::ping::spawn(self.shared.clone(), id, incarnation);
        }
    }

    /// Publishes the health score for [`crate::Gossip::health_score`].
    fn store_health(&self) {
        let score = self.health.score();
        let old = self.shared.health_score.swap(score, Ordering::Relaxed);
        if old != score {
            tracing::debug!(score, old, "local health score changed");
        }
    }

    async fn leave(&mut self) {
        let events = self.shared.table().set_local_status(MemberStatus::Leaving);
        self.shared.publish(events);
        let id = self.foca.identity().clone();
        self.disseminate(&Intent::Leave { id }).await;
        if let Err(e) = self.foca.leave_cluster(&mut self.rt) {
            tracing::debug!(error = %e, "foca leave");
        }
        self.flush().await;
        let events = self.shared.table().set_local_status(MemberStatus::Left);
        self.shared.publish(events);
        self.shared.request_stop();
        tracing::info!(node = %self.shared.cfg.node_name, "left the gossip pool");
    }

    async fn force_leave(&mut self, name: &str) -> Result<(), GossipError> {
        let Some((id, status)) = self.shared.table().get(name) else {
            return Err(GossipError::UnknownMember(name.into()));
        };
        if id == *self.foca.identity() {
            return Err(GossipError::Refused(
                "cannot force-leave this node itself; use leave".into(),
            ));
        }
        let intent = Intent::ForceLeave {
            id,
            ltime: now_ms(),
        };
        if status == MemberStatus::Failed {
            let events = self.shared.table().intent(&intent);
            self.shared.publish(events);
        }
        self.disseminate(&intent).await;
        Ok(())
    }

    fn merge(&mut self, states: Vec<MemberState>) {
        self.refute(&states);
        let alive: Vec<_> = {
            let table = self.shared.table();
            states
                .iter()
                .filter(|s| matches!(s.status, MemberStatus::Alive | MemberStatus::Leaving))
                .filter(|s| table.is_current_or_newer(&s.id))
                .map(|s| foca::Member::alive(s.id.clone()))
                .collect()
        };
        if let Err(e) = self.foca.apply_many(alive.into_iter(), true, &mut self.rt) {
            tracing::debug!(error = %e, "foca apply push-pull state");
        }
        self.notifications();
        let events = self
            .shared
            .table()
            .merge(&states, self.shared.cfg.reap_after);
        self.shared.publish(events);
    }

    /// A peer that reports this node's current identity as failed (it lost
    /// contact, e.g. across a healed partition) gets a renewed identity,
    /// which outranks the failed one everywhere: memberlist's refutation.
    fn refute(&mut self, states: &[MemberState]) {
        let local = self.shared.table().local_id();
        let declared_failed = states.iter().any(|s| {
            s.id.name == local.name && s.status == MemberStatus::Failed && !local.newer_than(&s.id)
        });
        if !declared_failed {
            return;
        }
        let Some(renewed) = foca::Identity::renew(&local) else {
            return;
        };
        tracing::info!(
            generation = renewed.generation,
            "a peer reported this node failed; refuting with a renewed identity"
        );
        if let Err(e) = self.foca.change_identity(renewed.clone(), &mut self.rt) {
            tracing::debug!(error = %e, "foca change identity");
            return;
        }
        self.health.renewed();
        self.store_health();
        self.shared.table().renew_local(renewed);
        let intent = self.shared.table().local_tags_intent();
        self.add_broadcast(&intent);
    }

    fn reap(&mut self) {
        let (events, names) = self.shared.table().reap(self.shared.cfg.reap_after);
        if !names.is_empty() {
            let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
            for n in &names {
                inbox.forget(n);
            }
        }
        self.shared.publish(events);
    }

    /// Exchanges full state over TCP with one random member with `status`:
    /// an alive one every push-pull interval (to repair what gossip missed),
    /// a failed one every reconnect interval (serf's reconnect, so members
    /// cut off by a partition find each other once it heals).
    fn push_pull_with_one(&self, status: MemberStatus) {
        let peers = self.shared.table().peers(status);
        if peers.is_empty() {
            return;
        }
        let peer = &peers[rand::random::<usize>() % peers.len()];
        let (shared, addr) = (self.shared.clone(), peer.addr);
        tokio::spawn(async move {
            if let Err(e) = push_pull(&shared, addr, false).await {
                tracing::debug!(%addr, ?status, error = %e, "push-pull failed");
            }
        });
    }

    fn add_broadcast(&mut self, intent: &Intent) {
        if let Err(e) = self.foca.add_broadcast(&intent.encode()) {
            tracing::debug!(error = %e, "cannot queue intent");
        }
    }

    /// Queues an intent for piggybacking and sends it directly to every live
    /// member, so it arrives even if this node stops right after.
    async fn disseminate(&mut self, intent: &Intent) {
        self.add_broadcast(intent);
        let data = intent.encode();
        let peers: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        for addr in peers {
            self.send_udp(UDP_INTENT, &data, addr).await;
        }
    }

    async fn send_udp(&self, kind: u8, data: &[u8], to: SocketAddr) {
        let mut payload = Vec::with_capacity(data.len() + 1);
        payload.push(kind);
        payload.extend_from_slice(data);
        let sealed = self.shared.keyring().seal(&payload);
        if let Err(e) = self.socket.send_to(&sealed, to).await {
            tracing::debug!(%to, error = %e, "gossip UDP send failed");
        }
    }

    /// Sends, schedules and applies everything foca and the inbox produced.
    async fn flush(&mut self) {
        loop {
            let mut busy = false;
            while let Some((to, data)) = self.rt.to_send() {
                busy = true;
                self.send_udp(UDP_FOCA, &data, to.addr).await;
            }
            // Notifications before timers: a probe that just failed raises
            // the health score before the next cycle's timers are scaled.
            busy |= self.notifications();
            while let Some((after, timer)) = self.rt.to_schedule() {
                let after = self.health.timer_delay(&timer, after);
                let tx = self.timers.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let _ = tx.send(timer);
                });
            }
            let queue =
                std::mem::take(&mut self.inbox.lock().unwrap_or_else(|e| e.into_inner()).queue);
            for intent in queue {
                busy = true;
                self.apply_intent(&intent);
            }
            if !busy {
                break;
            }
        }
    }

    fn apply_intent(&mut self, intent: &Intent) {
        if let Intent::Tags { id, .. } = intent {
            let unknown_life = {
                let table = self.shared.table();
                table.is_current_or_newer(id)
                    && table.get(&id.name).is_none_or(|(known, _)| known != *id)
            };
            if unknown_life {
                // Tags from a life we have not met: let foca vouch for it first.
                let m = foca::Member::alive(id.clone());
                if let Err(e) = self.foca.apply_many(std::iter::once(m), true, &mut self.rt) {
                    tracing::debug!(error = %e, "foca apply");
                }
                self.notifications();
            }
        }
        let events = self.shared.table().intent(intent);
        self.shared.publish(events);
    }

    /// Applies foca's notifications; true if there were any.
    fn notifications(&mut self) -> bool {
        let mut any = false;
        let mut membership_changed = false;
        while let Some(n) = self.rt.to_notify() {
            any = true;
            let events = match n {
                OwnedNotification::MemberUp(id) => {
                    membership_changed = true;
                    self.shared.table().up(&id)
                }
                OwnedNotification::MemberDown(id) => {
                    membership_changed = true;
                    self.shared.table().down(&id)
                }
                OwnedNotification::Rename(_, new) => self.shared.table().up(&new),
                OwnedNotification::Rejoin(new) => {
                    tracing::info!(
                        generation = new.generation,
                        "declared down by the pool; rejoined with a renewed identity"
                    );
                    self.health.renewed();
                    self.shared.table().renew_local(new);
                    let intent = self.shared.table().local_tags_intent();
                    self.add_broadcast(&intent);
                    vec![]
                }
                OwnedNotification::Defunct => {
                    tracing::warn!("this node was declared down by the pool");
                    vec![]
                }
                OwnedNotification::DataSent(header) => {
                    self.health.sent(&header);
                    vec![]
                }
                OwnedNotification::DataReceived(header) => {
                    self.health.received(&header);
                    vec![]
                }
                OwnedNotification::ProbeFailed(_, id) => {
                    self.health.probe_failed();
                    self.ping_suspect(id);
                    vec![]
                }
                other => {
                    tracing::trace!(notification = ?other, "foca");
                    vec![]
                }
            };
            self.shared.publish(events);
        }
        self.store_health();
        if membership_changed {
            let want = self
                .shared
                .cfg
                .suspicion_timeout(self.foca.num_members() + 1);
            if want != self.foca_cfg.suspect_to_down_after {
                self.foca_cfg.suspect_to_down_after = want;
                if let Err(e) = self.foca.set_config(self.foca_cfg.clone()) {
                    tracing::debug!(error = %e, "foca set_config");
                }
            }
        }
        any
    }
}

/// Whether a suspicion of `id` at `incarnation` still stands when its timer
/// fires, as foca checks it: the member at that address is still `id` at
/// that incarnation (not refuted with a higher one, not replaced).
fn suspicion_stands<'a>(
    mut members: impl Iterator<Item = &'a foca::Member<NodeId>>,
    id: &NodeId,
    incarnation: Incarnation,
) -> bool {
    members
        .find(|m| m.id().addr == id.addr)
        .is_some_and(|m| m.id() == id && m.incarnation() == incarnation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refuted_or_replaced_suspect_is_not_declared_down() {
        let id = |port, generation| NodeId {
            name: "b".into(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            generation,
        };
        let b = id(2, 1);
        let member = |id: &NodeId, inc, state| foca::Member::new(id.clone(), inc, state);
        let other = member(&id(3, 1), 4, State::Suspect);
        let stands = |m: foca::Member<NodeId>| suspicion_stands([other.clone(), m].iter(), &b, 4);
        assert!(stands(member(&b, 4, State::Suspect)));
        // Already down at that incarnation: foca may still tell it.
        assert!(stands(member(&b, 4, State::Down)));
        assert!(!stands(member(&b, 5, State::Alive)), "refuted");
        assert!(!stands(member(&id(2, 2), 4, State::Suspect)), "a new life");
        assert!(!suspicion_stands([other.clone()].iter(), &b, 4), "gone");
    }

    #[test]
    fn sealed_foca_packets_fit_in_max_udp() {
        let cfg = GossipConfig::new("a", "127.0.0.1:0".parse().unwrap());
        let c = foca_config(&cfg);
        // kind byte + foca packet + version, nonce and tag.
        assert!(1 + c.max_packet_size.get() + OVERHEAD <= MAX_UDP);
        assert!(c.remove_down_after.unwrap() >= cfg.reap_after);
        assert_eq!(c.probe_period, cfg.probe_interval);
    }
}
