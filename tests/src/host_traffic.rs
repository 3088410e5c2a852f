//! Traffic into a kernel-VM guest from outside it: a server in the guest's host-side namespace
//! (on the bridge the guest's NICs hang on) sends paced UDP flows to the guest's NIC under test,
//! so the sender burns host CPU, not the guest's vCPUs. The guest asks for traffic over a TCP
//! control connection and stops it by saying so or by closing the connection, so a guest that
//! dies mid-scenario leaves no sender running.
//!
//! Network rule: the server only ever runs inside the namespace the VM harness created for one
//! guest (`xtask/src/vm/netns.rs`), and only sends to addresses on that namespace's bridge.
//!
//! Protocol, one line each way per step: the client sends `flow <dst> <src_port> <dst_port>
//! <pps> <size>` per flow, then `start`; the server answers `started <flows>` or `error <why>`;
//! `stop` (or the client closing) ends the flows and the server answers `sent <datagrams>`.
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};

/// The host side's address on the guest's bridge (the dut is 10.77.0.1, the peer 10.77.0.2).
pub const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
/// The prefix length of the bridge's subnet.
pub const PREFIX_LEN: u8 = 24;
/// The server's TCP control port on [`HOST_ADDR`].
pub const CONTROL_PORT: u16 = 7700;

/// Most datagrams per second the server sends over all flows: the host has two CPUs and the
/// guests run on them.
pub const MAX_TOTAL_PPS: u64 = 200_000;
/// Largest payload: fits one frame on the bridge's 1500-byte MTU.
pub const MAX_SIZE: u16 = 1472;

/// One UDP flow: `pps` datagrams per second of `size` payload bytes from
/// `HOST_ADDR:src_port` to `dst:dst_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub src_port: u16,
    pub dst_port: u16,
    pub pps: u32,
    pub size: u16,
}

/// Flows the host sends while this value lives.
pub struct HostTraffic {
    control: BufReader<TcpStream>,
}

impl HostTraffic {
    /// Asks the host-side server for `flows` to `dst` and returns once they are sending.
    pub fn start(dst: Ipv4Addr, flows: &[Flow]) -> Result<HostTraffic> {
        ensure!(!flows.is_empty(), "no flows asked for");
        let addr = SocketAddr::from(SocketAddrV4::new(HOST_ADDR, CONTROL_PORT));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connecting to the host traffic server at {addr}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut request = String::new();
        for f in flows {
            request.push_str(&format!(
                "flow {dst} {} {} {} {}\n",
                f.src_port, f.dst_port, f.pps, f.size
            ));
        }
        request.push_str("start\n");
        (&stream)
            .write_all(request.as_bytes())
            .context("asking the host for traffic")?;
        let mut control = BufReader::new(stream);
        let answer = read_line(&mut control)?;
        match answer.split_once(' ') {
            Some(("started", _)) => Ok(HostTraffic { control }),
            Some(("error", why)) => bail!("the host traffic server refused: {why}"),
            _ => bail!("the host traffic server answered {answer:?}"),
        }
    }

    /// Whether a traffic server answers (only inside the VM harness's guests).
    pub fn available() -> bool {
        let addr = SocketAddr::from(SocketAddrV4::new(HOST_ADDR, CONTROL_PORT));
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
    }

    /// Stops the flows; returns the datagrams the host sent.
    pub fn stop(mut self) -> Result<u64> {
        self.control
            .get_mut()
            .write_all(b"stop\n")
            .context("telling the host to stop")?;
        let answer = read_line(&mut self.control)?;
        answer
            .strip_prefix("sent ")
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("the host traffic server answered {answer:?}"))
    }
}

fn read_line(r: &mut BufReader<TcpStream>) -> Result<String> {
    let mut line = String::new();
    let n = r
        .read_line(&mut line)
        .context("reading the host traffic server")?;
    ensure!(n > 0, "the host traffic server closed the connection");
    Ok(line.trim_end().to_owned())
}

