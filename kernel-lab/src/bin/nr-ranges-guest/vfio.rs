//! VFIO in the guest: binding to vfio-pci, the one open sequence both
//! modes use, well-formed exports, and the PCI command register.

use crate::*;

/// Binds `bdf` to vfio-pci: away from its driver, `driver_override`, reprobe.
pub(crate) fn bind_vfio_pci(bdf: &str) -> GResult<()> {
    let d = format!("/sys/bus/pci/devices/{bdf}");
    if fs::metadata(format!("{d}/driver")).is_ok() {
        let _ = fs::write(format!("{d}/driver/unbind"), bdf);
    }
    fs::write(format!("{d}/driver_override"), "vfio-pci").map_err(|e| format!("{bdf} driver_override: {e}"))?;
    fs::write("/sys/bus/pci/drivers_probe", bdf).map_err(|e| format!("{bdf} drivers_probe: {e}"))
}

/// Which step of [`open_vfio_device`] failed.
pub(crate) enum VfioOpenError {
    /// `open("/dev/vfio/<group>")`.
    Group(u32, std::io::Error),
    /// `VFIO_GROUP_SET_CONTAINER`: the group is not viable (a device of it
    /// is bound to another driver) or the container refuses it.
    SetContainer(Errno),
    /// `VFIO_SET_IOMMU(VFIO_TYPE1v2_IOMMU)`.
    SetIommu(Errno),
    /// `VFIO_GROUP_GET_DEVICE_FD`.
    DeviceFd(Errno),
}

impl VfioOpenError {
    pub(crate) fn describe(&self, bdf: &str) -> String {
        match self {
            VfioOpenError::Group(g, e) => format!("open /dev/vfio/{g} for {bdf}: {e}"),
            VfioOpenError::SetContainer(e) => format!("VFIO_GROUP_SET_CONTAINER for {bdf}: {e}"),
            VfioOpenError::SetIommu(e) => format!("VFIO_SET_IOMMU type1v2: {e}"),
            VfioOpenError::DeviceFd(e) => format!("VFIO_GROUP_GET_DEVICE_FD {bdf}: {e}"),
        }
    }
}

/// The classic VFIO open of a device bound to vfio-pci, for both modes: its
/// group into `container` (type1v2 is set with the `first` group), then
/// the device fd.
pub(crate) fn open_vfio_device(
    container: &Container,
    bdf: &str,
    group: u32,
    first: bool,
) -> Result<(Group, Device), VfioOpenError> {
    let g = Group::open(group).map_err(|e| VfioOpenError::Group(group, e))?;
    g.set_container(container).map_err(VfioOpenError::SetContainer)?;
    if first {
        container.set_iommu(VFIO_TYPE1V2_IOMMU).map_err(VfioOpenError::SetIommu)?;
    }
    let dev = g.device(bdf).map_err(VfioOpenError::DeviceFd)?;
    Ok((g, dev))
}

/// PCI_COMMAND in config space, and its memory-space enable bit.
pub(crate) const PCI_COMMAND: u64 = 0x04;
pub(crate) const PCI_COMMAND_MEMORY: u16 = 0x2;

pub(crate) fn get_dmabuf(dev: &Device, region: u32, open_flags: u32, len: u64) -> Result<OwnedFd, String> {
    export(dev, region, open_flags, &[uapi::DmaRange::new(0, len)])
}

/// A well-formed GET of `ranges` of `region`: the new dma-buf, or why not.
pub(crate) fn export(dev: &Device, region: u32, open_flags: u32, ranges: &[uapi::DmaRange]) -> Result<OwnedFd, String> {
    let req = uapi::OwnedRequest::well_formed(region, open_flags, ranges).map_err(|e| e.to_string())?;
    let mut buf = req.encode().map_err(|e| e.to_string())?;
    match dev.feature(&mut buf) {
        Ok(FeatureReply::DmaBuf(fd)) => Ok(fd),
        Ok(FeatureReply::Done) => Err("ok without fd".into()),
        Err(IoctlError::Kernel(e)) => Err(errno_text(e)),
        Err(e) => Err(e.to_string()),
    }
}

pub(crate) fn describe_fd(fd: &OwnedFd) -> String {
    match dmabuf_size(fd) {
        Observed::DmaBuf(s) => format!("lseek(SEEK_END)={s}"),
        other => other.describe(),
    }
}

pub(crate) fn set_memory(dev: &Device, cfg_off: u64, enable: bool) -> Result<u16, String> {
    let mut cmd = [0u8; 2];
    dev.file().read_exact_at(&mut cmd, cfg_off + PCI_COMMAND).map_err(|e| format!("config read: {e}"))?;
    let mut v = u16::from_le_bytes(cmd);
    if enable {
        v |= PCI_COMMAND_MEMORY;
    } else {
        v &= !PCI_COMMAND_MEMORY;
    }
    dev.file().write_all_at(&v.to_le_bytes(), cfg_off + PCI_COMMAND).map_err(|e| format!("config write: {e}"))?;
    dev.file().read_exact_at(&mut cmd, cfg_off + PCI_COMMAND).map_err(|e| format!("config read: {e}"))?;
    Ok(u16::from_le_bytes(cmd))
}
