//! Sends a [`Ruleset`] to nf_tables as ONE netlink batch (one transaction), and removes our
//! table. Messages are built with `netlink-packet-netfilter`; the socket is `netlink-sys`.
//!
//! The batch keeps the table, the base chains and the blocklist sets, and flushes and refills
//! them inside the transaction: a packet sees either the old ruleset or the new one, never
//! none, and a blocked address present in both is never let through (a re-created interval set
//! matches nothing until the commit finishes, as measured while the firewall was built; see
//! the Firewall section of `docs/decisions.md`). Per-source meters are deleted and re-created
//! (their state resets with each update).
//! If any message fails the kernel aborts the whole batch and the previous rules stay.

use std::io;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NetlinkBuffer, NetlinkMessage, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST,
};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, DataAttribute, Hook, HookNumber, InetHookNumber, ListAttribute,
    NfTablesMessage, RuleAttribute, RuleMessage, SetAttribute, SetDescription, SetElementAttribute,
    SetElementFlags, SetElementList, SetElementMessage, SetFlags, SetMessage, TableAttribute,
    TableMessage,
};
use netlink_packet_netfilter::{
    none::ControlMessage, NetfilterHeader, NetfilterMessage, NetfilterMessageInner,
    NetfilterProtoFamily,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

use super::expr;
use super::ruleset::{
    Chain, Family, RuleDef, Ruleset, BLOCKED_V4, BLOCKED_V6, METER_SIZE, METER_TIMEOUT_MS, TABLE,
    TCP_UDP,
};

/// nfnetlink subsystem id of nf_tables (the batch messages' resource id).
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NLMSG_ERROR: u16 = 2;
// nft data types of set keys.
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_PROTOCOL: u32 = 12;
const NF_ACCEPT: u32 = 1;
/// Elements per NEWSETELEM message: the element list is one attribute, whose length is a u16.
const ELEMENTS_PER_MESSAGE: usize = 1000;
/// How long the kernel may take to answer a batch (100 k elements take well under a second).
const ANSWER_DEADLINE: Duration = Duration::from_secs(20);

/// Why an apply or removal failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FirewallError {
    /// No CAP_NET_ADMIN, no nf_tables in the kernel, or no netlink socket: the firewall cannot
    /// work on this host, whatever the snapshot.
    #[error("{0}")]
    Unavailable(String),
    /// The kernel refused the batch (it was rolled back; the previous rules stay).
    #[error("{0}")]
    Rejected(String),
}

/// Our side of the nf_tables socket, and what we know of the table's current contents.
pub struct Applier {
    socket: Socket,
    next_seq: u32,
    /// The meters the table holds now (deleted by the next batch).
    meters: Vec<String>,
    /// True until a batch has set up the table: the first batch deletes and re-creates it,
    /// which replaces a stale table left by a killed process (and anything else in it).
    fresh: bool,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("meters", &self.meters)
            .finish()
    }
}

/// A failed batch: the error to report, and the kernel's errno when it refused a message.
struct BatchFailure {
    error: FirewallError,
    errno: Option<i32>,
}

impl From<FirewallError> for BatchFailure {
    fn from(error: FirewallError) -> Self {
        Self { error, errno: None }
    }
}

/// One message of a batch and what to call it in an error.
struct Part {
    message: NetlinkMessage<NetfilterMessage>,
    what: String,
}

impl Applier {
    /// Opens the netfilter netlink socket. Opening works without CAP_NET_ADMIN; the first
    /// batch tells.
    pub fn open() -> Result<Self, FirewallError> {
        let unavailable =
            |e: io::Error| FirewallError::Unavailable(format!("netlink netfilter socket: {e}"));
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(unavailable)?;
        socket.bind_auto().map_err(unavailable)?;
        set_receive_timeout(&socket, Duration::from_millis(200)).map_err(unavailable)?;
        Ok(Self {
            socket,
            next_seq: 1,
            meters: Vec::new(),
            fresh: true,
        })
    }

    /// Replaces our table's contents with `ruleset`, atomically.
    pub fn apply(&mut self, ruleset: &Ruleset) -> Result<(), FirewallError> {
        let parts = build_apply(ruleset, &self.meters, self.fresh);
        match self.transact(parts).map_err(|failure| failure.error) {
            Ok(()) => {
                self.fresh = false;
                self.meters = ruleset.meters.iter().map(|m| m.name.clone()).collect();
                Ok(())
            }
            Err(error) => {
                // Rolled back: the kernel state is what it was, except that our view of it may
                // be wrong if someone else edited the table. Start over next time.
                self.fresh = true;
                Err(error)
            }
        }
    }

