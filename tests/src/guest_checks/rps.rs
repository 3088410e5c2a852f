//! The `rps` check of guest-checks (a module of that binary: `super` is guest-checks.rs).
//!
//! One dut rx queue keeps its CPU busier than the daemon's threshold (70% here, raised
//! until the queue gets there: see [`BULK_RATES`]): a single UDP flow from the host side (so
//! the sender runs on no vCPU), with every dut IRQ on CPU 2 (node 1, the NIC's node, so the
//! policy has no locality move to make first). The daemon must spread that queue with
//! `rps_cpus` over idle node-1 CPUs and say why; when the flow slows to a trickle it must
//! take RPS back off; `balancer restore` then leaves every rx queue's `rps_cpus` as found.
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use balancer_tests::host_traffic::{Flow, HostTraffic};

use super::{DUT_ADDR, Guest, IP, Outcome, PORT, pin_this_thread, read_trimmed, run};

/// Datagrams per second of the bulk flow, tried in turn until one loads the queue's CPU past
/// [`SATURATED`]. What a TCG vCPU takes depends on the host's speed that day: 40,000/s
/// saturated it in the CIs of 2026-12-01 and kept it at 35-56% on 2026-12-02, when the
/// daemon rightly set no RPS and the check failed. The host side sends at most
/// `MAX_TOTAL_PPS` (200,000/s).
const BULK_RATES: [u32; 3] = [40_000, 80_000, 160_000];
/// CPU 2's non-idle share (/proc/stat) that counts as loaded enough: above the `threshold`
/// and `rps-threshold` the check's daemon runs with, [`RPS_AT`]. 7.x took 160,000/s at 86%
/// busy on a fast host day, short of the default 90%.
const SATURATED: f64 = 0.8;
/// The check's `threshold` and `rps-threshold` (%): the rule is the default's, at a level a
/// TCG queue reaches on every kernel.
const RPS_AT: u32 = 70;
/// The trickle after it: far below `rps-off`.
const TRICKLE_PPS: u32 = 100;
/// How long the daemon gets for each step.
const STEP_TIMEOUT: Duration = Duration::from_secs(90);

