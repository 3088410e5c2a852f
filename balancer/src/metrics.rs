//! The optional Prometheus endpoint (loopback only, off by default).
//!
//! [`Metrics`] is the state it serves. The daemon feeds it one [`IntervalView`] per measured
//! interval (views only: the attribution and the policy's snapshot, plan, outcomes and
//! history) and counts its errors and reloads into it; cumulative quantities are accumulated
//! here into counters in base units (seconds, interrupts, polls), so a series lives as long
//! as its IRQ, CPU or netdev does, quiet or not. Each scrape renders the state in the text
//! exposition format 0.0.4, following node_exporter's conventions: units in the names,
//! `_total` on counters, the same label names everywhere (`irq`, `cpu`, `netdev`), and
//! descriptive labels only on the `_info` series, to be joined on.
//!
//! Before the first interval the endpoint answers 200 with the build info, the dry-run gauge
//! and zero counters (`balancer_intervals_total 0`, `balancer_last_interval_timestamp_seconds
//! 0`): the target is up from the start, and "no interval yet" can be told from a dead one.
//!
//! The exposition is written here rather than with prometheus-client: that crate encodes
//! OpenMetrics (counter families named without `_total`, `info` types) which the 0.0.4 text
//! parser of `promtool check metrics` does not take as such, and our values are sums
//! computed once per interval, not atomics updated in place. [`Expo`] keeps the rules the
//! format has: one HELP and TYPE per family, its samples together, escaped label values.
//!
//! The HTTP side ([`Endpoint`], [`http`]) runs hyper on a tokio runtime of its own thread.
pub(crate) mod http;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use balancer_common::{NR_SOFTIRQS, SOFTIRQ_NAMES};

use crate::{
    attribution::{Attribution, BACKLOG_DEVICE},
    policy::{History, Outcome, Plan, Snapshot},
    system::{QueueKind, SystemModel},
};

/// The state, shared between the daemon (writer) and the HTTP thread (renders per scrape).
pub(crate) type Shared = Arc<Mutex<Metrics>>;

/// Where an error the daemon counts happened: the `stage` label of `balancer_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stage {
    /// Measuring an interval failed (probe maps, /proc, /sys).
    Measure,
    /// An action of the plan failed to be written (other than managed IRQs' EIO).
    Apply,
    /// The metrics endpoint could not listen on a new address (SIGHUP).
    MetricsListen,
}

impl Stage {
    const ALL: [Stage; 3] = [Stage::Measure, Stage::Apply, Stage::MetricsListen];

    fn as_str(self) -> &'static str {
        match self {
            Stage::Measure => "measure",
            Stage::Apply => "apply",
            Stage::MetricsListen => "metrics_listen",
        }
    }
}