    /// Deletes our table (idempotent).
    pub fn remove(&mut self) -> Result<(), FirewallError> {
        let parts = vec![new_table(), delete_table()];
        self.transact(parts).map_err(|failure| failure.error)?;
        self.fresh = true;
        self.meters.clear();
        Ok(())
    }

    /// Puts `rules` at the head of their chains in a table this applier did not make (one left
    /// by a killed edge), in one batch, leaving the rest of it as it is. `Ok(false)` when there
    /// is no such table (or it lacks our chains). The next [`Applier::apply`] still replaces the
    /// whole table.
    pub fn exempt_stale(&mut self, rules: &[RuleDef]) -> Result<bool, FirewallError> {
        // Without NLM_F_APPEND the kernel inserts a rule at the head of its chain; without
        // NLM_F_CREATE on a table, a missing table fails the batch with ENOENT.
        let parts = rules
            .iter()
            .enumerate()
            .map(|(index, rule)| new_rule(rule, index, NLM_F_CREATE))
            .collect();
        match self.transact(parts) {
            Ok(()) => Ok(true),
            Err(BatchFailure {
                errno: Some(libc::ENOENT),
                ..
            }) => Ok(false),
            Err(failure) => Err(failure.error),
        }
    }

    fn transact(&mut self, parts: Vec<Part>) -> Result<(), BatchFailure> {
        let first = self.next_seq;
        let (bytes, names) = encode_batch(parts, first);
        self.next_seq = first.wrapping_add(u32::try_from(names.len()).unwrap_or(0) + 2);
        // A batch must arrive in one sendmsg (one skb), so the send buffer must hold it all.
        let wanted = bytes.len() + 64 * 1024;
        if let Err(error) = force_buffers(&self.socket, wanted) {
            tracing::debug!(%error, "cannot raise the netlink buffers");
        }
        self.socket
            .send(&bytes, 0)
            .map_err(|e| classify_send_error(&e, bytes.len()))?;
        self.await_answers(first, &names)
    }

    /// Reads ACKs until every object message is acknowledged, or returns the first error.
    fn await_answers(&self, first: u32, names: &[String]) -> Result<(), BatchFailure> {
        let begin_seq = first;
        let mut pending: std::collections::HashSet<u32> = (1..=names.len())
            .map(|i| first.wrapping_add(u32::try_from(i).unwrap_or(0)))
            .collect();
        let deadline = Instant::now() + ANSWER_DEADLINE;
        let mut buf = Vec::with_capacity(256 * 1024);
        while !pending.is_empty() {
            if Instant::now() > deadline {
                return Err(FirewallError::Rejected(format!(
                    "no answer from nf_tables within {ANSWER_DEADLINE:?}"
                ))
                .into());
            }
            buf.clear();
            match self.socket.recv(&mut buf, 0) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    return Err(FirewallError::Rejected(format!("netlink receive: {e}")).into())
                }
            }
            for (seq, code) in answers(&buf) {
                if code != 0 {
                    let error = io::Error::from_raw_os_error(-code);
                    if seq == begin_seq {
                        return Err(FirewallError::Unavailable(describe_begin_error(
                            -code, &error,
                        ))
                        .into());
                    }
                    let what = seq
                        .checked_sub(first)
                        .and_then(|i| names.get(usize::try_from(i).ok()?.checked_sub(1)?))
                        .map_or("a message of the batch", String::as_str);
                    self.drain();
                    return Err(BatchFailure {
                        error: FirewallError::Rejected(format!(
                            "kernel rejected {what} (errno {}: {error})",
                            -code
                        )),
                        errno: Some(-code),
                    });
                }
                pending.remove(&seq);
            }
        }
        Ok(())
    }

    /// Discards answers still queued after a failed batch, so they cannot confuse the next.
    fn drain(&self) {
        let mut buf = Vec::with_capacity(64 * 1024);
        for _ in 0..1000 {
            buf.clear();
            if self.socket.recv(&mut buf, libc::MSG_DONTWAIT).is_err() {
                return;
            }
        }
    }
}

