//! The QUIC endpoint driver: one task owns the UDP socket, the `quinn-proto` endpoint and the
//! timers of every connection, and moves datagrams between them.
//!
//! Why not `quinn::Endpoint`: quinn gives every connection its own driver task, an unbounded
//! event channel (its first block of 32 slots is allocated with the channel and held for the
//! connection's life) and a transmit buffer kept at its high-water mark. With tens of thousands
//! of mostly idle units that is about a third of an idle QUIC unit's memory
//! (docs/decisions.md). Here those are shared: one task, one transmit buffer, one receive
//! batch, one timer set for the whole endpoint. Per connection there is only quinn-proto's
//! state, behind a mutex shared with the unit's session task ([`super::conn`]).

use std::collections::BTreeSet;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use codec::Transport;
use quinn_proto::{ConnectionHandle, DatagramEvent, EcnCodepoint, Endpoint, ServerConfig};
use quinn_udp::{RecvMeta, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::conn::{Conn, Dirty};
use crate::server::Ctx;

/// Datagrams asked of the kernel per `recvmmsg`.
const RECV_BATCH: usize = quinn_udp::BATCH_SIZE;
/// Receive batches handled before the driver gives the worker thread back, so a flood of
/// packets cannot starve the session tasks on the same thread.
const BATCHES_PER_TURN: usize = 16;
/// How long a stopping endpoint waits for its connections' closes to go out.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A connection as the driver keeps it.
struct Entry {
    conn: Arc<Conn>,
    /// The deadline this connection has in `timers`.
    timer: Option<Instant>,
    /// Already in this turn's `touched` list.
    touched: bool,
}

pub(crate) struct Driver {
    ctx: Arc<Ctx>,
    socket: UdpSocket,
    udp: UdpSocketState,
    endpoint: Endpoint,
    server_config: Arc<ServerConfig>,
    /// Indexed by `ConnectionHandle.0` (quinn-proto's slab index).
    conns: Vec<Option<Entry>>,
    /// The last value of the open-connections gauge.
    published_open: usize,
    /// Every connection's next quinn-proto timeout, earliest first.
    timers: BTreeSet<(Instant, usize)>,
    dirty: Arc<Dirty>,
    /// Connections to drive this turn.
    touched: Vec<usize>,
    dirty_handles: Vec<ConnectionHandle>,
    send_buf: Vec<u8>,
    recv_buf: Vec<u8>,
    recv_meta: Vec<RecvMeta>,
}

impl Driver {
    pub(crate) fn new(
        ctx: Arc<Ctx>,
        socket: std::net::UdpSocket,
        server_config: Arc<ServerConfig>,
    ) -> std::io::Result<Self> {
        socket.set_nonblocking(true)?;
        let udp = UdpSocketState::new((&socket).into())?;
        let socket = UdpSocket::from_std(socket)?;
        let endpoint = Endpoint::new(
            Arc::new(quinn_proto::EndpointConfig::default()),
            Some(Arc::clone(&server_config)),
            !udp.may_fragment(),
            None,
        );
        // One slot per datagram of a batch, each large enough for a GRO-coalesced run.
        let slot = 64 * 1024;
        Ok(Self {
            ctx,
            socket,
            udp,
            endpoint,
            server_config,
            conns: Vec::new(),
            published_open: 0,
            timers: BTreeSet::new(),
            dirty: Arc::new(Dirty::default()),
            touched: Vec::new(),
            dirty_handles: Vec::new(),
            send_buf: Vec::with_capacity(64 * 1024),
            recv_buf: vec![0; slot * RECV_BATCH],
            recv_meta: vec![RecvMeta::default(); RECV_BATCH],
        })
    }

    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Serves until `close` is cancelled: accepts units while `ctx.stop_accept` is not
    /// cancelled, then only serves the ones it has. On `close`, closes what is left and waits
    /// (up to a second) for the closes to go out.
    pub(crate) async fn run(mut self, close: CancellationToken) {
        let timer = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(timer);
        let mut timer_at: Option<Instant> = None;
        let mut closing_since: Option<Instant> = None;
        loop {
            if let Some(since) = closing_since {
                if self.endpoint.open_connections() == 0 || since.elapsed() > CLOSE_GRACE {
                    return;
                }
            }
            let next = self.timers.first().map(|(t, _)| *t);
            let next = match closing_since {
                Some(since) => {
                    Some(next.map_or(since + CLOSE_GRACE, |t| t.min(since + CLOSE_GRACE)))
                }
                None => next,
            };
            if next != timer_at {
                if let Some(t) = next {
                    timer.as_mut().reset(t.into());
                }
                timer_at = next;
            }
            tokio::select! {
                biased;
                () = close.cancelled(), if closing_since.is_none() => {
                    closing_since = Some(Instant::now());
                    self.close_all();
                }
                r = self.socket.readable() => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "QUIC socket failed");
                        return;
                    }
                    self.receive();
                }
                () = self.dirty.doorbell.notified() => {}
                () = &mut timer, if timer_at.is_some() => {
                    timer_at = None;
                }
            }
            self.expire_timers(Instant::now());
            self.take_dirty();
            self.drive_touched();
            self.publish_open();
            // Let the session tasks on this thread run between turns under load.
            tokio::task::consume_budget().await;
        }
    }

    /// Reads what the socket has (up to `BATCHES_PER_TURN` batches) into the endpoint.
    fn receive(&mut self) {
        for _ in 0..BATCHES_PER_TURN {
            let slot = self.recv_buf.len() / RECV_BATCH;
            let mut slots = self.recv_buf.chunks_mut(slot);
            let mut bufs: [IoSliceMut<'_>; RECV_BATCH] = std::array::from_fn(|_| {
                IoSliceMut::new(slots.next().expect("recv_buf holds RECV_BATCH slots"))
            });
            let udp = &self.udp;
            let meta = &mut self.recv_meta;
            let got = self.socket.try_io(Interest::READABLE, || {
                udp.recv((&self.socket).into(), &mut bufs, meta)
            });
            let n = match got {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(error = %e, "QUIC receive failed");
                    return;
                }
            };
            let now = Instant::now();
            for i in 0..n {
                let meta = self.recv_meta[i];
                let start = i * slot;
                let stride = meta.stride.max(1);
                // A GRO-coalesced run holds several datagrams of `stride` bytes.
                for offset in (0..meta.len).step_by(stride) {
                    let end = (offset + stride).min(meta.len);
                    let datagram = BytesMut::from(&self.recv_buf[start + offset..start + end]);
                    self.datagram(now, &meta, datagram);
                }
            }
        }
    }

    fn datagram(&mut self, now: Instant, meta: &RecvMeta, data: BytesMut) {
        let ecn = meta.ecn.and_then(|e| EcnCodepoint::from_bits(e as u8));
        self.send_buf.clear();
        let event =
            self.endpoint
                .handle(now, meta.addr, meta.dst_ip, ecn, data, &mut self.send_buf);
        match event {
            None => {}
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                if let Some(entry) = self.conns.get_mut(ch.0).and_then(Option::as_mut) {
                    entry.conn.lock().proto.handle_event(event);
                    touch(&mut self.touched, ch.0, entry);
                }
            }
            Some(DatagramEvent::Response(transmit)) => self.send(&transmit),
            Some(DatagramEvent::NewConnection(incoming)) => self.incoming(now, incoming),
        }
    }

    /// A unit's first packet: admit it (a session task takes it from there) or refuse it.
    fn incoming(&mut self, now: Instant, incoming: quinn_proto::Incoming) {
        let guard = if self.ctx.stop_accept.is_cancelled() {
            None
        } else {
            self.ctx.admit_connection(Transport::Quic)
        };
        let Some(guard) = guard else {
            self.send_buf.clear();
            let transmit = self.endpoint.refuse(incoming, &mut self.send_buf);
            self.send(&transmit);
            return;
        };
        self.send_buf.clear();
        let accepted = self.endpoint.accept(
            incoming,
            now,
            &mut self.send_buf,
            Some(Arc::clone(&self.server_config)),
        );
        let (ch, proto) = match accepted {
            Ok(x) => x,
            Err(e) => {
                metrics::counter!(crate::metrics::HANDSHAKE_FAILURES, "transport" => "quic", "reason" => "tls")
                    .increment(1);
                tracing::debug!(error = %e.cause, "QUIC accept failed");
                if let Some(transmit) = e.response {
                    self.send(&transmit);
                }
                return;
            }
        };
        let peer = proto.remote_address();
        let conn = Arc::new(Conn::new(ch, proto, Arc::clone(&self.dirty)));
        if self.conns.len() <= ch.0 {
            self.conns.resize_with(ch.0 + 1, || None);
        }
        let mut entry = Entry {
            conn: Arc::clone(&conn),
            timer: None,
            touched: false,
        };
        touch(&mut self.touched, ch.0, &mut entry);
        self.conns[ch.0] = Some(entry);
        let ctx = Arc::clone(&self.ctx);
        self.ctx
            .session_tasks
            .spawn(super::serve(ctx, conn, peer, guard));
    }

    fn expire_timers(&mut self, now: Instant) {
        while let Some(&(at, idx)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if let Some(entry) = self.conns.get_mut(idx).and_then(Option::as_mut) {
                entry.timer = None;
                entry.conn.lock().proto.handle_timeout(now);
                touch(&mut self.touched, idx, entry);
            }
        }
    }

    fn take_dirty(&mut self) {
        self.dirty.take(&mut self.dirty_handles);
        for ch in self.dirty_handles.drain(..) {
            if let Some(entry) = self.conns.get_mut(ch.0).and_then(Option::as_mut) {
                entry.conn.unqueue();
                touch(&mut self.touched, ch.0, entry);
            }
        }
    }

    fn drive_touched(&mut self) {
        let touched = std::mem::take(&mut self.touched);
        for &idx in &touched {
            self.drive(idx);
        }
        self.touched = touched;
        self.touched.clear();
    }

    /// Brings one connection up to date: endpoint bookkeeping, application events, datagrams
    /// to send, its next timeout; forgets it once drained.
    fn drive(&mut self, idx: usize) {
        let Some(entry) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        entry.touched = false;
        let conn = Arc::clone(&entry.conn);
        let ch = conn.handle;
        let now = Instant::now();
        let max_datagrams = self.udp.max_gso_segments();
        let mut s = conn.lock();
        loop {
            let mut again = false;
            while let Some(event) = s.proto.poll_endpoint_events() {
                if let Some(back) = self.endpoint.handle_event(ch, event) {
                    s.proto.handle_event(back);
                    again = true;
                }
            }
            while let Some(event) = s.proto.poll() {
                s.on_event(event);
            }
            loop {
                self.send_buf.clear();
                match s
                    .proto
                    .poll_transmit(now, max_datagrams, &mut self.send_buf)
                {
                    Some(transmit) => {
                        self.send(&transmit);
                    }
                    None => break,
                }
            }
            if !again {
                break;
            }
        }
        let drained = s.proto.is_drained();
        let next = if drained {
            None
        } else {
            s.proto.poll_timeout()
        };
        if drained {
            // The `Drained` event must reach the endpoint, or its slot and connection ids
            // would never be freed.
            while let Some(event) = s.proto.poll_endpoint_events() {
                let _ = self.endpoint.handle_event(ch, event);
            }
            s.on_drained();
        }
        drop(s);
        let Some(entry) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        if entry.timer != next {
            if let Some(old) = entry.timer {
                self.timers.remove(&(old, idx));
            }
            if let Some(new) = next {
                self.timers.insert((new, idx));
            }
            entry.timer = next;
        }
        if drained {
            // quinn-proto released the handle with the `Drained` endpoint event above.
            self.conns[idx] = None;
        }
    }

    /// quinn-proto's count of connections, which only falls when a drained connection's
    /// `Drained` event reached the endpoint: a leak would show here.
    fn publish_open(&mut self) {
        let open = self.endpoint.open_connections();
        if open != self.published_open {
            self.published_open = open;
            metrics::gauge!(crate::metrics::QUIC_ENDPOINT_CONNECTIONS).set(open as f64);
        }
    }

    /// The gateway is stopping: close every connection still open.
    fn close_all(&mut self) {
        for entry in self.conns.iter_mut().flatten() {
            entry.conn.close(0, b"shutdown");
        }
    }

    /// Sends one transmit. A full socket buffer drops it, as a congested network would: QUIC's
    /// loss recovery resends what mattered, and the driver never waits on one unit.
    fn send(&self, t: &quinn_proto::Transmit) {
        let transmit = quinn_udp::Transmit {
            destination: t.destination,
            ecn: t
                .ecn
                .and_then(|e| quinn_udp::EcnCodepoint::from_bits(e as u8)),
            contents: &self.send_buf[..t.size],
            segment_size: t.segment_size,
            src_ip: t.src_ip,
        };
        let sent = self.socket.try_io(Interest::WRITABLE, || {
            self.udp.send((&self.socket).into(), &transmit)
        });
        if let Err(e) = sent {
            metrics::counter!(crate::metrics::QUIC_SEND_DROPPED).increment(1);
            tracing::debug!(error = %e, "QUIC datagram dropped");
        }
    }
}

fn touch(touched: &mut Vec<usize>, idx: usize, entry: &mut Entry) {
    if !entry.touched {
        entry.touched = true;
        touched.push(idx);
    }
}
