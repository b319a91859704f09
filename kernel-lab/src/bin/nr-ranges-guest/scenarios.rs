//! Scenarios: sequences of calls whose answers are facts, not predictions.

use crate::*;

/// The outcome of a GET in a scenario: the new fd's size, or the errno.
pub(crate) fn created(fd: &Result<OwnedFd, String>) -> String {
    match fd {
        Ok(fd) => describe_fd(fd),
        Err(e) => e.clone(),
    }
}

pub(crate) struct Facts<'a>(&'a mut Vec<Fact>, &'static str);

impl Facts<'_> {
    fn add(&mut self, step: &str, result: impl Into<String>) {
        let result = result.into();
        println!("nr-ranges-guest: fact {}: {step}: {result}", self.1);
        self.0.push(Fact { scenario: self.1.into(), step: step.into(), result });
    }
}

pub(crate) fn res<T>(r: Result<T, String>, ok: impl FnOnce(&T) -> String) -> String {
    match r {
        Ok(v) => ok(&v),
        Err(e) => e,
    }
}

pub(crate) fn run_scenarios(opened: &mut [Opened], facts: &mut Vec<Fact>) {
    // The largest memory BAR of the lab: ivshmem's BAR2.
    let Some((di, bar)) = opened
        .iter()
        .enumerate()
        .flat_map(|(i, o)| o.info.bars.iter().map(move |b| (i, *b)))
        .filter(|(_, b)| b.kind == BarType::Mem && b.len >= PAGE)
        .max_by_key(|(_, b)| b.len)
    else {
        facts.push(Fact { scenario: "setup".into(), step: "find a memory BAR".into(), result: "none".into() });
        return;
    };
    let o = &mut opened[di];
    let region = bar.index;
    let dev = o.device.as_ref().expect("opened");
    let cfg_off = dev.region_info(VFIO_PCI_CONFIG_REGION_INDEX).map(|r| r.offset).unwrap_or(0);
    let mut f = Facts(facts, "target");
    f.add("device", format!("{} {} BAR{} len={}", o.info.name, o.info.bdf, region, bar.len));

    // 1. A dma-buf created while PCI_COMMAND memory is clear.
    let mut f = Facts(facts, "memory-disabled-create");
    f.add("clear PCI_COMMAND.MEMORY", res(set_memory(dev, cfg_off, false), |v| format!("ok, command={v:#06x}")));
    let fd = get_dmabuf(dev, region, O_RDWR_CLOEXEC, PAGE);
    f.add("DMA_BUF GET [0,page)", created(&fd));
    f.add("set PCI_COMMAND.MEMORY", res(set_memory(dev, cfg_off, true), |v| format!("ok, command={v:#06x}")));
    if let Ok(fd) = &fd {
        f.add("dma-buf after re-enable", describe_fd(fd));
    }
    drop(fd);

    // 2. Memory disable and re-enable with a live dma-buf.
    let mut f = Facts(facts, "memory-toggle-live");
    let fd = get_dmabuf(dev, region, O_RDWR_CLOEXEC, 2 * PAGE);
    f.add("DMA_BUF GET [0,2 pages)", created(&fd));
    if let Ok(fd) = &fd {
        f.add("clear PCI_COMMAND.MEMORY", res(set_memory(dev, cfg_off, false), |v| format!("ok, command={v:#06x}")));
        f.add("dma-buf while memory disabled", describe_fd(fd));
        f.add("new GET while memory disabled", res(get_dmabuf(dev, region, O_RDWR_CLOEXEC, PAGE), describe_fd));
        f.add("set PCI_COMMAND.MEMORY", res(set_memory(dev, cfg_off, true), |v| format!("ok, command={v:#06x}")));
        f.add("dma-buf after re-enable", describe_fd(fd));
    }
    drop(fd);

    // 3. VFIO_DEVICE_RESET with a live dma-buf.
    let mut f = Facts(facts, "reset-live");
    let fd = get_dmabuf(dev, region, O_RDWR_CLOEXEC, PAGE);
    f.add("DMA_BUF GET [0,page)", created(&fd));
    let flags = dev.info().map(|i| i.flags).unwrap_or(0);
    f.add("VFIO_DEVICE_INFO reset flag", format!("{}", flags & uapi::VFIO_DEVICE_FLAGS_RESET != 0));
    f.add(
        "VFIO_DEVICE_RESET",
        match dev.reset() {
            Ok(()) => "ok".into(),
            Err(e) => errno_text(e),
        },
    );
    if let Ok(fd) = &fd {
        f.add("dma-buf after reset", describe_fd(fd));
    }
    f.add("new GET after reset", res(get_dmabuf(dev, region, O_RDWR_CLOEXEC, PAGE), describe_fd));
    drop(fd);

    // 4. What open_flags do to the fd.
    let mut f = Facts(facts, "open-flags");
    for (name, flags) in [
        ("0 (O_RDONLY)", 0u32),
        ("O_WRONLY", 1),
        ("O_RDWR", 2),
        ("3 (O_ACCMODE)", 3),
        ("O_RDWR|O_CLOEXEC", O_RDWR_CLOEXEC),
        ("O_RDWR|O_NONBLOCK", 2 | 0o4000),
        ("O_RDWR|O_APPEND", 2 | 0o2000),
        ("0xffffffff", u32::MAX),
    ] {
        let r = get_dmabuf(dev, region, flags, PAGE).map(|fd| {
            let fl = fcntl(&fd, FcntlArg::F_GETFL).map(|v| format!("{v:#o}")).unwrap_or_else(errno_text);
            let fd_flags = fcntl(&fd, FcntlArg::F_GETFD)
                .map(|v| format!("{}", FdFlag::from_bits_truncate(v).contains(FdFlag::FD_CLOEXEC)))
                .unwrap_or_else(errno_text);
            format!("F_GETFL={fl} FD_CLOEXEC={fd_flags}")
        });
        f.add(&format!("open_flags {name}"), res(r, Clone::clone));
    }

    // 5. read() and mmap on a dma-buf.
    let mut f = Facts(facts, "dmabuf-io");
    let fd = get_dmabuf(dev, region, O_RDWR_CLOEXEC, PAGE);
    if let Ok(fd) = &fd {
        let mut b = [0u8; 64];
        f.add(
            "read(64)",
            match nix::unistd::read(fd, &mut b) {
                Ok(n) => format!("ok {n} bytes"),
                Err(e) => errno_text(e),
            },
        );
        f.add(
            "write(64)",
            match nix::unistd::write(fd, &b) {
                Ok(n) => format!("ok {n} bytes"),
                Err(e) => errno_text(e),
            },
        );
        f.add(
            "lseek(0, SEEK_SET)",
            match nix::unistd::lseek(fd, 0, Whence::SeekSet) {
                Ok(n) => format!("ok {n}"),
                Err(e) => errno_text(e),
            },
        );
        f.add(
            "lseek(1, SEEK_CUR)",
            match nix::unistd::lseek(fd, 1, Whence::SeekCur) {
                Ok(n) => format!("ok {n}"),
                Err(e) => errno_text(e),
            },
        );
        for (name, prot) in [
            ("mmap(PROT_READ)", ProtFlags::PROT_READ),
            ("mmap(PROT_READ|PROT_WRITE)", ProtFlags::PROT_READ | ProtFlags::PROT_WRITE),
        ] {
            let page = std::num::NonZeroUsize::new(PAGE as usize).expect("page size is not zero");
            f.add(
                name,
                match mmap_probe(fd.as_fd(), page, prot) {
                    Ok(()) => "ok".to_string(),
                    Err(e) => errno_text(e),
                },
            );
        }
    }

    // 6. The device fd closed while the dma-buf lives (last: it consumes the fd).
    let mut f = Facts(facts, "device-closed-live");
    let fd = get_dmabuf(dev, region, O_RDWR_CLOEXEC, PAGE);
    f.add("DMA_BUF GET [0,page)", created(&fd));
    drop(o.device.take());
    if let Ok(fd) = &fd {
        f.add("dma-buf after device fd close", describe_fd(fd));
        let mut b = [0u8; 8];
        f.add(
            "read after device fd close",
            match nix::unistd::read(fd, &mut b) {
                Ok(n) => format!("ok {n} bytes"),
                Err(e) => errno_text(e),
            },
        );
    }
    let bdf = o.info.bdf.clone();
    match o.group.device(&bdf) {
        Ok(d) => {
            f.add("reopen device while dma-buf lives", "ok");
            f.add("GET on reopened device", res(get_dmabuf(&d, region, O_RDWR_CLOEXEC, PAGE), describe_fd));
            o.device = Some(d);
        }
        Err(e) => f.add("reopen device while dma-buf lives", errno_text(e)),
    }
    drop(fd);
    f.add("dma-buf closed", "ok");
}
