//! The netdev generic netlink family (kernel 6.8+): which IRQ and kthread serve each NAPI
//! instance (`napi-get`) and which NAPI instance serves each queue (`queue-get`).
//!
//! The kernel says the IRQ only where the driver recorded it (`netif_napi_set_irq`) and a
//! queue's NAPI only where it called `netif_queue_set_napi`; absent attributes stay `None`.
//! Messages, sockets and attribute framing are rust-netlink's (`netlink-packet-*`,
//! `netlink-sys`); only the family's own attributes are typed here, after
//! `Documentation/netlink/specs/netdev.yaml`.
//!
//! The answer is the network namespace's of the calling thread, as every netlink dump is.
use std::{io, num::NonZeroI32};

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, ErrorContext as _, NLM_F_DUMP, NLM_F_REQUEST,
    NetlinkDeserializable, NetlinkMessage, NetlinkPayload, NetlinkSerializable, Nla, NlaBuffer,
    NlasIterator, Parseable, ParseableParametrized, parse_u32,
};
use netlink_packet_generic::{
    GenlFamily, GenlHeader, GenlMessage,
    ctrl::{GenlCtrl, GenlCtrlCmd, nlas::GenlCtrlAttrs},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_GENERIC};
use serde::Serialize;

/// The family's registered name.
pub const FAMILY: &str = "netdev";
/// Its protocol version (`NETDEV_FAMILY_VERSION`).
const VERSION: u8 = 1;
/// Operation numbers, in the spec's order from 1.
pub const CMD_QUEUE_GET: u8 = 10;
pub const CMD_NAPI_GET: u8 = 11;

// napi attribute set.
const NAPI_IFINDEX: u16 = 1;
const NAPI_ID: u16 = 2;
const NAPI_IRQ: u16 = 3;
const NAPI_PID: u16 = 4;
// queue attribute set.
const QUEUE_ID: u16 = 1;
const QUEUE_IFINDEX: u16 = 2;
const QUEUE_TYPE: u16 = 3;
const QUEUE_NAPI_ID: u16 = 4;
// queue-type enum.
const QUEUE_TYPE_RX: u32 = 0;
const QUEUE_TYPE_TX: u32 = 1;

/// Errors talking to the family. A kernel without it is no error: see [`Netdev::Unavailable`].
#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    #[error("opening a generic netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("{op}: sending the request: {source}")]
    Send {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{op}: receiving the reply: {source}")]
    Recv {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{op}: decoding the reply: {source}")]
    Decode {
        op: &'static str,
        #[source]
        source: DecodeError,
    },
    #[error("{op}: the kernel refused: {source}")]
    Kernel {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("resolving the {FAMILY} family: the reply has no family id")]
    NoFamilyId,
}

/// One NAPI instance as `napi-get` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NapiInfo {
    pub ifindex: u32,
    /// The NAPI id (`napi_struct.napi_id`).
    pub id: u32,
    /// Where the driver recorded the instance's IRQ.
    pub irq: Option<u32>,
    /// The poll kthread (`napi/<dev>-<id>`) when the instance runs threaded.
    pub pid: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    Rx,
    Tx,
    /// A queue type newer than this code.
    Other(u32),
}

/// One queue as `queue-get` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QueueInfo {
    pub ifindex: u32,
    /// Index among the device's queues of this type.
    pub id: u32,
    pub kind: QueueType,
    /// The NAPI instance serving the queue, where the driver said so.
    pub napi_id: Option<u32>,
}

/// Both dumps of one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NetdevDump {
    pub napi: Vec<NapiInfo>,
    pub queues: Vec<QueueInfo>,
}

/// What the kernel could say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Netdev {
    Available(NetdevDump),
    /// The family cannot answer here; the text says why (e.g. a kernel before 6.8).
    Unavailable(String),
}

/// Whether netlink links could be had, and why not, for reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetdevStatus {
    pub(crate) active: bool,
    pub(crate) detail: String,
}

impl NetdevStatus {
    /// What a dump holds, in one line.
    pub(crate) fn of_dump(d: &NetdevDump) -> NetdevStatus {
        let count = |f: &dyn Fn(&NapiInfo) -> bool| d.napi.iter().filter(|n| f(n)).count();
        NetdevStatus {
            active: true,
            detail: format!(
                "netdev netlink family: {} NAPI instances ({} with an IRQ, {} threaded), \
                 {} queues ({} with a NAPI id)",
                d.napi.len(),
                count(&|n| n.irq.is_some()),
                count(&|n| n.pid.is_some()),
                d.queues.len(),
                d.queues.iter().filter(|q| q.napi_id.is_some()).count()
            ),
        }
    }