pub(super) fn rps(g: &mut Guest) -> Result<Outcome> {
    let dev = g.dut.name.clone();
    let bin = g.args.balancer.clone();
    let queues: Vec<usize> = g.dut.input_irqs.keys().copied().collect();
    let rps_path = |q: usize| format!("/sys/class/net/{dev}/queues/rx-{q}/rps_cpus");
    if !std::path::Path::new(&rps_path(0)).exists() {
        return Ok(Outcome::Skip(format!(
            "{} is missing: the kernel has no RPS (CONFIG_RPS)",
            rps_path(0)
        )));
    }
    let irqs = g.dut.all_irqs();
    let original_aff: BTreeMap<u32, String> = irqs
        .iter()
        .map(|i| Ok((*i, read_trimmed(&format!("/proc/irq/{i}/smp_affinity"))?)))
        .collect::<Result<_>>()?;
    let original_rps: BTreeMap<usize, String> = queues
        .iter()
        .map(|q| Ok((*q, read_trimmed(&rps_path(*q))?)))
        .collect::<Result<_>>()?;
    for i in &irqs {
        fs::write(format!("/proc/irq/{i}/smp_affinity"), "4")
            .with_context(|| format!("pointing IRQ {i} at CPU 2"))?;
    }
    let dir = PathBuf::from("/tmp/balancer-rps-check");
    fs::create_dir_all(&dir)?;
    let journal = dir.join("journal.json");
    let config = dir.join("balancer.toml");
    let metrics = "127.0.0.1:9718";
    run(Command::new(IP).args(["link", "set", "lo", "up"]))?;
    // Every IRQ but the dut's rx queues stays where it is: the check is about RPS, and a
    // tx or generator IRQ moving onto CPU 3 would take the idle CPU RPS needs.
    let mut banned: Vec<u32> = super::generator_irqs(&g.dut)?;
    banned.extend(g.dut.output_irqs.values());
    fs::write(
        &config,
        format!(
            "short-interval = 1\nlong-interval = 2\nmetrics = \"{metrics}\"\n\
             log-level = \"debug\"\nbanned-irqs = {banned:?}\nmeasure-share = 1\n\
             threshold = {RPS_AT}\nrps-threshold = {RPS_AT}\n\
             journal = \"{}\"\nlock-file = \"{}\"\n",
            journal.display(),
            dir.join("lock").display()
        ),
    )?;
    // The test and the daemon on CPU 1 (node 0): node 1 carries the dut's queues only.
    pin_this_thread(&[1])?;
    let all_cpus: Vec<usize> = (0..64).collect();
    let result = (|| -> Result<Outcome> {
        let (bulk, queue) = bulk_flow(&g.dut.input_irqs)?;
        let mut daemon = Command::new(&bin)
            .args(["daemon", "--foreground", "--force", "--config"])
            .arg(&config)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("starting balancer daemon")?;
        let log_reader = {
            let err = daemon.stderr.take().context("the daemon's stderr")?;
            thread::spawn(move || {
                use std::io::Read as _;
                let mut s = String::new();
                let _ = std::io::BufReader::new(err).read_to_string(&mut s);
                s
            })
        };
        // Ok(Err(why)): no rate loaded the queue's CPU enough, a SKIP.
        let steps = (|| -> Result<Result<String, String>> {
            // Probes attach while nothing flows (see daemon_balances).
            super::wait_metrics(metrics, |m| m.intervals >= 1, Duration::from_secs(60))?;
            let (traffic, pps, tried) = match saturating_flow(bulk, &dev, &rps_path(queue))? {
                Ok(found) => found,
                Err(why) => return Ok(Err(why)),
            };
            let started = Instant::now();
            let on = wait_for(STEP_TIMEOUT, || {
                let v = read_trimmed(&rps_path(queue))?;
                Ok((mask_nonzero(&v)).then_some(v))
            });
            let sent = traffic.stop()?;
            let on = on.with_context(|| {
                format!("rx-{queue} never got rps_cpus under {pps}/s ({sent} sent; {tried})")
            })?;
            let on_secs = started.elapsed().as_secs_f64();
            let started = Instant::now();
            let trickle = HostTraffic::start(
                DUT_ADDR,
                &[Flow {
                    pps: TRICKLE_PPS,
                    ..bulk
                }],
            )?;
            let off = wait_for(STEP_TIMEOUT, || {
                let v = read_trimmed(&rps_path(queue))?;
                Ok((!mask_nonzero(&v)).then_some(v))
            });
            let off_secs = started.elapsed().as_secs_f64();
            trickle.stop()?;
            off.with_context(|| {
                format!("rx-{queue} kept rps_cpus {on} after the flow fell to {TRICKLE_PPS}/s")
            })?;
            Ok(Ok(format!(
                "rx-{queue} under one {pps}/s flow ({tried}) got rps_cpus {on} after \
                 {on_secs:.0} s, cleared {off_secs:.0} s after it fell to {TRICKLE_PPS}/s"
            )))
        })();
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
        let status = daemon.wait()?;
        let log = log_reader.join().unwrap_or_default();
        println!("--- balancer daemon (rps) ---\n{log}---");
        let detail = match steps? {
            Ok(detail) => detail,
            Err(why) => return Ok(Outcome::Skip(why)),
        };
        if !status.success() {
            bail!("the daemon exited with {status}: {detail}");
        }
        // The reason, as the daemon logged it with its action.
        let why = log
            .lines()
            .find(|l| l.contains(&format!("rx-{queue}")) && l.contains("more than one CPU"))
            .with_context(|| format!("no reason for rx-{queue}'s RPS in the daemon's log"))?;
        let off_why = log
            .lines()
            .find(|l| l.contains(&format!("rx-{queue}")) && l.contains("RPS off"))
            .with_context(|| format!("no reason for rx-{queue}'s RPS off in the log"))?;
        // Restore from the journal: every queue's rps_cpus as found.
        let out = Command::new(&bin)
            .args(["restore", "--config"])
            .arg(&config)
            .output()
            .context("running balancer restore")?;
        let mut wrong = Vec::new();
        for (q, was) in &original_rps {
            let now = read_trimmed(&rps_path(*q))?;
            if !same_mask(&now, was) {
                wrong.push(format!("rx-{q} {was} -> {now}"));
            }
        }
        if !wrong.is_empty() {
            bail!(
                "after restore ({}; {}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                wrong.join(", ")
            );
        }
        Ok(Outcome::Pass(format!(
            "{detail}; the daemon said \"{}\" and \"{}\"; after restore every rx queue's \
             rps_cpus is as found",
            why.trim(),
            off_why.trim()
        )))
    })();
    let _ = pin_this_thread(&all_cpus);
    for (i, mask) in &original_aff {
        let _ = fs::write(format!("/proc/irq/{i}/smp_affinity"), mask);
    }
    for (q, mask) in &original_rps {
        let _ = fs::write(rps_path(*q), mask);
    }
    result
}

