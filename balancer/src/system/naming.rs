//! What an IRQ's action name says about its device and queue. Every driver names its vectors
//! its own way; these are the schemes we know:
//!
//! | name | meaning |
//! |---|---|
//! | `virtio2-input.3`, `virtio2-output.3` | virtio-net rx/tx queue 3 of virtio device 2 |
//! | `virtio1-req.0`, `virtio1-request.0` | virtio-blk / virtio-scsi request queue |
//! | `virtio2-config`, `virtio2-control` | virtio device, no queue |
//! | `<if>-TxRx-N`, `<if>-txrx-N`, `<if>-rxtx-N`, `<if>-Tx-Rx-N`, `<if>-fp-N`, `<if>-N` | combined queue (igb, ixgbe, i40e, bnxt, vmxnet3, ena, bnx2x/qede, sfc/tg3) |
//! | `<if>-rx-N`, `<if>-tx-N` | rx or tx queue (e1000e, bnxt, enic) |
//! | `<if>-qN-rx`, `<if>-qN-tx` | xen-netfront |
//! | `i40e-<if>-TxRx-N`, `ice-<if>-TxRx-N`, `iavf-<if>-TxRx-N` | driver-prefixed forms |
//! | `mlx5_compN@pci:<bdf>`, `mlx4-comp-N@pci:<bdf>`, `mana_qN@pci:<bdf>` | completion vector N (serves rx and tx of channel N) |
//! | `gve-ntfy-blkN@pci:<bdf>` | gve notification block N |
//! | `nvme0qN` | NVMe controller 0 queue N (q0 is the admin queue) |
//! | `iwlwifi`, `iwlwifi:queue_N`, `iwlwifi:default_queue` | Intel Wi-Fi rx queues |
//! | `ahci[0000:00:17.0]`, `i40e-0000:3b:00.0:misc` | a PCI address anywhere in the name |
use super::fsutil::is_pci_address;
use super::{Queue, QueueKind};

/// What one action name tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NameInfo {
    /// A known netdev named in the action.
    pub(crate) netdev: Option<String>,
    /// Virtio device ("virtio2").
    pub(crate) virtio: Option<String>,
    /// PCI address embedded in the name.
    pub(crate) pci: Option<String>,
    /// NVMe controller ("nvme0").
    pub(crate) nvme: Option<String>,
    pub(crate) queue: Option<Queue>,
    /// The driver the name belongs to, when the name says it ("iwlwifi", "nvme").
    pub(crate) driver: Option<&'static str>,
    /// Queues whose IRQ the kernel manages itself (writes to smp_affinity fail).
    pub(crate) managed: bool,
}

/// Parses one action name. `netdevs` are the interface names present on the machine; they
/// let `eth0-TxRx-3` be told from a name that merely looks like it.
pub(crate) fn parse_action(name: &str, netdevs: &[&str]) -> NameInfo {
    let mut info = NameInfo::default();
    if let Some(rest) = name.strip_prefix("virtio")
        && let Some((num, what)) = rest.split_once('-')
        && is_digits(num)
    {
        info.virtio = Some(format!("virtio{num}"));
        let queue = |prefix: &str| what.strip_prefix(prefix).and_then(parse_u32);
        info.queue = if let Some(n) = queue("input.") {
            Some(q(QueueKind::Rx, n))
        } else if let Some(n) = queue("output.") {
            Some(q(QueueKind::Tx, n))
        } else if let Some(n) = queue("req.").or_else(|| queue("request.")) {
            info.managed = true;
            Some(q(QueueKind::Other, n))
        } else {
            None
        };
        return info;
    }

    if let Some(rest) = name.strip_prefix("nvme")
        && let Some((ctrl, queue)) = rest.split_once('q')
        && is_digits(ctrl)
        && let Some(n) = parse_u32(queue)
    {
        info.nvme = Some(format!("nvme{ctrl}"));
        info.queue = Some(q(QueueKind::Other, n));
        info.driver = Some("nvme");
        // The admin queue is not managed; I/O queues are spread by the kernel.
        info.managed = n > 0;
        return info;
    }

    if let Some(rest) = name.strip_prefix("iwlwifi") {
        info.driver = Some("iwlwifi");
        if let Some(n) = rest.strip_prefix(":queue_").and_then(parse_u32) {
            info.queue = Some(q(QueueKind::Rx, n));
        } else if rest == ":default_queue" {
            info.queue = Some(q(QueueKind::Rx, 0));
        }
        return info;
    }

    info.pci = find_pci_address(name);
    if let Some((vector, _)) = name.split_once("@pci:") {
        let trailing = |prefix: &str| vector.strip_prefix(prefix).and_then(parse_u32);
        info.queue = if let Some(n) = trailing("mlx5_comp")
            .or_else(|| trailing("mlx4-comp-"))
            .or_else(|| trailing("mana_q"))
        {
            Some(q(QueueKind::RxTx, n))
        } else {
            trailing("gve-ntfy-blk").map(|n| q(QueueKind::Other, n))
        };
        return info;
    }

    // Interface-named forms, bare or after one driver prefix ("i40e-", "ice-").
    let starts = std::iter::once(0).chain(name.find('-').map(|i| i + 1));
    for start in starts {
        let tail = &name[start..];
        let matched = netdevs
            .iter()
            .filter(|n| {
                tail.strip_prefix(**n)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
            })
            .max_by_key(|n| n.len());
        if let Some(netdev) = matched {
            info.netdev = Some((*netdev).to_string());
            info.queue = queue_suffix(&tail[netdev.len()..], true);
            return info;
        }
    }
    // Not a known interface (renamed, or not in this fixture): the explicit suffixes still
    // name a queue; the bare `-N` form is too common elsewhere to trust.
    if let Some(dash) = find_queue_suffix(name) {
        info.queue = queue_suffix(&name[dash..], false);
    }
    info
}