    pub fn inactive(detail: impl Into<String>) -> NetdevStatus {
        NetdevStatus {
            active: false,
            detail: detail.into(),
        }
    }
}

/// `napi` attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum NapiAttr {
    Ifindex(u32),
    Id(u32),
    Irq(u32),
    Pid(u32),
    /// Attributes not used here (defer-hard-irqs, gro-flush-timeout, newer ones).
    Other(DefaultNla),
}

/// `queue` attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum QueueAttr {
    Id(u32),
    Ifindex(u32),
    Type(u32),
    NapiId(u32),
    /// dmabuf, io-uring, xsk and newer ones.
    Other(DefaultNla),
}

/// Emits a u32 attribute value in host order, as the family's u32s are.
fn emit_u32(buf: &mut [u8], v: u32) {
    buf[..4].copy_from_slice(&v.to_ne_bytes());
}

impl Nla for NapiAttr {
    fn value_len(&self) -> usize {
        match self {
            NapiAttr::Other(n) => n.value_len(),
            _ => 4,
        }
    }
    fn kind(&self) -> u16 {
        match self {
            NapiAttr::Ifindex(_) => NAPI_IFINDEX,
            NapiAttr::Id(_) => NAPI_ID,
            NapiAttr::Irq(_) => NAPI_IRQ,
            NapiAttr::Pid(_) => NAPI_PID,
            NapiAttr::Other(n) => n.kind(),
        }
    }
    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            NapiAttr::Ifindex(v) | NapiAttr::Id(v) | NapiAttr::Irq(v) | NapiAttr::Pid(v) => {
                emit_u32(buf, *v)
            }
            NapiAttr::Other(n) => n.emit_value(buf),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for NapiAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            NAPI_IFINDEX => NapiAttr::Ifindex(parse_u32(v).context("napi ifindex")?),
            NAPI_ID => NapiAttr::Id(parse_u32(v).context("napi id")?),
            NAPI_IRQ => NapiAttr::Irq(parse_u32(v).context("napi irq")?),
            NAPI_PID => NapiAttr::Pid(parse_u32(v).context("napi pid")?),
            _ => NapiAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

impl Nla for QueueAttr {
    fn value_len(&self) -> usize {
        match self {
            QueueAttr::Other(n) => n.value_len(),
            _ => 4,
        }
    }
    fn kind(&self) -> u16 {
        match self {
            QueueAttr::Id(_) => QUEUE_ID,
            QueueAttr::Ifindex(_) => QUEUE_IFINDEX,
            QueueAttr::Type(_) => QUEUE_TYPE,
            QueueAttr::NapiId(_) => QUEUE_NAPI_ID,
            QueueAttr::Other(n) => n.kind(),
        }
    }
    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            QueueAttr::Id(v)
            | QueueAttr::Ifindex(v)
            | QueueAttr::Type(v)
            | QueueAttr::NapiId(v) => emit_u32(buf, *v),
            QueueAttr::Other(n) => n.emit_value(buf),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for QueueAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            QUEUE_ID => QueueAttr::Id(parse_u32(v).context("queue id")?),
            QUEUE_IFINDEX => QueueAttr::Ifindex(parse_u32(v).context("queue ifindex")?),
            QUEUE_TYPE => QueueAttr::Type(parse_u32(v).context("queue type")?),
            QUEUE_NAPI_ID => QueueAttr::NapiId(parse_u32(v).context("queue napi-id")?),
            _ => QueueAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// A message of the family: the two operations used here, requests and replies alike.
#[derive(Clone, Debug, PartialEq, Eq)]
enum NetdevMessage {
    NapiGet(Vec<NapiAttr>),
    QueueGet(Vec<QueueAttr>),
}

impl GenlFamily for NetdevMessage {
    fn family_name() -> &'static str {
        FAMILY
    }
    fn command(&self) -> u8 {
        match self {
            NetdevMessage::NapiGet(_) => CMD_NAPI_GET,
            NetdevMessage::QueueGet(_) => CMD_QUEUE_GET,
        }
    }
    fn version(&self) -> u8 {
        VERSION
    }
}

impl Emitable for NetdevMessage {
    fn buffer_len(&self) -> usize {
        match self {
            NetdevMessage::NapiGet(a) => a.as_slice().buffer_len(),
            NetdevMessage::QueueGet(a) => a.as_slice().buffer_len(),
        }
    }
    fn emit(&self, buf: &mut [u8]) {
        match self {
            NetdevMessage::NapiGet(a) => a.as_slice().emit(buf),
            NetdevMessage::QueueGet(a) => a.as_slice().emit(buf),
        }
    }
}

fn parse_attrs<A>(buf: &[u8]) -> Result<Vec<A>, DecodeError>
where
    A: for<'a> Parseable<NlaBuffer<&'a [u8]>>,
{
    NlasIterator::new(buf)
        .map(|nla| nla.and_then(|nla| A::parse(&nla)))
        .collect()
}

impl ParseableParametrized<[u8], GenlHeader> for NetdevMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        match header.cmd {
            CMD_NAPI_GET => Ok(NetdevMessage::NapiGet(
                parse_attrs(buf).context("napi-get attributes")?,
            )),
            CMD_QUEUE_GET => Ok(NetdevMessage::QueueGet(
                parse_attrs(buf).context("queue-get attributes")?,
            )),
            cmd => Err(DecodeError::from(format!(
                "unexpected netdev command {cmd}"
            ))),
        }
    }
}