/// A BATCH_BEGIN refused means the firewall cannot work here at all.
fn describe_begin_error(errno: i32, error: &io::Error) -> String {
    if errno == libc::EPERM {
        format!("no CAP_NET_ADMIN: nf_tables refused the batch ({error})")
    } else {
        format!("nf_tables unavailable: the kernel refused the batch ({error})")
    }
}

fn classify_send_error(error: &io::Error, len: usize) -> FirewallError {
    if error.raw_os_error() == Some(libc::EPERM) {
        FirewallError::Unavailable(format!("no CAP_NET_ADMIN ({error})"))
    } else {
        FirewallError::Rejected(format!("cannot send the {len}-byte batch: {error}"))
    }
}

/// `(sequence number, error code)` of each NLMSG_ERROR (0 = ACK) in a receive buffer.
fn answers(mut buf: &[u8]) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    while let Ok(message) = NetlinkBuffer::new_checked(buf) {
        let len = usize::try_from(message.length()).unwrap_or(usize::MAX);
        if message.message_type() == NLMSG_ERROR {
            let code = message
                .payload()
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map_or(0, i32::from_ne_bytes);
            out.push((message.sequence_number(), code));
        }
        let step = (len + 3) & !3;
        if step == 0 || step > buf.len() {
            break;
        }
        buf = &buf[step..];
    }
    out
}

/// Serialises `BATCH_BEGIN, parts..., BATCH_END` with consecutive sequence numbers from
/// `first`; every object message asks for an ACK. Returns the bytes and each part's name.
fn encode_batch(parts: Vec<Part>, first: u32) -> (Vec<u8>, Vec<String>) {
    let mut messages = Vec::with_capacity(parts.len() + 2);
    let mut names = Vec::with_capacity(parts.len());
    messages.push(control(ControlMessage::BatchBegin));
    for part in parts {
        let mut message = part.message;
        message.header.flags |= NLM_F_REQUEST | NLM_F_ACK;
        messages.push(message);
        names.push(part.what);
    }
    messages.push(control(ControlMessage::BatchEnd));
    let mut bytes = Vec::new();
    for (index, mut message) in messages.into_iter().enumerate() {
        message.header.sequence_number = first.wrapping_add(u32::try_from(index).unwrap_or(0));
        message.finalize();
        let start = bytes.len();
        bytes.resize(start + message.buffer_len(), 0);
        message.serialize(&mut bytes[start..]);
    }
    (bytes, names)
}

fn control(message: ControlMessage) -> NetlinkMessage<NetfilterMessage> {
    let mut message = NetlinkMessage::from(NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
        message,
    ));
    message.header.flags = NLM_F_REQUEST;
    message
}

fn nft(message: NfTablesMessage, flags: u16) -> NetlinkMessage<NetfilterMessage> {
    let mut message = NetlinkMessage::from(NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0),
        NetfilterMessageInner::from(message),
    ));
    message.header.flags = flags;
    message
}

fn part(message: NfTablesMessage, flags: u16, what: impl Into<String>) -> Part {
    Part {
        message: nft(message, flags),
        what: what.into(),
    }
}

fn new_table() -> Part {
    part(
        NfTablesMessage::NewTable(TableMessage {
            attributes: vec![TableAttribute::Name(TABLE.to_owned())],
        }),
        NLM_F_CREATE,
        format!("NEWTABLE {TABLE}"),
    )
}

fn delete_table() -> Part {
    part(
        NfTablesMessage::DeleteTable(TableMessage {
            attributes: vec![TableAttribute::Name(TABLE.to_owned())],
        }),
        0,
        format!("DELTABLE {TABLE}"),
    )
}