/// Parses one `flow <dst> <src_port> <dst_port> <pps> <size>` line.
fn parse_flow(line: &str) -> Result<(Ipv4Addr, Flow)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [_, dst, src_port, dst_port, pps, size] = fields[..] else {
        bail!("a flow line has 5 fields: {line:?}");
    };
    let flow = Flow {
        src_port: src_port.parse().context("src_port")?,
        dst_port: dst_port.parse().context("dst_port")?,
        pps: pps.parse().context("pps")?,
        size: size.parse().context("size")?,
    };
    ensure!(flow.pps > 0, "pps must be above 0: {line:?}");
    ensure!(
        (1..=MAX_SIZE).contains(&flow.size),
        "size must be 1..={MAX_SIZE}: {line:?}"
    );
    Ok((dst.parse().context("dst")?, flow))
}

/// Checks a whole request against the limits and the subnet (never another address).
fn check_request(flows: &[(Ipv4Addr, Flow)]) -> Result<()> {
    ensure!(!flows.is_empty(), "no flows");
    let total: u64 = flows.iter().map(|(_, f)| u64::from(f.pps)).sum();
    ensure!(
        total <= MAX_TOTAL_PPS,
        "{total} datagrams/s asked for, at most {MAX_TOTAL_PPS}"
    );
    let net = u32::from(HOST_ADDR) >> (32 - PREFIX_LEN);
    for (dst, _) in flows {
        ensure!(
            u32::from(*dst) >> (32 - PREFIX_LEN) == net && *dst != HOST_ADDR,
            "{dst} is not a guest's address on the bridge"
        );
    }
    Ok(())
}

/// Runs the server on `listen` until killed, one client at a time (one guest per namespace).
pub fn serve(listen: SocketAddrV4) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    eprintln!("host traffic: listening on {listen}");
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(err) => {
                eprintln!("host traffic: accept: {err}");
                continue;
            }
        };
        if let Err(err) = session(stream) {
            eprintln!("host traffic: {err:#}");
        }
    }
    Ok(())
}

fn session(stream: TcpStream) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut flows = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim();
        if line == "start" {
            break;
        }
        match parse_flow(line) {
            Ok(f) => flows.push(f),
            Err(err) => {
                writeln!(writer, "error {err:#}")?;
                return Ok(());
            }
        }
    }
    let sockets = match check_request(&flows).and_then(|()| open(&flows)) {
        Ok(s) => s,
        Err(err) => {
            writeln!(writer, "error {err:#}")?;
            return Ok(());
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || send(sockets, &stop))
    };
    writeln!(writer, "started {}", flows.len())?;
    eprintln!("host traffic: {} flows started", flows.len());
    // Any line or the connection's end stops the flows.
    let mut line = String::new();
    let _ = reader.read_line(&mut line);
    stop.store(true, Ordering::Relaxed);
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("the sender panicked"))?;
    eprintln!("host traffic: stopped after {sent} datagrams");
    // The client may be gone already; nothing to tell then.
    let _ = writeln!(writer, "sent {sent}");
    Ok(())
}

struct Socket {
    sock: UdpSocket,
    to: SocketAddrV4,
    flow: Flow,
    /// Datagrams of the schedule dealt with: sent, dropped by a full queue, or skipped.
    owed: u64,
}

fn open(flows: &[(Ipv4Addr, Flow)]) -> Result<Vec<Socket>> {
    flows
        .iter()
        .map(|(dst, flow)| {
            // Not connected: a connected UDP socket reports the guest's ICMP port-unreachable
            // answers as ECONNREFUSED on a later send, which would drop that datagram.
            let sock = UdpSocket::bind(SocketAddrV4::new(HOST_ADDR, flow.src_port))
                .with_context(|| format!("binding {HOST_ADDR}:{}", flow.src_port))?;
            Ok(Socket {
                sock,
                to: SocketAddrV4::new(*dst, flow.dst_port),
                flow: *flow,
                owed: 0,
            })
        })
        .collect()
}

/// How far behind its schedule a flow may fall before the lost time is dropped rather than
/// caught up in a burst (the host was descheduled, or the guest's queue pushed back).
const MAX_LAG: Duration = Duration::from_millis(50);