impl NapiInfo {
    /// The instance an attribute list describes; `None` without an id.
    fn from_attrs(attrs: &[NapiAttr]) -> Option<NapiInfo> {
        let mut n = NapiInfo::default();
        let mut id = None;
        for a in attrs {
            match a {
                NapiAttr::Ifindex(v) => n.ifindex = *v,
                NapiAttr::Id(v) => id = Some(*v),
                NapiAttr::Irq(v) => n.irq = Some(*v),
                NapiAttr::Pid(v) => n.pid = Some(*v),
                NapiAttr::Other(_) => {}
            }
        }
        n.id = id?;
        Some(n)
    }
}

impl QueueInfo {
    /// The queue an attribute list describes; `None` without an id or a type.
    fn from_attrs(attrs: &[QueueAttr]) -> Option<QueueInfo> {
        let (mut id, mut kind, mut ifindex, mut napi_id) = (None, None, 0, None);
        for a in attrs {
            match a {
                QueueAttr::Id(v) => id = Some(*v),
                QueueAttr::Ifindex(v) => ifindex = *v,
                QueueAttr::Type(v) => {
                    kind = Some(match *v {
                        QUEUE_TYPE_RX => QueueType::Rx,
                        QUEUE_TYPE_TX => QueueType::Tx,
                        other => QueueType::Other(other),
                    })
                }
                QueueAttr::NapiId(v) => napi_id = Some(*v),
                QueueAttr::Other(_) => {}
            }
        }
        Some(QueueInfo {
            ifindex,
            id: id?,
            kind: kind?,
            napi_id,
        })
    }
}