/// The messages of one apply (see the module docs for the layout).
fn build_apply(ruleset: &Ruleset, previous_meters: &[String], fresh: bool) -> Vec<Part> {
    let mut parts = vec![new_table()];
    if fresh {
        parts.push(delete_table());
        parts.push(new_table());
    }
    for chain in Chain::ALL {
        parts.push(new_chain(chain));
        if !fresh {
            parts.push(part(
                NfTablesMessage::DeleteRule(RuleMessage {
                    attributes: vec![
                        RuleAttribute::Table(TABLE.to_owned()),
                        RuleAttribute::Chain(chain.name().to_owned()),
                    ],
                }),
                0,
                format!("DELRULE {} (flush)", chain.name()),
            ));
        }
    }
    if !fresh {
        for meter in previous_meters {
            parts.push(part(
                NfTablesMessage::DeleteSet(SetMessage {
                    attributes: vec![
                        SetAttribute::Table(TABLE.to_owned()),
                        SetAttribute::Name(meter.clone()),
                    ],
                }),
                0,
                format!("DELSET {meter}"),
            ));
        }
    }
    let v4 = interval_keys(
        &ruleset.blocked_v4,
        |a| a.to_be_bytes().to_vec(),
        u32::checked_add,
    );
    let v6 = interval_keys(
        &ruleset.blocked_v6,
        |a| a.to_be_bytes().to_vec(),
        u128::checked_add,
    );
    for (name, key_type, key_len, keys) in [
        (BLOCKED_V4, TYPE_IPADDR, 4, v4),
        (BLOCKED_V6, TYPE_IP6ADDR, 16, v6),
    ] {
        parts.push(new_set(
            name,
            key_type,
            key_len,
            SetFlags::Interval,
            Vec::new(),
        ));
        if !fresh {
            parts.push(part(
                NfTablesMessage::DeleteSetElement(SetElementMessage {
                    attributes: vec![
                        SetElementList::Table(TABLE.to_owned()),
                        SetElementList::Set(name.to_owned()),
                    ],
                }),
                0,
                format!("DELSETELEM {name} (flush)"),
            ));
        }
        parts.extend(new_elements(name, keys));
    }
    parts.push(new_set(
        TCP_UDP,
        TYPE_INET_PROTOCOL,
        1,
        SetFlags::empty(),
        Vec::new(),
    ));
    parts.extend(new_elements(
        TCP_UDP,
        expr::tcp_udp_keys()
            .into_iter()
            .map(|k| (k, false))
            .collect(),
    ));
    for meter in &ruleset.meters {
        let (key_type, key_len) = match meter.family {
            Family::V4 => (TYPE_IPADDR, 4),
            Family::V6 => (TYPE_IP6ADDR, 16),
        };
        parts.push(new_set(
            &meter.name,
            key_type,
            key_len,
            SetFlags::Timeout | SetFlags::Eval,
            vec![
                SetAttribute::Timeout(METER_TIMEOUT_MS),
                SetAttribute::Description(vec![SetDescription::Size(METER_SIZE)]),
            ],
        ));
    }
    for (index, rule) in ruleset.rules.iter().enumerate() {
        parts.push(new_rule(rule, index, NLM_F_CREATE | NLM_F_APPEND));
    }
    parts
}

/// A NEWRULE: appended to its chain with `NLM_F_APPEND`, else inserted at its head.
fn new_rule(rule: &RuleDef, index: usize, flags: u16) -> Part {
    let mut attributes = vec![
        RuleAttribute::Table(TABLE.to_owned()),
        RuleAttribute::Chain(rule.chain.name().to_owned()),
        RuleAttribute::Expressions(expr::encode(&rule.exprs)),
    ];
    if let Some(comment) = &rule.comment {
        attributes.push(RuleAttribute::UserData(expr::comment_udata(comment)));
    }
    part(
        NfTablesMessage::NewRule(RuleMessage { attributes }),
        flags,
        format!(
            "NEWRULE #{index} in {} ({})",
            rule.chain.name(),
            rule.comment.as_deref().unwrap_or("blocklist")
        ),
    )
}

fn new_chain(chain: Chain) -> Part {
    let hook = match chain {
        Chain::Input => InetHookNumber::LocalIn,
        Chain::Forward => InetHookNumber::Forward,
        Chain::Output => InetHookNumber::LocalOut,
    };
    part(
        NfTablesMessage::NewChain(ChainMessage {
            attributes: vec![
                ChainAttribute::Table(TABLE.to_owned()),
                ChainAttribute::Name(chain.name().to_owned()),
                ChainAttribute::Hook(vec![
                    Hook::Number(HookNumber::Inet(hook)),
                    Hook::Priority(0),
                ]),
                ChainAttribute::Policy(NF_ACCEPT),
                ChainAttribute::Type("filter".to_owned()),
            ],
        }),
        NLM_F_CREATE,
        format!("NEWCHAIN {}", chain.name()),
    )
}