/// What the daemon has after one interval, read only.
pub(crate) struct IntervalView<'a> {
    pub(crate) model: &'a SystemModel,
    pub(crate) attribution: &'a Attribution,
    pub(crate) snapshot: &'a Snapshot,
    pub(crate) plan: &'a Plan,
    pub(crate) outcomes: &'a [Outcome],
    /// The history after this interval's plan was carried out.
    pub(crate) history: &'a History,
    /// When the interval ended.
    pub(crate) at: SystemTime,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct IrqCpuTotals {
    hardirq_ns: u64,
    softirq_ns: u64,
    interrupts: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct CpuTotals {
    hardirq_ns: u64,
    softirq_ns: [u64; NR_SOFTIRQS],
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct NapiTotals {
    polls: u64,
    packets: u64,
    ns: u64,
}

/// The descriptive labels of an IRQ (`balancer_irq_info`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct IrqInfo {
    name: String,
    device: String,
    driver: String,
    netdev: String,
    queue: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct CpuGauges {
    busy_ratio: f64,
    irq_ratio: f64,
}

/// Everything the endpoint serves.
#[derive(Clone, Debug)]
pub(crate) struct Metrics {
    dry_run: bool,
    intervals: u64,
    /// Unix time of the last interval's end, 0 before the first.
    last_at_s: f64,
    last_len_s: f64,
    irqs: BTreeMap<(u32, u32), IrqCpuTotals>,
    irq_info: BTreeMap<u32, IrqInfo>,
    cpus: BTreeMap<u32, CpuTotals>,
    cpu_node: BTreeMap<u32, Option<u32>>,
    cpu_gauges: BTreeMap<u32, CpuGauges>,
    /// By (netdev, napi_id or "" when unknown, cpu). Kernel addresses stay out of labels.
    napi: BTreeMap<(String, String, u32), NapiTotals>,
    moves: u64,
    sticking_events: u64,
    stuck_irqs: u64,
    unmovable_irqs: u64,
    overloaded_cpus: u64,
    errors: BTreeMap<Stage, u64>,
    reloads: u64,
    reload_failures: u64,
}

impl Metrics {
    pub(crate) fn new(dry_run: bool) -> Metrics {
        Metrics {
            dry_run,
            intervals: 0,
            last_at_s: 0.0,
            last_len_s: 0.0,
            irqs: BTreeMap::new(),
            irq_info: BTreeMap::new(),
            cpus: BTreeMap::new(),
            cpu_node: BTreeMap::new(),
            cpu_gauges: BTreeMap::new(),
            napi: BTreeMap::new(),
            moves: 0,
            sticking_events: 0,
            stuck_irqs: 0,
            unmovable_irqs: 0,
            overloaded_cpus: 0,
            errors: Stage::ALL.iter().map(|s| (*s, 0)).collect(),
            reloads: 0,
            reload_failures: 0,
        }
    }

    pub(crate) fn new_shared(dry_run: bool) -> Shared {
        Arc::new(Mutex::new(Metrics::new(dry_run)))
    }

    pub(crate) fn count_error(&mut self, stage: Stage) {
        *self.errors.entry(stage).or_default() += 1;
    }

    /// A SIGHUP: the config was reloaded, or not (`ok == false`).
    pub(crate) fn count_reload(&mut self, ok: bool) {
        if ok {
            self.reloads += 1;
        } else {
            self.reload_failures += 1;
        }
    }

    /// Adds one interval.
    pub(crate) fn record(&mut self, v: &IntervalView) {
        let a = v.attribution;
        let s = v.snapshot;
        self.intervals += 1;
        self.last_at_s =
            v.at.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
        self.last_len_s = a.duration_ns as f64 / 1e9;

        for load in &a.cpus {
            let t = self.cpus.entry(load.cpu).or_default();
            t.hardirq_ns += load.hardirq_ns;
            for (sum, ns) in t.softirq_ns.iter_mut().zip(load.softirq_ns) {
                *sum += ns;
            }
        }
        for (id, c) in &s.cpus {
            self.cpu_node.insert(*id, c.node);
        }
        // Last-interval shares of the CPUs online now; an offline CPU keeps its counters.
        self.cpu_gauges = s
            .cpus
            .values()
            .filter(|c| c.online)
            .map(|c| {
                (
                    c.id,
                    CpuGauges {
                        busy_ratio: s.frac(c.busy_ns),
                        irq_ratio: s.frac(c.irq_ns),
                    },
                )
            })
            .collect();

        for (n, load) in &a.irqs {
            for (cpu, c) in &load.per_cpu {
                if c.hardirq_ns == 0 && c.softirq_ns == 0 && c.interrupts == 0 {
                    continue;
                }
                let t = self.irqs.entry((*n, *cpu)).or_default();
                t.hardirq_ns += c.hardirq_ns;
                t.softirq_ns += c.softirq_ns;
                t.interrupts += c.interrupts;
            }
        }
        // An IRQ that is gone (hotplug, driver unloaded) takes its series with it; a quiet
        // one keeps them.
        self.irqs.retain(|(n, _), _| s.irqs.contains_key(n));
        self.irq_info = s
            .irqs
            .values()
            .map(|i| {
                let queue = i.queue.map_or(String::new(), |(kind, idx)| {
                    let kind = match kind {
                        QueueKind::Rx => "rx",
                        QueueKind::Tx => "tx",
                        QueueKind::RxTx => "rxtx",
                        QueueKind::Other => "other",
                    };
                    format!("{kind}-{idx}")
                });
                (
                    i.number,
                    IrqInfo {
                        name: i.name.clone(),
                        device: i.device.clone().unwrap_or_default(),
                        driver: i.driver.clone().unwrap_or_default(),
                        netdev: i.netdev.clone().unwrap_or_default(),
                        queue,
                    },
                )
            })
            .collect();

        for n in &a.napi {
            let id = n.napi_id.map(|i| i.to_string()).unwrap_or_default();
            for (cpu, c) in &n.per_cpu {
                let t = self
                    .napi
                    .entry((n.device.clone(), id.clone(), *cpu))
                    .or_default();
                t.polls += c.polls + c.untimed_polls;
                t.packets += c.packets;
                t.ns += c.ns;
            }
        }
        // Netdevs come and go (veth pairs, namespaces): so do their series. The backlog
        // (RPS, loopback) has no netdev and stays.
        self.napi
            .retain(|(dev, _, _), _| dev == BACKLOG_DEVICE || v.model.netdevs.contains_key(dev));

        self.moves = v.history.moves;
        self.sticking_events = v.history.sticking_events;
        self.stuck_irqs = v.history.stuck.len() as u64;
        self.unmovable_irqs = v.history.unmovable.len() as u64;
        self.overloaded_cpus = v.plan.overloaded.len() as u64;
        let failed = v.outcomes.iter().filter(|o| o.error().is_some()).count() as u64;
        *self.errors.entry(Stage::Apply).or_default() += failed;
    }

    /// The exposition.
    // Long (about 235 lines) by design: one family after another, each its name, help and
    // samples, in the order they are served; it reads top to bottom like the output, and
    // split into functions it would only scatter that order.
    pub(crate) fn render(&self) -> String {
        let mut e = Expo::default();
        let ns = |v: u64| v as f64 / 1e9;

        e.family(
            "balancer_build_info",
            Kind::Gauge,
            "The balancer's version, as a label; the value is 1.",
        );
        e.sample("balancer_build_info", &[("version", VERSION)], 1.0);
        e.scalar(
            "balancer_dry_run",
            Kind::Gauge,
            "1 when the daemon runs with --dry-run (decides, writes nothing).",
            f64::from(u8::from(self.dry_run)),
        );
        e.scalar(
            "balancer_intervals_total",
            Kind::Counter,
            "Intervals measured.",
            self.intervals as f64,
        );
        e.scalar(
            "balancer_last_interval_timestamp_seconds",
            Kind::Gauge,
            "Unix time the last interval ended; 0 before the first.",
            self.last_at_s,
        );
        e.scalar(
            "balancer_last_interval_duration_seconds",
            Kind::Gauge,
            "Length of the last interval (short-interval or long-interval); 0 before the first.",
            self.last_len_s,
        );
        e.family(
            "balancer_errors_total",
            Kind::Counter,
            "Errors by stage: measure (an interval lost), apply (a write of a plan failed), \
             metrics_listen (a new metrics address could not be bound).",
        );
        for (stage, n) in &self.errors {
            e.sample(
                "balancer_errors_total",
                &[("stage", stage.as_str())],
                *n as f64,
            );
        }
        e.scalar(
            "balancer_config_reloads_total",
            Kind::Counter,
            "Config reloads (SIGHUP) that took effect.",
            self.reloads as f64,
        );
        e.scalar(
            "balancer_config_reload_failures_total",
            Kind::Counter,
            "Config reloads (SIGHUP) refused: bad file, old config kept.",
            self.reload_failures as f64,
        );

        e.family(
            "balancer_cpu_info",
            Kind::Gauge,
            "A CPU and its NUMA node (empty when unknown); the value is 1.",
        );
        for (cpu, node) in &self.cpu_node {
            let node = node.map(|n| n.to_string()).unwrap_or_default();
            e.sample(
                "balancer_cpu_info",
                &[("cpu", &cpu.to_string()), ("node", &node)],
                1.0,
            );
        }
        e.family(
            "balancer_cpu_hardirq_seconds_total",
            Kind::Counter,
            "Time the CPU spent in IRQ handlers, measured by the probes.",
        );
        for (cpu, t) in &self.cpus {
            e.sample(
                "balancer_cpu_hardirq_seconds_total",
                &[("cpu", &cpu.to_string())],
                ns(t.hardirq_ns),
            );
        }
        e.family(
            "balancer_cpu_softirq_seconds_total",
            Kind::Counter,
            "Time the CPU spent in softirqs by vector (handlers inside excluded), measured.",
        );
        for (cpu, t) in &self.cpus {
            let cpu = cpu.to_string();
            for (name, v) in SOFTIRQ_NAMES.iter().zip(t.softirq_ns) {
                e.sample(
                    "balancer_cpu_softirq_seconds_total",
                    &[("cpu", &cpu), ("vector", name)],
                    ns(v),
                );
            }
        }
        e.family(
            "balancer_cpu_busy_ratio",
            Kind::Gauge,
            "Share of the last interval the CPU was not idle.",
        );
        for (cpu, g) in &self.cpu_gauges {
            e.sample(
                "balancer_cpu_busy_ratio",
                &[("cpu", &cpu.to_string())],
                g.busy_ratio,
            );
        }
        e.family(
            "balancer_cpu_irq_ratio",
            Kind::Gauge,
            "Share of the last interval the CPU spent in hardirq and softirq (measured).",
        );
        for (cpu, g) in &self.cpu_gauges {
            e.sample(
                "balancer_cpu_irq_ratio",
                &[("cpu", &cpu.to_string())],
                g.irq_ratio,
            );
        }

        e.family(
            "balancer_irq_info",
            Kind::Gauge,
            "An IRQ's action names, device, driver, netdev and queue; the value is 1.",
        );
        for (n, i) in &self.irq_info {
            e.sample(
                "balancer_irq_info",
                &[
                    ("irq", &n.to_string()),
                    ("name", &i.name),
                    ("device", &i.device),
                    ("driver", &i.driver),
                    ("netdev", &i.netdev),
                    ("queue", &i.queue),
                ],
                1.0,
            );
        }
        e.family(
            "balancer_irq_seconds_total",
            Kind::Counter,
            "CPU time of the IRQ on the CPU: mode hardirq is its handlers, mode softirq the \
             NET_RX polls of the NAPI instances it schedules.",
        );
        for ((n, cpu), t) in &self.irqs {
            let (n, cpu) = (n.to_string(), cpu.to_string());
            for (mode, v) in [("hardirq", t.hardirq_ns), ("softirq", t.softirq_ns)] {
                e.sample(
                    "balancer_irq_seconds_total",
                    &[("irq", &n), ("cpu", &cpu), ("mode", mode)],
                    ns(v),
                );
            }
        }
        e.family(
            "balancer_irq_interrupts_total",
            Kind::Counter,
            "Interrupts of the IRQ on the CPU (/proc/interrupts).",
        );
        for ((n, cpu), t) in &self.irqs {
            e.sample(
                "balancer_irq_interrupts_total",
                &[("irq", &n.to_string()), ("cpu", &cpu.to_string())],
                t.interrupts as f64,
            );
        }

        type Pick = fn(&NapiTotals) -> f64;
        let napi_families: [(&str, &str, Pick); 3] = [
            (
                "balancer_napi_poll_seconds_total",
                "Time of the NAPI instance's polls on the CPU (napi is its napi_id, empty \
                 when unknown; netdev (no_device) is the RPS/loopback backlog).",
                |t| t.ns as f64 / 1e9,
            ),
            (
                "balancer_napi_polls_total",
                "Polls of the NAPI instance on the CPU, in softirq or in its kthread.",
                |t| t.polls as f64,
            ),
            (
                "balancer_napi_packets_total",
                "Packets the NAPI instance's polls processed on the CPU.",
                |t| t.packets as f64,
            ),
        ];
        for (name, help, pick) in napi_families {
            e.family(name, Kind::Counter, help);
            for ((dev, id, cpu), t) in &self.napi {
                e.sample(
                    name,
                    &[("netdev", dev), ("napi", id), ("cpu", &cpu.to_string())],
                    pick(t),
                );
            }
        }

        e.scalar(
            "balancer_moves_total",
            Kind::Counter,
            "IRQ moves applied.",
            self.moves as f64,
        );
        e.scalar(
            "balancer_sticking_events_total",
            Kind::Counter,
            "Times an IRQ started sticking (NAPI polling outside its affinity).",
            self.sticking_events as f64,
        );
        e.scalar(
            "balancer_stuck_irqs",
            Kind::Gauge,
            "IRQs stuck after the last interval.",
            self.stuck_irqs as f64,
        );
        e.scalar(
            "balancer_unmovable_irqs",
            Kind::Gauge,
            "IRQs the kernel refused to move (EIO: managed).",
            self.unmovable_irqs as f64,
        );
        e.scalar(
            "balancer_overloaded_cpus",
            Kind::Gauge,
            "CPUs found overloaded in the last interval.",
            self.overloaded_cpus as f64,
        );
        e.finish()
    }
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// A text exposition being written. A family's HELP and TYPE are written with its first
/// sample, so families without samples (no IRQ active yet) are left out.
#[derive(Default)]
struct Expo {
    out: String,
    /// HELP and TYPE of the current family, waiting for its first sample.
    pending: Option<String>,
    current: &'static str,
    seen: BTreeSet<&'static str>,
}

impl Expo {
    fn family(&mut self, name: &'static str, kind: Kind, help: &str) {
        // Our own names: a mistake here is a bug, caught by the tests.
        debug_assert!(self.seen.insert(name), "family {name} twice");
        debug_assert_eq!(kind == Kind::Counter, name.ends_with("_total"), "{name}");
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        self.current = name;
        self.pending = Some(format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        debug_assert_eq!(name, self.current, "sample outside its family");
        if let Some(head) = self.pending.take() {
            self.out.push_str(&head);
        }
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = match value {
            v if v.is_nan() => writeln!(self.out, " NaN"),
            v if v.is_infinite() => writeln!(self.out, " {}Inf", if v > 0.0 { '+' } else { '-' }),
            // Display of f64 never uses an exponent and is exact for integers below 2^53.
            v => writeln!(self.out, " {v}"),
        };
    }

    fn scalar(&mut self, name: &'static str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn finish(self) -> String {
        self.out
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The listener, if any, for the configured address; rebinds when it changes.
pub(crate) struct Endpoint {
    shared: Shared,
    /// The configured address and its server.
    server: Option<(SocketAddr, http::Server)>,
}

impl Endpoint {
    pub(crate) fn new(shared: Shared) -> Endpoint {
        Endpoint {
            shared,
            server: None,
        }
    }

    /// Serves on `addr` (`None`: stop serving). An unchanged address keeps its listener; a
    /// new one is bound first and only then the old one closed, so a failed bind leaves the
    /// old one serving, and is counted. Returns the address bound, if a new one was.
    pub(crate) fn set(
        &mut self,
        addr: Option<SocketAddr>,
    ) -> Result<Option<SocketAddr>, EndpointError> {
        if self.server.as_ref().map(|(a, _)| *a) == addr {
            return Ok(None);
        }
        let Some(addr) = addr else {
            self.server = None;
            return Ok(None);
        };
        match http::Server::start(addr, Arc::clone(&self.shared)) {
            Ok(server) => {
                let local = server.local_addr();
                // Dropping the old server closes its listener and connections.
                self.server = Some((addr, server));
                Ok(Some(local))
            }
            Err(source) => {
                if let Ok(mut m) = self.shared.lock() {
                    m.count_error(Stage::MetricsListen);
                }
                Err(EndpointError {
                    addr,
                    still: self.local_addr(),
                    source,
                })
            }
        }
    }

    /// Where it listens now.
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(|(_, s)| s.local_addr())
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "listening on {addr} for metrics: {source}{}",
    still.map(|a| format!(" (still serving on {a})")).unwrap_or_default()
)]
pub(crate) struct EndpointError {
    addr: SocketAddr,
    /// The listener that keeps serving.
    still: Option<SocketAddr>,
    #[source]
    source: std::io::Error,
}