/// Every netlink message in one datagram, in order.
fn messages<I>(datagram: &[u8], op: &'static str) -> Result<Vec<NetlinkMessage<I>>, NetdevError>
where
    I: NetlinkDeserializable,
{
    let mut out = Vec::new();
    let mut at = 0;
    while at < datagram.len() {
        let msg = NetlinkMessage::<I>::deserialize(&datagram[at..])
            .map_err(|source| NetdevError::Decode { op, source })?;
        let len = msg.header.length as usize;
        if len == 0 {
            break;
        }
        // Messages in a datagram start at 4-byte boundaries.
        at += len.div_ceil(4) * 4;
        out.push(msg);
    }
    Ok(out)
}

fn kernel_error(op: &'static str, code: NonZeroI32) -> NetdevError {
    NetdevError::Kernel {
        op,
        source: io::Error::from_raw_os_error(-code.get()),
    }
}

/// The payloads of a dump's replies (its datagrams one after another), up to its end.
fn parse_dump(replies: &[u8], op: &'static str) -> Result<Vec<NetdevMessage>, NetdevError> {
    let mut out = Vec::new();
    for msg in messages::<GenlMessage<NetdevMessage>>(replies, op)? {
        match msg.payload {
            NetlinkPayload::InnerMessage(m) => out.push(m.payload),
            NetlinkPayload::Error(e) => {
                if let Some(code) = e.code {
                    return Err(kernel_error(op, code));
                }
            }
            NetlinkPayload::Done(_) => return Ok(out),
            _ => {}
        }
    }
    Err(NetdevError::Decode {
        op,
        source: DecodeError::from("the dump ended without NLMSG_DONE"),
    })
}

/// The `napi-get` dump's instances.
pub(crate) fn parse_napi_dump(replies: &[u8]) -> Result<Vec<NapiInfo>, NetdevError> {
    Ok(parse_dump(replies, "napi-get")?
        .iter()
        .filter_map(|m| match m {
            NetdevMessage::NapiGet(a) => NapiInfo::from_attrs(a),
            NetdevMessage::QueueGet(_) => None,
        })
        .collect())
}

/// The `queue-get` dump's queues.
pub(crate) fn parse_queue_dump(replies: &[u8]) -> Result<Vec<QueueInfo>, NetdevError> {
    Ok(parse_dump(replies, "queue-get")?
        .iter()
        .filter_map(|m| match m {
            NetdevMessage::QueueGet(a) => QueueInfo::from_attrs(a),
            NetdevMessage::NapiGet(_) => None,
        })
        .collect())
}

/// The family id in the controller's reply; `Ok(None)` when the kernel has no such family.
fn parse_family_reply(datagram: &[u8]) -> Result<Option<u16>, NetdevError> {
    const OP: &str = RESOLVE;
    for msg in messages::<GenlMessage<GenlCtrl>>(datagram, OP)? {
        match msg.payload {
            NetlinkPayload::InnerMessage(m) => {
                return m
                    .payload
                    .nlas
                    .iter()
                    .find_map(|a| match a {
                        GenlCtrlAttrs::FamilyId(id) => Some(Some(*id)),
                        _ => None,
                    })
                    .ok_or(NetdevError::NoFamilyId);
            }
            NetlinkPayload::Error(e) => match e.code {
                Some(code) if -code.get() == libc::ENOENT => return Ok(None),
                Some(code) => return Err(kernel_error(OP, code)),
                None => {}
            },
            _ => {}
        }
    }
    Err(NetdevError::NoFamilyId)
}

const RESOLVE: &str = "resolving the netdev family";

/// A generic netlink socket in the calling thread's network namespace.
pub struct NetdevSocket {
    socket: Socket,
    family: u16,
    seq: u32,
}

/// Receive buffer: the kernel fills dump datagrams up to about 32 KiB.
const RECV_BUF: usize = 64 * 1024;

impl NetdevSocket {
    /// Opens a socket and resolves the family; `Ok(None)` when this kernel has none.
    pub fn open() -> Result<Option<NetdevSocket>, NetdevError> {
        let (mut s, reply) = NetdevSocket::ask_family(FAMILY)?;
        match parse_family_reply(&reply)? {
            Some(id) => {
                s.family = id;
                Ok(Some(s))
            }
            None => Ok(None),
        }
    }

    /// The controller's raw reply to resolving the family `name` (fixtures, tests).
    pub fn family_reply_raw(name: &str) -> Result<Vec<u8>, NetdevError> {
        Ok(NetdevSocket::ask_family(name)?.1)
    }

    fn ask_family(name: &str) -> Result<(NetdevSocket, Vec<u8>), NetdevError> {
        let mut socket = Socket::new(NETLINK_GENERIC).map_err(NetdevError::Socket)?;
        socket.bind_auto().map_err(NetdevError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetdevError::Socket)?;
        let mut s = NetdevSocket {
            socket,
            family: 0,
            seq: 0,
        };
        let mut msg = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(name.to_string())],
        });
        msg.finalize();
        // No ACK flag: a reply or an error comes either way, and a separate ACK would be
        // left in the socket for the first dump to read.
        s.send(msg, NLM_F_REQUEST, RESOLVE)?;
        let reply = s.recv(RESOLVE)?;
        Ok((s, reply))
    }

    fn send<F>(
        &mut self,
        msg: GenlMessage<F>,
        flags: u16,
        op: &'static str,
    ) -> Result<(), NetdevError>
    where
        F: GenlFamily + Emitable + std::fmt::Debug,
        GenlMessage<F>: NetlinkSerializable,
    {
        let mut nl = NetlinkMessage::from(msg);
        self.seq = self.seq.wrapping_add(1);
        nl.header.flags = flags;
        nl.header.sequence_number = self.seq;
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .map_err(|source| NetdevError::Send { op, source })?;
        Ok(())
    }

    fn recv(&self, op: &'static str) -> Result<Vec<u8>, NetdevError> {
        let mut buf = Vec::with_capacity(RECV_BUF);
        let n = self
            .socket
            .recv(&mut buf, 0)
            .map_err(|source| NetdevError::Recv { op, source })?;
        if n > buf.len() {
            return Err(NetdevError::Recv {
                op,
                source: io::Error::other(format!("datagram of {n} bytes truncated")),
            });
        }
        Ok(buf)
    }

    /// Sends a dump request and returns its reply datagrams one after another, up to
    /// NLMSG_DONE or an error: the bytes [`parse_napi_dump`] and [`parse_queue_dump`] read.
    pub fn dump_raw(&mut self, cmd: u8) -> Result<Vec<u8>, NetdevError> {
        let (payload, op) = match cmd {
            CMD_NAPI_GET => (NetdevMessage::NapiGet(Vec::new()), "napi-get"),
            _ => (NetdevMessage::QueueGet(Vec::new()), "queue-get"),
        };
        let mut msg = GenlMessage::from_payload(payload);
        msg.set_resolved_family_id(self.family);
        self.send(msg, NLM_F_REQUEST | NLM_F_DUMP, op)?;
        let mut out = Vec::new();
        loop {
            let d = self.recv(op)?;
            let end = messages::<GenlMessage<NetdevMessage>>(&d, op)?
                .iter()
                .any(|m| {
                    matches!(
                        m.payload,
                        NetlinkPayload::Done(_) | NetlinkPayload::Error(_)
                    )
                });
            out.extend_from_slice(&d);
            if end {
                return Ok(out);
            }
        }
    }

    /// Both dumps.
    pub fn dump(&mut self) -> Result<NetdevDump, NetdevError> {
        let napi = parse_napi_dump(&self.dump_raw(CMD_NAPI_GET)?)?;
        let queues = parse_queue_dump(&self.dump_raw(CMD_QUEUE_GET)?)?;
        Ok(NetdevDump { napi, queues })
    }
}