fn new_set(
    name: &str,
    key_type: u32,
    key_len: u32,
    flags: SetFlags,
    extra: Vec<SetAttribute>,
) -> Part {
    // The kernel requires a set id (unique in the transaction); a hash of the name is unique
    // among our few sets.
    let id = name
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let mut attributes = vec![
        SetAttribute::Table(TABLE.to_owned()),
        SetAttribute::Name(name.to_owned()),
        SetAttribute::Id(id),
        SetAttribute::Flags(flags),
        SetAttribute::KeyType(key_type),
        SetAttribute::KeyLen(key_len),
    ];
    attributes.extend(extra);
    part(
        NfTablesMessage::NewSet(SetMessage { attributes }),
        NLM_F_CREATE,
        format!("NEWSET {name}"),
    )
}

/// Interval elements as nft sends them: a leading all-zero END element (unless the first
/// range starts at zero), then START and END+1 per range (no END for a range that runs to the
/// top of the address space). `(key, is_end)` pairs.
fn interval_keys<T: Copy + Default + PartialEq + From<u8>>(
    ranges: &[(T, T)],
    bytes: impl Fn(T) -> Vec<u8>,
    checked_add: impl Fn(T, T) -> Option<T>,
) -> Vec<(Vec<u8>, bool)> {
    let mut keys = Vec::with_capacity(ranges.len() * 2 + 1);
    if ranges
        .first()
        .is_some_and(|(start, _)| *start != T::default())
    {
        keys.push((bytes(T::default()), true));
    }
    for (start, end) in ranges {
        keys.push((bytes(*start), false));
        if let Some(after) = checked_add(*end, T::from(1)) {
            keys.push((bytes(after), true));
        }
    }
    keys
}

fn new_elements(set: &str, keys: Vec<(Vec<u8>, bool)>) -> Vec<Part> {
    keys.chunks(ELEMENTS_PER_MESSAGE)
        .map(|chunk| {
            let elements = chunk
                .iter()
                .map(|(key, end)| {
                    let mut element =
                        vec![SetElementAttribute::Key(DataAttribute::Value(key.clone()))];
                    if *end {
                        element.push(SetElementAttribute::Flags(SetElementFlags::IntervalEnd));
                    }
                    ListAttribute::Element(element)
                })
                .collect();
            part(
                NfTablesMessage::NewSetElement(SetElementMessage {
                    attributes: vec![
                        SetElementList::Table(TABLE.to_owned()),
                        SetElementList::Set(set.to_owned()),
                        SetElementList::Elements(elements),
                    ],
                }),
                NLM_F_CREATE,
                format!("NEWSETELEM {set} ({} elements)", chunk.len()),
            )
        })
        .collect()
}

fn set_receive_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    let value = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(1),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
    };
    setsockopt(socket, libc::SO_RCVTIMEO, &value)
}

/// Raises SO_SNDBUF/SO_RCVBUF beyond the system maximum (needs CAP_NET_ADMIN, which applying
/// needs anyway), as nft does for big batches.
fn force_buffers(socket: &Socket, bytes: usize) -> io::Result<()> {
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    setsockopt(socket, libc::SO_SNDBUFFORCE, &size)?;
    setsockopt(socket, libc::SO_RCVBUFFORCE, &size.max(4 << 20))
}