fn q(kind: QueueKind, index: u32) -> Queue {
    Queue { kind, index }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn parse_u32(s: &str) -> Option<u32> {
    if is_digits(s) { s.parse().ok() } else { None }
}

const COMBINED: [&str; 7] = ["TxRx", "txrx", "rxtx", "Tx-Rx", "fp", "comp", "combined"];
const RX: [&str; 2] = ["rx", "Rx"];
const TX: [&str; 2] = ["tx", "Tx"];

/// The queue in what follows the interface name: "-TxRx-3", "-rx-0", "-7", "-q2-tx".
fn queue_suffix(suffix: &str, allow_bare: bool) -> Option<Queue> {
    let s = suffix.strip_prefix('-')?;
    if let Some(n) = parse_u32(s) {
        return allow_bare.then(|| q(QueueKind::RxTx, n));
    }
    if let Some(rest) = s.strip_prefix('q')
        && let Some((n, dir)) = rest.split_once('-')
        && let Some(n) = parse_u32(n)
    {
        return match dir {
            "rx" => Some(q(QueueKind::Rx, n)),
            "tx" => Some(q(QueueKind::Tx, n)),
            _ => None,
        };
    }
    let (word, n) = s.rsplit_once('-')?;
    let n = parse_u32(n)?;
    if COMBINED.contains(&word) {
        Some(q(QueueKind::RxTx, n))
    } else if RX.contains(&word) {
        Some(q(QueueKind::Rx, n))
    } else if TX.contains(&word) {
        Some(q(QueueKind::Tx, n))
    } else {
        None
    }
}

/// Byte offset of an explicit queue suffix ("-TxRx-3") in a name whose interface is unknown.
fn find_queue_suffix(name: &str) -> Option<usize> {
    let words = COMBINED.iter().chain(RX.iter()).chain(TX.iter());
    words
        .filter_map(|w| {
            let pat = format!("-{w}-");
            let at = name.rfind(&pat)?;
            parse_u32(&name[at + pat.len()..]).map(|_| at)
        })
        .max()
}

/// The first PCI address ("0000:3b:00.0") anywhere in a name.
pub(crate) fn find_pci_address(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    (0..bytes.len().saturating_sub(11))
        .filter(|&i| name.is_char_boundary(i) && name.is_char_boundary(i + 12))
        .map(|i| &name[i..i + 12])
        .find(|s| is_pci_address(s))
        .map(str::to_ascii_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str) -> NameInfo {
        parse_action(
            name,
            &["eth0", "eth1", "eth10", "ens1f0np0", "br-lan", "wlp2s0"],
        )
    }

    fn queue(name: &str) -> Option<(QueueKind, u32)> {
        parse(name).queue.map(|q| (q.kind, q.index))
    }

    #[test]
    fn virtio() {
        let i = parse("virtio2-input.3");
        assert_eq!(i.virtio.as_deref(), Some("virtio2"));
        assert_eq!(queue("virtio2-input.3"), Some((QueueKind::Rx, 3)));
        assert_eq!(queue("virtio2-output.0"), Some((QueueKind::Tx, 0)));
        assert_eq!(queue("virtio1-req.1"), Some((QueueKind::Other, 1)));
        assert!(parse("virtio1-req.1").managed);
        assert_eq!(queue("virtio2-config"), None);
        assert_eq!(parse("virtio2-config").virtio.as_deref(), Some("virtio2"));
        assert_eq!(parse("virtiox-input.1").virtio, None);
    }

    #[test]
    fn netdev_forms() {
        for (name, dev, kind, n) in [
            ("eth0-TxRx-3", "eth0", QueueKind::RxTx, 3),
            ("eth1-rx-0", "eth1", QueueKind::Rx, 0),
            ("eth1-tx-7", "eth1", QueueKind::Tx, 7),
            ("eth10-5", "eth10", QueueKind::RxTx, 5),
            ("i40e-eth0-TxRx-12", "eth0", QueueKind::RxTx, 12),
            ("ice-ens1f0np0-TxRx-1", "ens1f0np0", QueueKind::RxTx, 1),
            ("eth0-Tx-Rx-2", "eth0", QueueKind::RxTx, 2),
            ("eth0-fp-4", "eth0", QueueKind::RxTx, 4),
            ("eth0-rxtx-1", "eth0", QueueKind::RxTx, 1),
            ("eth0-q3-rx", "eth0", QueueKind::Rx, 3),
            ("br-lan-TxRx-0", "br-lan", QueueKind::RxTx, 0),
        ] {
            let i = parse(name);
            assert_eq!(i.netdev.as_deref(), Some(dev), "{name}");
            assert_eq!(i.queue, Some(q(kind, n)), "{name}");
        }
        let i = parse("eth0");
        assert_eq!((i.netdev.as_deref(), i.queue), (Some("eth0"), None));
        let i = parse("eth0-event-1");
        assert_eq!((i.netdev.as_deref(), i.queue), (Some("eth0"), None));
        // Unknown interface: explicit suffix only.
        let i = parse("enp1s0-TxRx-4");
        assert_eq!((i.netdev, i.queue), (None, Some(q(QueueKind::RxTx, 4))));
        assert_eq!(parse("pciehp-1").queue, None);
        assert_eq!(parse("eth2").netdev, None);
    }

    #[test]
    fn pci_named() {
        let i = parse("mlx5_comp7@pci:0000:3b:00.1");
        assert_eq!(i.pci.as_deref(), Some("0000:3b:00.1"));
        assert_eq!(i.queue, Some(q(QueueKind::RxTx, 7)));
        let i = parse("mlx5_async0@pci:0000:3b:00.1");
        assert_eq!((i.pci.as_deref(), i.queue), (Some("0000:3b:00.1"), None));
        assert_eq!(
            parse("gve-ntfy-blk2@pci:0000:00:04.0").queue,
            Some(q(QueueKind::Other, 2))
        );
        assert_eq!(
            parse("ahci[0000:00:17.0]").pci.as_deref(),
            Some("0000:00:17.0")
        );
        assert_eq!(
            parse("i40e-0000:3B:00.0:misc").pci.as_deref(),
            Some("0000:3b:00.0")
        );
        assert_eq!(parse("ttyS0").pci, None);
        assert_eq!(find_pci_address("éééééééééééé"), None);
    }

    #[test]
    fn nvme_and_wifi() {
        let i = parse("nvme0q3");
        assert_eq!(i.nvme.as_deref(), Some("nvme0"));
        assert_eq!(i.queue, Some(q(QueueKind::Other, 3)));
        assert!(i.managed);
        assert!(!parse("nvme0q0").managed);
        assert_eq!(parse("nvme0").nvme, None);
        assert_eq!(parse("iwlwifi").driver, Some("iwlwifi"));
        assert_eq!(queue("iwlwifi:queue_2"), Some((QueueKind::Rx, 2)));
        assert_eq!(queue("iwlwifi:default_queue"), Some((QueueKind::Rx, 0)));
    }
}
