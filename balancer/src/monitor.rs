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
        // Every netdev's rx and tx queues (tx from sysfs: the model lists rx only).
        let queues: usize = model
            .netdevs
            .values()
            .map(|d| {
                let tx = std::fs::read_dir(root.join("sys/class/net").join(&d.name).join("queues"))
                    .map_or(0, |dir| {
                        dir.filter_map(Result::ok)
                            .filter(|e| e.file_name().to_string_lossy().starts_with("tx-"))
                            .count()
                    });
                d.rx_queues.len() + tx
            })
            .sum();
        let probe = Probe::load(&ProbeOptions {
            // Room for IRQs that appear later (hotplug, new queues).
            max_irqs: (model.irqs.len() as u32 * 2).max(1024),
            max_napi: probe::napi_map_size(queues as u32, model.nr_cpu_ids),
            ..ProbeOptions::default()
        })?;
        let sampler = Sampler::new(probe, root)?;
        Ok(Monitor {
            sampler,
            linker: Linker::default(),
            root: root.to_path_buf(),
            opts,
            model,
            netdev: NetdevDump::default(),
            netdev_status: NetdevStatus::inactive("not read yet"),
            netdev_absent: false,
        })
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

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Replaces the proximity overrides (config reload); takes effect at the next tick.
    pub fn set_read_options(&mut self, opts: ReadOptions) {
        self.opts = opts;
    }
}