fn setsockopt<T>(socket: &Socket, option: libc::c_int, value: &T) -> io::Result<()> {
    let len = libc::socklen_t::try_from(size_of::<T>()).unwrap_or(0);
    // SAFETY: `value` points to a live `T` of `len` bytes for the duration of the call, and
    // the descriptor is owned by `socket`. No crate here wraps these netlink socket options.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(socket),
            libc::SOL_SOCKET,
            option,
            std::ptr::from_ref(value).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{exemption::Exemption, ruleset::translate, snapshot::validate};
    use super::*;

    fn ruleset(json: &str) -> Ruleset {
        translate(
            &validate(&serde_json::from_str(json).unwrap(), "fw").unwrap(),
            &Exemption::default(),
        )
    }

    #[test]
    fn interval_elements_follow_nft() {
        let keys = interval_keys(
            &[(10u32, 20), (30, u32::MAX)],
            |a| a.to_be_bytes().to_vec(),
            u32::checked_add,
        );
        let expect = |v: u32, end| (v.to_be_bytes().to_vec(), end);
        assert_eq!(
            keys,
            vec![
                expect(0, true),
                expect(10, false),
                expect(21, true),
                expect(30, false)
            ]
        );
        let from_zero = interval_keys(&[(0u32, 9)], |a| a.to_be_bytes().to_vec(), u32::checked_add);
        assert_eq!(from_zero, vec![expect(0, false), expect(10, true)]);
    }

    #[test]
    fn first_batch_replaces_the_table_later_ones_flush_in_place() {
        let set = ruleset(
            r#"{"blockedIps":["192.0.2.0/24"],"rateLimits":[{"id":"a","port":80,"rate":"1/second","perSourceIP":true}]}"#,
        );
        let names = |parts: Vec<Part>| parts.into_iter().map(|p| p.what).collect::<Vec<_>>();
        let fresh = names(build_apply(&set, &[], true));
        assert_eq!(
            &fresh[..3],
            &[
                "NEWTABLE remoteingress",
                "DELTABLE remoteingress",
                "NEWTABLE remoteingress"
            ]
        );
        assert!(!fresh
            .iter()
            .any(|n| n.starts_with("DELRULE") || n.starts_with("DELSET")));
        let later = names(build_apply(&set, &["rl0_v4".to_owned()], false));
        assert_eq!(later[0], "NEWTABLE remoteingress");
        assert!(!later.iter().any(|n| n.starts_with("DELTABLE")));
        for expected in [
            "DELRULE input (flush)",
            "DELSET rl0_v4",
            "DELSETELEM blocked_v4 (flush)",
            "NEWSET rl0_v6",
        ] {
            assert!(
                later.iter().any(|n| n == expected),
                "{expected} in {later:?}"
            );
        }
        // The blocklist sets are flushed before being refilled, and rules come last.
        let flush = later
            .iter()
            .position(|n| n == "DELSETELEM blocked_v4 (flush)")
            .unwrap();
        let fill = later
            .iter()
            .position(|n| n.starts_with("NEWSETELEM blocked_v4"))
            .unwrap();
        assert!(flush < fill);
        assert!(later.last().unwrap().starts_with("NEWRULE"));
    }

    #[test]
    fn batch_is_framed_with_begin_end_and_acks() {
        let (bytes, names) = encode_batch(vec![new_table(), delete_table()], 7);
        assert_eq!(names.len(), 2);
        let mut seqs = Vec::new();
        let mut rest = &bytes[..];
        while let Ok(message) = NetlinkBuffer::new_checked(rest) {
            seqs.push((
                message.sequence_number(),
                message.message_type(),
                message.flags() & NLM_F_ACK != 0,
            ));
            rest = &rest[message.length() as usize..];
        }
        // BATCH_BEGIN/END are type 0x10/0x11 with no ACK; object messages are (10 << 8) | type.
        assert_eq!(
            seqs,
            vec![
                (7, 0x10, false),
                (8, 0x0a00, true),
                (9, 0x0a02, true),
                (10, 0x11, false)
            ]
        );
    }

    #[test]
    fn large_blocklists_are_split_into_messages_under_64k() {
        let ranges: Vec<(u32, u32)> = (0..5000u32).map(|i| (i * 4 + 1, i * 4 + 1)).collect();
        let set = Ruleset {
            blocked_v4: ranges,
            ..Default::default()
        };
        let parts = build_apply(&set, &[], true);
        let element_parts: Vec<_> = parts
            .iter()
            .filter(|p| p.what.starts_with("NEWSETELEM blocked_v4"))
            .collect();
        assert_eq!(element_parts.len(), 11);
        assert!(element_parts
            .iter()
            .all(|p| p.message.buffer_len() < 65_000));
    }

    #[test]
    fn answers_are_read_from_a_buffer() {
        // Two NLMSG_ERROR messages: an ACK for seq 5 and EPERM for seq 6.
        let mut buf = Vec::new();
        for (seq, code) in [(5u32, 0i32), (6, -1)] {
            buf.extend(36u32.to_ne_bytes());
            buf.extend(2u16.to_ne_bytes());
            buf.extend(0u16.to_ne_bytes());
            buf.extend(seq.to_ne_bytes());
            buf.extend(0u32.to_ne_bytes());
            buf.extend(code.to_ne_bytes());
            buf.extend([0u8; 16]);
        }
        assert_eq!(answers(&buf), vec![(5, 0), (6, -1)]);
        assert_eq!(answers(&buf[..10]), vec![]);
    }
}
