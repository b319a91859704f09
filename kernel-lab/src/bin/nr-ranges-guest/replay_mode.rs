//! `nrlab.mode=replay`: the explicit requests of `/replay.cases`
//! (`kernel_lab::conformance::replay`), each on every device opened, in
//! device order, through the batch's [`observe`]; the answers go back as
//! the batch's do.

use crate::*;
use kernel_lab::conformance::replay::{decode_cases, CASES_FILE};

pub(crate) fn run(report: &mut GuestReport, results: &mut Vec<u8>) -> GResult<()> {
    let path = format!("/{CASES_FILE}");
    let bytes = fs::read(&path).map_err(|e| format!("read {path}: {e}"))?;
    let requests = decode_cases(&bytes).map_err(|e| e.to_string())?;
    load_modules()?;
    let (_container, opened) = open_devices()?;
    report.devices = opened.iter().map(|o| o.info.clone()).collect();
    report.setup_ns = uptime_ns();
    if let Some(e) = probe_feature(opened.first().and_then(|o| o.device.as_ref())) {
        println!("nr-ranges-guest: VFIO_DEVICE_FEATURE_DMA_BUF is absent: the probe answered {}", errno_text(e));
        report.feature_absent = Some(e as i32);
        return Ok(());
    }
    let devices: Vec<&Device> = opened.iter().map(|o| o.device.as_ref().expect("opened")).collect();
    let mut buf = Vec::with_capacity(1 << 16);
    let mut guards = GuardCache::default();
    let t0 = Instant::now();
    for request in requests {
        let mut case = Case { device: 0, request };
        for (d, dev) in devices.iter().enumerate() {
            case.device = d;
            observe(dev, &case, &mut buf, &mut guards).encode(results);
            report.cases += 1;
        }
    }
    report.loop_ns = t0.elapsed().as_nanos() as u64;
    println!("nr-ranges-guest: replayed {} cases in {:.3} s", report.cases, report.loop_ns as f64 / 1e9);
    Ok(())
}
