//! Start-up checks shared by the commands that plan or balance (`daemon`, `plan`, `restore`,
//! `top --balance`): the config file, irqbalance beside us, the config against the machine,
//! and the single-instance lock, each turned into the [`Fatal`] exit code the commands
//! document.
use std::path::Path;

use crate::{
    Fatal,
    actuation::{self, Lock, LockError},
    config::{self, Config},
    system::SystemModel,
};

/// The config from `path`, else the default file when it exists, else defaults. A bad file
/// is [`Fatal::USAGE`].
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let result = match path {
        Some(p) => Config::read(p),
        None => Config::read_opt(Path::new(config::DEFAULT_CONFIG)).map(Option::unwrap_or_default),
    };
    result.map_err(|e| Fatal::new(Fatal::USAGE, e.to_string()).into())
}

/// The pid of a running irqbalance, if any.
pub fn irqbalance() -> Option<u32> {
    actuation::find_thread(Path::new("/"), "irqbalance")
}

/// Refuses to balance beside irqbalance (the two would fight over affinities) unless
/// `force`: [`Fatal::BUSY`].
pub fn refuse_beside_irqbalance(force: bool) -> anyhow::Result<()> {
    if !force && let Some(pid) = irqbalance() {
        return Err(Fatal::new(
            Fatal::BUSY,
            format!(
                "irqbalance runs (pid {pid}); stop it first (systemctl disable --now irqbalance) \
                 or pass --force"
            ),
        )
        .into());
    }
    Ok(())
}

/// Checks a config against the machine: no CPU left for IRQs is [`Fatal::USAGE`]; returns
/// the warnings.
pub fn machine_warnings(cfg: &Config, model: &SystemModel) -> anyhow::Result<Vec<String>> {
    let facts = config::MachineFacts::of(model);
    Ok(cfg
        .check_machine(&facts)
        .map_err(|e| Fatal::new(Fatal::USAGE, e))?)
}

/// [`actuation::try_lock`] for the commands: a held lock is [`Fatal::BUSY`].
pub fn lock(path: &Path) -> anyhow::Result<Lock> {
    actuation::try_lock(path).map_err(|e| match e {
        LockError::Held { .. } => Fatal::new(Fatal::BUSY, e.to_string()).into(),
        LockError::Open { .. } => anyhow::Error::new(e),
    })
}