/// Reads both dumps in the calling thread's network namespace.
pub fn read() -> Result<Netdev, NetdevError> {
    match NetdevSocket::open()? {
        Some(mut s) => Ok(Netdev::Available(s.dump()?)),
        // Short: reports print it after "not measured: netlink_links: " in 100 columns.
        None => Ok(Netdev::Unavailable(format!(
            "no {FAMILY} generic netlink family in this kernel (6.8+)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use netlink_packet_core::{DoneMessage, ErrorMessage, NetlinkHeader};

    use super::*;

    /// Replies captured on kernel 6.18 inside a network namespace holding one end of a veth
    /// pair with two queues (ifindex 2) and GRO on, before and after `threaded` was set
    /// (`balancer/examples/netdev_capture.rs`).
    fn fixture(name: &str) -> Vec<u8> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/netlink")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn veth_napi_instances_have_no_irq_and_no_thread_until_threaded() {
        let mut napi = parse_napi_dump(&fixture("veth-gro/napi-get.bin")).unwrap();
        napi.sort_by_key(|n| n.id);
        let expect = |id, pid| NapiInfo {
            ifindex: 2,
            id,
            irq: None,
            pid,
        };
        assert_eq!(napi, vec![expect(260, None), expect(261, None)]);

        let mut threaded = parse_napi_dump(&fixture("veth-threaded/napi-get.bin")).unwrap();
        threaded.sort_by_key(|n| n.id);
        assert_eq!(
            threaded,
            vec![expect(260, Some(27164)), expect(261, Some(27163))]
        );
    }

    #[test]
    fn veth_queues_are_listed_without_napi() {
        let q = parse_queue_dump(&fixture("veth-gro/queue-get.bin")).unwrap();
        let kinds: Vec<(QueueType, u32)> = q.iter().map(|q| (q.kind, q.id)).collect();
        assert_eq!(
            kinds,
            vec![
                (QueueType::Rx, 0),
                (QueueType::Rx, 1),
                (QueueType::Tx, 0),
                (QueueType::Tx, 1)
            ]
        );
        assert!(q.iter().all(|q| q.ifindex == 2 && q.napi_id.is_none()));
    }

    #[test]
    fn family_resolves_or_is_missing() {
        let id = parse_family_reply(&fixture("family-netdev.bin")).unwrap();
        assert!(id.is_some_and(|id| id > 0x10), "{id:?}");
        // ENOENT: the kernel has no such family, a normal outcome.
        assert_eq!(
            parse_family_reply(&fixture("family-missing.bin")).unwrap(),
            None
        );
    }

    #[test]
    fn a_dump_cut_before_its_end_is_an_error() {
        let bytes = fixture("veth-gro/napi-get.bin");
        // The last message is NLMSG_DONE (20 bytes).
        let cut = &bytes[..bytes.len() - 20];
        let err = parse_napi_dump(cut).unwrap_err();
        assert!(
            matches!(err, NetdevError::Decode { op: "napi-get", .. }),
            "{err}"
        );
        // A message cut in the middle does not parse either.
        assert!(parse_napi_dump(&bytes[..30]).is_err());
    }

    fn serialize<I: NetlinkSerializable + std::fmt::Debug>(payload: NetlinkPayload<I>) -> Vec<u8> {
        let mut m = NetlinkMessage::new(NetlinkHeader::default(), payload);
        m.finalize();
        let mut buf = vec![0u8; m.buffer_len()];
        m.serialize(&mut buf);
        buf
    }

    fn genl(m: NetdevMessage) -> NetlinkPayload<GenlMessage<NetdevMessage>> {
        let mut g = GenlMessage::from_payload(m);
        g.set_resolved_family_id(0x20);
        NetlinkPayload::InnerMessage(g)
    }

    /// A driver that links queues to NAPI instances (virtio_net on 7.x) and records IRQs
    /// (mlx5): the attributes veth leaves out decode too; unknown ones are skipped.
    #[test]
    fn queue_napi_ids_and_irqs_decode() {
        let mut bytes = serialize(genl(NetdevMessage::QueueGet(vec![
            QueueAttr::Id(3),
            QueueAttr::Type(QUEUE_TYPE_RX),
            QueueAttr::NapiId(8195),
            QueueAttr::Ifindex(4),
            QueueAttr::Other(DefaultNla::new(9, vec![1, 2, 3, 4])),
        ])));
        bytes.extend(serialize(genl(NetdevMessage::QueueGet(vec![
            QueueAttr::Id(0),
            QueueAttr::Type(7),
            QueueAttr::Ifindex(4),
        ]))));
        bytes.extend(serialize::<GenlMessage<NetdevMessage>>(
            NetlinkPayload::Done(DoneMessage::default()),
        ));
        let q = parse_queue_dump(&bytes).unwrap();
        assert_eq!(
            q,
            vec![
                QueueInfo {
                    ifindex: 4,
                    id: 3,
                    kind: QueueType::Rx,
                    napi_id: Some(8195)
                },
                QueueInfo {
                    ifindex: 4,
                    id: 0,
                    kind: QueueType::Other(7),
                    napi_id: None
                }
            ]
        );

        let mut bytes = serialize(genl(NetdevMessage::NapiGet(vec![
            NapiAttr::Id(8195),
            NapiAttr::Ifindex(4),
            NapiAttr::Irq(52),
        ])));
        bytes.extend(serialize::<GenlMessage<NetdevMessage>>(
            NetlinkPayload::Done(DoneMessage::default()),
        ));
        assert_eq!(
            parse_napi_dump(&bytes).unwrap(),
            vec![NapiInfo {
                ifindex: 4,
                id: 8195,
                irq: Some(52),
                pid: None
            }]
        );
    }

    #[test]
    fn a_refused_dump_names_the_errno() {
        let mut e = ErrorMessage::default();
        e.code = NonZeroI32::new(-libc::EPERM);
        let bytes = serialize::<GenlMessage<NetdevMessage>>(NetlinkPayload::Error(e));
        let err = parse_queue_dump(&bytes).unwrap_err();
        match &err {
            NetdevError::Kernel { op, source } => {
                assert_eq!(*op, "queue-get");
                assert_eq!(source.raw_os_error(), Some(libc::EPERM));
            }
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("queue-get"), "{err}");
    }
}
