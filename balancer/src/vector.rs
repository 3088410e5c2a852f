//! The two kinds of vector the views name: softirq vectors (the kernel's `enum softirq`, the
//! `vec` of `irq:softirq_*`) and x86 system vectors (`irq_vectors:*`). The names come from
//! `balancer_common`, where the probe's map indexes are declared; here they get a type, so no
//! view compares or keys by a name string. They serialise as those names.
use std::fmt;

use balancer_common::{NR_SOFTIRQS, NR_SYSVECS, SOFTIRQ_NAMES, SYSVEC_NAMES};
use serde::{Serialize, Serializer, ser::SerializeMap as _};

/// A softirq vector, numbered as the kernel numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Softirq {
    Hi,
    Timer,
    NetTx,
    NetRx,
    Block,
    IrqPoll,
    Tasklet,
    Sched,
    Hrtimer,
    Rcu,
}

impl Softirq {
    /// Every vector, in the kernel's order: `ALL[v]` is vector number `v`.
    pub(crate) const ALL: [Softirq; NR_SOFTIRQS] = [
        Softirq::Hi,
        Softirq::Timer,
        Softirq::NetTx,
        Softirq::NetRx,
        Softirq::Block,
        Softirq::IrqPoll,
        Softirq::Tasklet,
        Softirq::Sched,
        Softirq::Hrtimer,
        Softirq::Rcu,
    ];

    /// The vector number `v`, if the kernel has one.
    pub(crate) fn from_index(v: usize) -> Option<Softirq> {
        Softirq::ALL.get(v).copied()
    }

    /// Its number: the index of the probe's per-vector arrays.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// "NET_RX": the kernel's name (`/proc/softirqs`).
    pub(crate) fn name(self) -> &'static str {
        SOFTIRQ_NAMES[self.index()]
    }
}

impl fmt::Display for Softirq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Softirq {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// One value per softirq vector. Serialises as an object keyed by vector name, in name order
/// (as the report's JSON always had it).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct PerSoftirq<T>(pub(crate) [T; NR_SOFTIRQS]);

impl<T: Copy> PerSoftirq<T> {
    pub(crate) fn from_fn(f: impl Fn(Softirq) -> T) -> PerSoftirq<T> {
        PerSoftirq(Softirq::ALL.map(f))
    }
}

impl<T> std::ops::Index<Softirq> for PerSoftirq<T> {
    type Output = T;
    fn index(&self, v: Softirq) -> &T {
        &self.0[v.index()]
    }
}

impl<T: Serialize> Serialize for PerSoftirq<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut by_name: Vec<Softirq> = Softirq::ALL.to_vec();
        by_name.sort_by_key(|v| v.name());
        let mut map = serializer.serialize_map(Some(NR_SOFTIRQS))?;
        for v in by_name {
            map.serialize_entry(v.name(), &self[v])?;
        }
        map.end()
    }
}

/// An x86 system vector the probe times (local timer, IPIs): hardirq time that passes no
/// `irq_handler_entry`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum SysVector {
    LocalTimer,
    Reschedule,
    CallFunction,
    CallFunctionSingle,
    IrqWork,
    PlatformIpi,
    ThermalApic,
    ErrorApic,
    SpuriousApic,
}

impl SysVector {
    /// Every vector, in the probe's order: `ALL[v]` is the probe's vector `v`.
    pub(crate) const ALL: [SysVector; NR_SYSVECS] = [
        SysVector::LocalTimer,
        SysVector::Reschedule,
        SysVector::CallFunction,
        SysVector::CallFunctionSingle,
        SysVector::IrqWork,
        SysVector::PlatformIpi,
        SysVector::ThermalApic,
        SysVector::ErrorApic,
        SysVector::SpuriousApic,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// "local_timer": the `irq_vectors:` tracepoint's name.
    pub(crate) fn name(self) -> &'static str {
        SYSVEC_NAMES[self.index()]
    }

    /// "LOC": the row `/proc/interrupts` counts it in. Both call-function vectors count in
    /// CAL there.
    pub(crate) fn label(self) -> &'static str {
        match self {
            SysVector::LocalTimer => "LOC",
            SysVector::Reschedule => "RES",
            SysVector::CallFunction | SysVector::CallFunctionSingle => "CAL",
            SysVector::IrqWork => "IWI",
            SysVector::PlatformIpi => "PLT",
            SysVector::ThermalApic => "TRM",
            SysVector::ErrorApic => "ERR",
            SysVector::SpuriousApic => "SPU",
        }
    }
}

impl fmt::Display for SysVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for SysVector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_kernel_and_the_probe() {
        for (i, v) in Softirq::ALL.iter().enumerate() {
            assert_eq!((v.index(), Softirq::from_index(i)), (i, Some(*v)));
        }
        assert_eq!(
            Softirq::NetRx.index(),
            balancer_common::NET_RX_SOFTIRQ as usize
        );
        assert_eq!(Softirq::NetRx.name(), "NET_RX");
        assert_eq!(Softirq::from_index(NR_SOFTIRQS), None);
        for (i, v) in SysVector::ALL.iter().enumerate() {
            assert_eq!(v.index(), i);
        }
        assert_eq!(SysVector::LocalTimer.name(), "local_timer");
        assert_eq!(SysVector::SpuriousApic.name(), "spurious_apic");
    }

    #[test]
    fn serialise_as_names_and_shares_in_name_order() {
        assert_eq!(
            serde_json::to_string(&Softirq::NetRx).unwrap(),
            "\"NET_RX\""
        );
        assert_eq!(
            serde_json::to_string(&SysVector::CallFunction).unwrap(),
            "\"call_function\""
        );
        let shares = PerSoftirq::from_fn(|v| v.index() as u32);
        let text = serde_json::to_string(&shares).unwrap();
        assert!(
            text.starts_with(r#"{"BLOCK":4,"HI":0,"HRTIMER":8,"#),
            "{text}"
        );
        assert_eq!(shares[Softirq::Rcu], 9);
    }
}