/// Sends every flow at its rate until `stop`; returns the datagrams sent.
fn send(mut sockets: Vec<Socket>, stop: &AtomicBool) -> u64 {
    let payload = [0x5au8; MAX_SIZE as usize];
    let mut sent = 0;
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let elapsed = start.elapsed();
        for s in &mut sockets {
            let owed = due(s.flow.pps, elapsed);
            // Time lost beyond MAX_LAG is skipped, not sent later in a burst.
            s.owed = s.owed.max(owed.saturating_sub(due(s.flow.pps, MAX_LAG)));
            while s.owed < owed {
                // A full queue drops the datagram: the schedule moves on (load is the point).
                if s.sock
                    .send_to(&payload[..usize::from(s.flow.size)], s.to)
                    .is_ok()
                {
                    sent += 1;
                }
                s.owed += 1;
            }
        }
        thread::sleep(Duration::from_millis(1));
    }
    sent
}

/// Datagrams a flow of `pps` owes after `t`.
fn due(pps: u32, t: Duration) -> u64 {
    (u128::from(pps) * t.as_micros() / 1_000_000) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_lines_parse_and_are_bounded() {
        let (dst, f) = parse_flow("flow 10.77.0.1 4000 9000 500 64").unwrap();
        assert_eq!(dst, Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(
            f,
            Flow {
                src_port: 4000,
                dst_port: 9000,
                pps: 500,
                size: 64
            }
        );
        assert!(parse_flow("flow 10.77.0.1 4000 9000 0 64").is_err());
        assert!(parse_flow("flow 10.77.0.1 4000 9000 10 1473").is_err());
        assert!(parse_flow("flow 10.77.0.1 4000 9000 10").is_err());
    }

    #[test]
    fn requests_stay_on_the_bridge_and_under_the_rate_cap() {
        let f = Flow {
            src_port: 1,
            dst_port: 2,
            pps: 1000,
            size: 64,
        };
        assert!(check_request(&[(Ipv4Addr::new(10, 77, 0, 1), f)]).is_ok());
        assert!(check_request(&[(Ipv4Addr::new(10, 78, 0, 1), f)]).is_err());
        assert!(check_request(&[(HOST_ADDR, f)]).is_err());
        let big = Flow { pps: 150_000, ..f };
        let two = [(Ipv4Addr::new(10, 77, 0, 1), big); 2];
        assert!(check_request(&two).is_err());
        assert!(check_request(&[]).is_err());
    }

    /// The VM harness starts the server with these (it does not link this crate).
    #[test]
    fn the_harness_serves_where_guests_connect() {
        let harness = include_str!("../../xtask/src/vm/qemu.rs");
        for line in [
            format!("TRAFFIC_ADDR: &str = \"{HOST_ADDR}\";"),
            format!("TRAFFIC_PREFIX: u8 = {PREFIX_LEN};"),
            format!("TRAFFIC_PORT: u16 = {CONTROL_PORT};"),
        ] {
            assert!(harness.contains(&line), "xtask/src/vm/qemu.rs lacks {line}");
        }
    }

    #[test]
    fn the_schedule_owes_pps_per_second() {
        assert_eq!(due(1000, Duration::from_millis(1500)), 1500);
        assert_eq!(due(3, Duration::from_millis(999)), 2);
        assert_eq!(due(200_000, MAX_LAG), 10_000);
    }

    /// A session over loopback: the request check refuses a destination off the bridge before
    /// any socket is opened (only the refusal can run outside a VM harness namespace).
    #[test]
    fn a_request_off_the_bridge_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            session(s).unwrap();
        });
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"flow 192.168.1.1 4000 9000 10 64\nstart\n")
            .unwrap();
        let mut answer = String::new();
        BufReader::new(c).read_line(&mut answer).unwrap();
        assert!(
            answer.starts_with("error 192.168.1.1 is not a guest's address"),
            "{answer}"
        );
        server.join().unwrap();
    }
}
