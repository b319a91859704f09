//! The importer lab's revocation sequence, defined once: a dma-buf is
//! exported, attached by a dynamic importer and mapped (kept), then the
//! exporter's device is revoked in steps (memory bit cleared, set again,
//! `VFIO_DEVICE_RESET`, device fd closed). After each step: the
//! importer's invalidation count, whether its mapping survived, what its
//! peer reads at the old DMA address, and whether a new map works.
//!
//! [`run`] drives a [`RevocationBackend`]: the real device and
//! `nrlab_importer` in the guest, kmod-shim on the host
//! (`importer::host::predict_revocation`). Both give [`RevStep`] values,
//! compared field by field (`importer::host::compare`).

use crate::importer::RevStep;

/// What a step does to the exporter's device before it is observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing: observe the kept mapping.
    Observe,
    /// Clear `PCI_COMMAND_MEMORY` (`vfio_pci_dma_buf_move(revoked)`).
    MemoryOff,
    /// Set it again (`vfio_pci_dma_buf_move(!revoked)`).
    MemoryOn,
    /// `VFIO_DEVICE_RESET`.
    Reset,
    /// Close the device fd (`vfio_pci_dma_buf_cleanup()`).
    CloseDevice,
}

/// The steps after "map kept": name, action, and whether a new map is
/// tried after observing.
pub const SCRIPT: [(&str, Action, bool); 5] = [
    ("map kept: edu reads", Action::Observe, false),
    ("memory bit cleared", Action::MemoryOff, true),
    ("memory bit set again", Action::MemoryOn, true),
    ("VFIO_DEVICE_RESET", Action::Reset, true),
    ("device fd closed", Action::CloseDevice, true),
];

/// The importer's state after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImporterState {
    /// `invalidate_mappings` calls so far.
    pub invalidations: u32,
    /// The kept mapping still exists.
    pub mapped: bool,
}

/// Where the sequence runs: an exported, attached dma-buf and its importer.
pub trait RevocationBackend {
    /// Maps the attachment and keeps the mapping: 0 or -errno, and the
    /// first DMA address.
    fn map_keep(&mut self) -> (i32, Option<u64>);
    /// The importer's state, if it can be read.
    fn state(&mut self) -> Option<ImporterState>;
    /// What the importer's peer reads at `dma_addr`: `ok` when the BAR's
    /// bytes, else what it read.
    fn peer_read(&mut self, dma_addr: u64) -> String;
    /// Does `action` to the exporter's device; a note for the step, if any.
    fn act(&mut self, action: Action) -> Option<String>;
}

/// The sequence: map kept, then every [`SCRIPT`] step.
pub fn run(b: &mut impl RevocationBackend) -> Vec<RevStep> {
    let mut out = Vec::new();
    let (e, mut old) = b.map_keep();
    out.push(RevStep { step: "map kept".into(), remap_err: Some(e), ..RevStep::note("map kept", "") });
    if old.is_none() {
        return out;
    }
    for (name, action, remap) in SCRIPT {
        let note = b.act(action);
        let st = b.state();
        let old_read = old.map(|a| b.peer_read(a));
        let (remap_err, new) = if remap { b.map_keep() } else { (0, None) };
        out.push(RevStep {
            step: name.into(),
            invalidations: st.map_or(u32::MAX, |s| s.invalidations),
            mapped_before_remap: st.is_some_and(|s| s.mapped),
            remap_err: remap.then_some(remap_err),
            old_read,
            note: note.unwrap_or_default(),
        });
        old = new.or(old);
    }
    out
}
