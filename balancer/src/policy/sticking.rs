//! The one sticking rule: which NAPI instances poll away from their IRQ while it is quiet.
//! The plan reports and acts on what [`stuck`] finds, and the views (`top`) show the same
//! list, so the two cannot disagree.
//!
//! While a queue is saturated its NAPI instance stays scheduled (interrupts off) on the CPU
//! where it was scheduled, whatever `smp_affinity` now says: the IRQ's interrupts go where
//! it was sent, and it takes almost none, while the work stays where it was. A stray poll
//! after a move, or a queue that drained and interrupts again, is not sticking.
use super::{MIN_WEIGHT, Snapshot};
use crate::cpumask::CpuSet;

/// A NAPI instance is stuck when more than this share of its poll time is outside its IRQ's
/// effective affinity...
const STUCK_SHARE: f64 = 0.5;
/// ...and its IRQ took fewer interrupts than this share of those polls ("none of its own":
/// a stray interrupt from a moment the queue drained does not unstick it)...
const STUCK_IRQ_PER_POLL: f64 = 0.01;
/// ...or no more than this many a second: a queue whose packets each cost much polls only
/// tens of times a second, where one stray interrupt is more than 1% of its polls (the VM
/// check's tapped queue on 6.x-bpo: 1 interrupt to about 50 polls in 1.2 s, its polls still
/// all on the old CPU, read as unstuck, and a light IRQ was moved off that CPU and back).
const STRAY_IRQS_PER_SEC: f64 = 1.0;
/// Untimed (threaded) polls per second outside the IRQ's CPUs that count as sticking.
const MIN_UNTIMED_POLLS: f64 = 50.0;

/// A stuck NAPI instance, as [`stuck`] finds it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Stuck {
    pub(crate) irq: u32,
    /// The CPU outside `home` where it polls most.
    pub(crate) cpu: u32,
    /// Its poll time outside `home`.
    pub(crate) ns: u64,
    /// Its polls outside `home`.
    pub(crate) polls: u64,
    /// Whether the polls were timed (in softirq); threaded polls are judged by count.
    pub(crate) timed: bool,
    /// Where its IRQ's interrupts go ([`super::IrqSnap::home`]).
    pub(crate) home: CpuSet,
    /// Its device and `napi_id`, when known.
    pub(crate) napi: Option<(String, u32)>,
    pub(crate) threaded: bool,
}

/// Every stuck NAPI instance of the interval, in the snapshot's order. Pure: a function of
/// the snapshot only.
pub(crate) fn stuck(s: &Snapshot) -> Vec<Stuck> {
    let mut out = Vec::new();
    for napi in &s.napi {
        let Some(irq) = napi.irq.and_then(|n| s.irqs.get(&n)) else {
            continue;
        };
        let home = irq.home();
        if home.is_empty() {
            continue;
        }
        let total_ns: u64 = napi.per_cpu.values().map(|p| p.ns).sum();
        let total_polls: u64 = napi.per_cpu.values().map(|p| p.polls).sum();
        let outside: Vec<(u32, u64, u64)> = napi
            .per_cpu
            .iter()
            .filter(|(c, _)| !home.contains(**c))
            .map(|(c, p)| (*c, p.ns, p.polls))
            .collect();
        let out_ns: u64 = outside.iter().map(|(_, ns, _)| ns).sum();
        let out_polls: u64 = outside.iter().map(|(_, _, polls)| polls).sum();
        // Polls outside softirq (threaded NAPI) have no measured duration: judge those by
        // their count.
        let (share, significant) = if total_ns > 0 {
            (
                out_ns as f64 / total_ns as f64,
                s.frac(out_ns) >= MIN_WEIGHT,
            )
        } else if total_polls > 0 {
            (
                out_polls as f64 / total_polls as f64,
                out_polls as f64 >= MIN_UNTIMED_POLLS * s.duration_ns as f64 / 1e9,
            )
        } else {
            continue;
        };
        // A threaded instance polls wherever its kthread runs, interrupts or not: away from
        // its IRQ it is stuck in the sense that matters (its load is not where the IRQ is),
        // and pinning the kthread is the fix.
        let strays = (STUCK_IRQ_PER_POLL * out_polls as f64)
            .max(STRAY_IRQS_PER_SEC * s.duration_ns as f64 / 1e9);
        let quiet = napi.threaded || irq.interrupts as f64 <= strays;
        if share <= STUCK_SHARE || !significant || !quiet {
            continue;
        }
        let Some((cpu, _, _)) = outside.iter().max_by_key(|(_, ns, polls)| (*ns, *polls)) else {
            continue;
        };
        out.push(Stuck {
            irq: irq.number,
            cpu: *cpu,
            ns: out_ns,
            polls: out_polls,
            timed: total_ns > 0,
            home,
            napi: napi.napi_id.map(|id| (napi.device.clone(), id)),
            threaded: napi.threaded,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::{Attribution, Linker, testdata};

    /// A threaded instance whose kthread polls on CPU 2, timed (the probe times threaded
    /// polls from the kthread's switch-in), while its IRQ 36 is handled on CPU 0: stuck by
    /// its task time. (Built from the attribution: before, the snapshot kept only softirq
    /// time and untimed polls, so timed threaded polls were invisible to this rule.)
    #[test]
    fn timed_threaded_polls_away_from_the_irq_are_stuck() {
        let mut model = testdata::vm_model();
        if let Some(d) = model.netdevs.get_mut("eth1") {
            d.threaded = Some(true);
        }
        let mut iv = testdata::interval();
        let p = iv
            .napi
            .get_mut(&(testdata::X, 2))
            .expect("queue 0 on CPU 2");
        // The kernel counts a poll outside NET_RX as untimed and, timed, again as threaded.
        (p.polls, p.ns, p.untimed_polls) = (0, 0, 5_000);
        (p.threaded_polls, p.threaded_ns) = (5_000, 30_000_000);
        let links = Linker::default().links(&iv.napi_identity, &model);
        let a = Attribution::build(&iv, &model, &links);
        let stuck = stuck(&crate::policy::Snapshot::build(&model, &a));
        let st = stuck.iter().find(|s| s.irq == 36).expect("IRQ 36 stuck");
        assert_eq!(
            (st.cpu, st.ns, st.threaded, st.timed),
            (2, 30_000_000, true, true)
        );
    }
}
