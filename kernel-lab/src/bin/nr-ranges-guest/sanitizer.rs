//! The sanitizer lines of the run (`kernel_lab::sanitizer`): a kmemleak
//! scan where the kernel has kmemleak, then every report line of the
//! kernel log.

use std::fs;
use std::time::{Duration, Instant};

use kernel_lab::sanitizer::{is_report, kmemleak_objects};

const KMEMLEAK: &str = "/sys/kernel/debug/kmemleak";

/// The report lines, at most 200; a kmemleak scan first when available.
/// kmemleak only reports objects older than its minimum age (5 s), so the
/// scan runs twice, the second after that age has passed.
pub fn collect() -> Vec<String> {
    let _ = fs::create_dir_all("/sys/kernel/debug");
    let _ = nix::mount::mount(
        Some("debugfs"),
        "/sys/kernel/debug",
        Some("debugfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    );
    let mut out = Vec::new();
    if fs::metadata(KMEMLEAK).is_ok() {
        let t = Instant::now();
        for pause in [Duration::ZERO, Duration::from_secs(6)] {
            std::thread::sleep(pause);
            if let Err(e) = fs::write(KMEMLEAK, "scan") {
                out.push(format!("nr-ranges-guest: kmemleak scan failed: {e}"));
            }
        }
        let objects = kmemleak_objects(&fs::read_to_string(KMEMLEAK).unwrap_or_default());
        println!(
            "nr-ranges-guest: kmemleak scan: {} unreferenced objects ({:.1} s)",
            objects.len(),
            t.elapsed().as_secs_f64()
        );
        out.extend(objects);
    }
    out.extend(crate::kmsg().into_iter().filter(|m| is_report(m)));
    out.truncate(200);
    out
}
