//! The optional Prometheus endpoint (loopback only, off by default): per-CPU loads, per-IRQ
//! weights, moves and sticking events, in the text exposition format.
//!
//! Hand-written: the format is a few lines of `name{labels} value`, and the maintained crate
//! (prometheus-client) would add a registry, atomics and a dependency tree to a daemon that
//! must stay small, for the dozen gauges and counters here. A tiny std HTTP responder serves
//! `GET /metrics` from a thread; anything else gets 404.
use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener},
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::policy::{History, Plan, Snapshot};

/// The latest rendering, shared with the server thread.
pub type Shared = Arc<Mutex<String>>;

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders one interval.
pub fn render(s: &Snapshot, plan: &Plan, h: &History) -> String {
    let mut o = String::new();
    let head = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    head(
        &mut o,
        "balancer_cpu_busy_ratio",
        "gauge",
        "Share of the last interval the CPU was busy.",
    );
    for c in s.cpus.values().filter(|c| c.online) {
        let node = c.node.map(|n| n.to_string()).unwrap_or_default();
        let _ = writeln!(
            o,
            "balancer_cpu_busy_ratio{{cpu=\"{}\",node=\"{node}\"}} {:.6}",
            c.id,
            s.frac(c.busy_ns)
        );
    }
    head(
        &mut o,
        "balancer_cpu_irq_ratio",
        "gauge",
        "Share of the last interval the CPU spent in hardirq and softirq (measured).",
    );
    for c in s.cpus.values().filter(|c| c.online) {
        let node = c.node.map(|n| n.to_string()).unwrap_or_default();
        let _ = writeln!(
            o,
            "balancer_cpu_irq_ratio{{cpu=\"{}\",node=\"{node}\"}} {:.6}",
            c.id,
            s.frac(c.irq_ns)
        );
    }
    head(
        &mut o,
        "balancer_irq_weight_ratio",
        "gauge",
        "CPU time of the IRQ (handler plus the NAPI polls it causes) per second, active IRQs.",
    );
    for i in s
        .irqs
        .values()
        .filter(|i| i.total_ns() > 0 || i.interrupts > 0)
    {
        let _ = writeln!(
            o,
            "balancer_irq_weight_ratio{{irq=\"{}\",name=\"{}\"}} {:.6}",
            i.number,
            esc(&i.name),
            s.frac(i.total_ns())
        );
    }
    head(
        &mut o,
        "balancer_irq_interrupts",
        "gauge",
        "Interrupts of the IRQ in the last interval, active IRQs.",
    );
    for i in s
        .irqs
        .values()
        .filter(|i| i.total_ns() > 0 || i.interrupts > 0)
    {
        let _ = writeln!(
            o,
            "balancer_irq_interrupts{{irq=\"{}\"}} {}",
            i.number, i.interrupts
        );
    }
    let scalar = |o: &mut String, name: &str, kind: &str, help: &str, v: u64| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    };
    scalar(
        &mut o,
        "balancer_moves_total",
        "counter",
        "IRQ moves applied.",
        h.moves,
    );
    scalar(
        &mut o,
        "balancer_sticking_events_total",
        "counter",
        "Times an IRQ started sticking (NAPI polling outside its affinity).",
        h.sticking_events,
    );
    scalar(
        &mut o,
        "balancer_stuck_irqs",
        "gauge",
        "IRQs stuck now.",
        h.stuck.len() as u64,
    );
    scalar(
        &mut o,
        "balancer_unmovable_irqs",
        "gauge",
        "IRQs the kernel refused to move (EIO).",
        h.unmovable.len() as u64,
    );
    scalar(
        &mut o,
        "balancer_overloaded_cpus",
        "gauge",
        "CPUs found overloaded in the last interval.",
        plan.overloaded.len() as u64,
    );
    scalar(
        &mut o,
        "balancer_intervals_total",
        "counter",
        "Intervals measured.",
        h.tick,
    );
    o
}

/// Serves `GET /metrics` on `addr` from a thread.
pub fn serve(addr: SocketAddr, shared: Shared) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else {
                    continue;
                };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 1024];
                let n = stream.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let ok = req.starts_with("GET /metrics ") || req.starts_with("GET / ");
                let body = if ok {
                    shared.lock().map(|s| s.clone()).unwrap_or_default()
                } else {
                    "not found\n".to_string()
                };
                let status = if ok { "200 OK" } else { "404 Not Found" };
                let _ = write!(
                    stream,
                    "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        })?;
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_serves_the_text_format() {
        let s = Snapshot {
            duration_ns: 1_000_000_000,
            ..Snapshot::default()
        };
        let plan = crate::policy::plan(&s, &crate::config::Config::default(), &History::default());
        let h = History {
            moves: 3,
            sticking_events: 1,
            ..History::default()
        };
        let text = render(&s, &plan, &h);
        assert!(text.contains("# TYPE balancer_moves_total counter\nbalancer_moves_total 3\n"));
        assert!(text.contains("balancer_sticking_events_total 1\n"));
        let shared: Shared = Arc::new(Mutex::new(text.clone()));
        let addr = serve("127.0.0.1:0".parse().unwrap(), shared).unwrap();
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).unwrap();
        assert!(got.starts_with("HTTP/1.0 200 OK"));
        assert!(got.ends_with(&text));
    }
}
