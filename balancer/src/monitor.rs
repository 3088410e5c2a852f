//! The measuring loop every front end shares (report, top, daemon): probe + system model +
//! sampler + NAPI link learning, one [`Tick`] per interval.
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::{
    attribution::{Attribution, Linker},
    probe::{self, Probe, ProbeOptions, ProbeStatus},
    sample::{Interval, Sampler},
    system::{ReadOptions, SystemModel},
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
        let sampler = Sampler::new(probe, root)?;
        Ok(Monitor {
            sampler,
            linker: Linker::default(),
            root: root.to_path_buf(),
            opts,
            model,
        })
    }

    /// Ends the current interval and starts the next. The model is read again each time:
    /// affinities change, IRQs and CPUs come and go.
    pub fn tick(&mut self) -> anyhow::Result<Tick> {
        let interval = self.sampler.sample()?;
        self.model =
            SystemModel::read(&self.root, &self.opts).context("reading the system model")?;
        self.linker.observe(&interval);
        self.linker
            .retain(|napi| interval.napi_identity.contains_key(&napi));
        let links = self.linker.links(&interval.napi_identity, &self.model);
        let attribution = Attribution::build(&interval, &self.model, &links);
        Ok(Tick {
            interval,
            attribution,
        })
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
