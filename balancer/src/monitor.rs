//! The measuring loop every front end shares (report, top, daemon): probe + system model +
//! sampler + netdev netlink dump + NAPI link learning, one [`Tick`] per interval.
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::{
    attribution::{self, Attribution, Linker},
    probe::{self, Probe, ProbeOptions, ProbeStatus},
    sample::{Interval, Sampler},
    system::{
        ReadOptions, SystemModel,
        netdev::{self, Netdev, NetdevDump, NetdevStatus},
    },
};

/// One interval, measured and attributed.
pub struct Tick {
    pub interval: Interval,
    pub attribution: Attribution,
}

pub struct Monitor {
    sampler: Sampler,
    linker: Linker,
    root: PathBuf,
    opts: ReadOptions,
    model: SystemModel,
    /// The netdev netlink family's last dump (empty when it has none).
    netdev: NetdevDump,
    netdev_status: NetdevStatus,
    /// The kernel has no netdev family: not asked again.
    netdev_absent: bool,
}

impl Monitor {
    /// Checks privileges, reads the machine, loads the probes and takes the first snapshot:
    /// the first interval starts now.
    pub fn start(root: &Path, opts: ReadOptions) -> anyhow::Result<Monitor> {
        probe::check_privileges()?;
        let model = SystemModel::read(root, &opts).context("reading the system model")?;
        let probe = Probe::load(&ProbeOptions {
            // Room for IRQs that appear later (hotplug, new queues).
            max_irqs: (model.irqs.len() as u32 * 2).max(1024),
            ..ProbeOptions::default()
        })?;
        let mut m = Monitor {
            sampler: Sampler::new(probe, root)?,
            linker: Linker::default(),
            root: root.to_path_buf(),
            opts,
            model,
            netdev: NetdevDump::default(),
            netdev_status: NetdevStatus::inactive("not read yet"),
            netdev_absent: false,
        };
        m.refresh_netdev();
        let netlink = attribution::netlink_links(&m.netdev, &m.model);
        m.count_raises_unless_exact(&netlink)?;
        Ok(m)
    }

    /// Raises are counted only to learn co-occurrence links: where netlink links every NIC
    /// queue exactly, the raise program goes (one event fewer per softirq), and comes back
    /// when a queue without an exact link appears.
    fn count_raises_unless_exact(
        &mut self,
        netlink: &std::collections::BTreeMap<u32, attribution::Link>,
    ) -> anyhow::Result<()> {
        match attribution::linked_exactly(&self.netdev, &self.model, netlink) {
            Ok(()) => self.sampler.probe_mut().set_raise_counting(
                false,
                "every NIC queue is linked exactly (netdev netlink), so co-occurrence is not \
                 needed; raises are not counted",
            ),
            Err(_) => self.sampler.probe_mut().set_raise_counting(true, ""),
        }
    }

    /// Ends the current interval and starts the next. The model is read again each time:
    /// affinities change, IRQs and CPUs come and go.
    pub fn tick(&mut self) -> anyhow::Result<Tick> {
        let mut interval = self.sampler.sample()?;
        self.model =
            SystemModel::read(&self.root, &self.opts).context("reading the system model")?;
        self.refresh_netdev();
        interval.add_netdev(&self.netdev);
        self.linker.observe(&interval);
        self.linker
            .retain(|napi| interval.napi_identity.contains_key(&napi));
        let netlink = attribution::netlink_links(&self.netdev, &self.model);
        self.count_raises_unless_exact(&netlink)?;
        let links = self
            .linker
            .links_with(&interval.napi_identity, &self.model, &netlink);
        let attribution = Attribution::build(&interval, &self.model, &links);
        Ok(Tick {
            interval,
            attribution,
        })
    }

    /// Dumps napi-get and queue-get again (two small dumps, once per interval: NAPI
    /// instances and queues come and go with the traffic's devices). A kernel without the
    /// family is asked once; a failed dump leaves no netlink links until the next one works.
    fn refresh_netdev(&mut self) {
        if self.netdev_absent {
            return;
        }
        (self.netdev, self.netdev_status) = match netdev::read() {
            Ok(Netdev::Available(d)) => {
                let status = NetdevStatus::of_dump(&d);
                (d, status)
            }
            Ok(Netdev::Unavailable(why)) => {
                self.netdev_absent = true;
                (NetdevDump::default(), NetdevStatus::inactive(why))
            }
            Err(e) => {
                if self.netdev_status.active {
                    log::warn!("netlink links lost: {e}");
                }
                (NetdevDump::default(), NetdevStatus::inactive(e.to_string()))
            }
        };
    }

    /// Whether the last interval had netlink links, and why not.
    pub fn netdev_status(&self) -> &NetdevStatus {
        &self.netdev_status
    }

    pub fn model(&self) -> &SystemModel {
        &self.model
    }

    pub fn status(&self) -> &ProbeStatus {
        &self.sampler.probe().status
    }

    /// The kernel's figures per attached program (run time with `kernel.bpf_stats_enabled`,
    /// recursion misses always), since the probes were loaded.
    pub fn program_stats(&self) -> anyhow::Result<Vec<probe::ProgramStats>> {
        self.sampler.probe().program_stats()
    }

    /// NAPI instances the probe pruned after they stopped polling.
    pub fn napi_pruned(&self) -> u64 {
        self.sampler.probe().napi_pruned()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Replaces the proximity overrides (config reload); takes effect at the next tick.
    pub fn set_read_options(&mut self, opts: ReadOptions) {
        self.opts = opts;
    }
}