/// Starts the bulk flow at each of [`BULK_RATES`] in turn until CPU 2 (the queue's) reads
/// [`SATURATED`] or the queue got RPS already, and leaves that flow running: the flow, its
/// rate and what each rate did. Err: no rate loaded CPU 2 enough, with the figures.
fn saturating_flow(
    bulk: Flow,
    dev: &str,
    rps_path: &str,
) -> Result<std::result::Result<(HostTraffic, u32, String), String>> {
    let (mut tried, mut sent) = (Vec::new(), 0);
    for pps in BULK_RATES {
        let traffic = HostTraffic::start(DUT_ADDR, &[Flow { pps, ..bulk }])?;
        thread::sleep(Duration::from_secs(2));
        let busy = super::measure_load(2, dev, 3.0, None)?.0.share();
        tried.push(format!("CPU 2 {:.0}% busy at {pps}/s", 100.0 * busy));
        if busy >= SATURATED || mask_nonzero(&read_trimmed(rps_path)?) {
            return Ok(Ok((traffic, pps, tried.join(", "))));
        }
        sent = traffic.stop()?;
    }
    Ok(Err(format!(
        "the host's flow could not load CPU 2 past {:.0}% (the daemon's threshold is \
         {RPS_AT}%), so it rightly sets no RPS ({}; {sent} sent at the last rate)",
        100.0 * SATURATED,
        tried.join(", ")
    )))
}

/// A flow from the host whose packets land on one rx queue: source ports are tried until
/// one's packets raise interrupts on a single rx queue's vector (the tap picks the queue by
/// the flow's hash).
fn bulk_flow(input_irqs: &BTreeMap<usize, u32>) -> Result<(Flow, usize)> {
    let mut seen = Vec::new();
    for src_port in 42_000..42_016u16 {
        let flow = Flow {
            src_port,
            dst_port: PORT + 3,
            pps: 200,
            size: 64,
        };
        let before = super::interrupts()?;
        let t = HostTraffic::start(DUT_ADDR, &[flow])?;
        thread::sleep(Duration::from_millis(600));
        t.stop()?;
        let after = super::interrupts()?;
        let got: Vec<(usize, u64)> = input_irqs
            .iter()
            .map(|(q, irq)| {
                let d = after.get(irq).copied().unwrap_or(0);
                (*q, d.saturating_sub(before.get(irq).copied().unwrap_or(0)))
            })
            .filter(|(_, n)| *n > 20)
            .collect();
        if let [(q, _)] = got[..] {
            return Ok((
                Flow {
                    pps: BULK_RATES[0],
                    ..flow
                },
                q,
            ));
        }
        seen.push(format!("{src_port}: {got:?}"));
    }
    bail!(
        "no source port's flow landed on exactly one rx queue (queue, interrupts): {}",
        seen.join("; ")
    )
}

/// Polls `f` every 200 ms until it gives a value or `timeout` passes.
fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Whether a hex CPU mask (`00000000,0000000c`) has any CPU in it.
fn mask_nonzero(mask: &str) -> bool {
    mask.chars().any(|c| c.is_ascii_hexdigit() && c != '0')
}

/// Two hex CPU masks name the same CPUs (widths may differ).
fn same_mask(a: &str, b: &str) -> bool {
    let digits = |m: &str| {
        let s: String = m.chars().filter(char::is_ascii_hexdigit).collect();
        s.trim_start_matches('0').to_lowercase()
    };
    digits(a) == digits(b)
}
