//! `cargo run --release -p rfc`: regenerates the RFC's evidence.
//!
//! Runs the framebuffer sweep, writes tables, plots and JSON under
//! `rfc/evidence/`, regenerates the semantics table and the property list,
//! runs the kernel lab (unless `--offline`) for the real kernel's facts, and
//! rewrites the generated sections of `rfc/RFC.md`. `--quick` is the CI
//! run: a subset of the sweep, written to `target/rfc-quick/` so that the
//! committed evidence is not touched.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rfc::buddy::{Buddy, Chunk};
use rfc::experiment::{self, SweepConfig, RLIMIT_NOFILE_SOFT, UDMABUF_LIST_LIMIT};
use rfc::lab::{self, LabReport};
use rfc::{fmt_bytes, plots, props, report, semantics, trace, workspace_root};

#[derive(Parser, Debug)]
#[command(
    name = "rfc",
    about = "Regenerate the nr-ranges RFC's evidence (framebuffer experiment, semantics, kernel facts)"
)]
struct Args {
    /// Do not run the kernel lab; use the last committed kernel facts.
    #[arg(long)]
    offline: bool,
    /// Reduced sweep for CI, written to target/rfc-quick/ unless --out is given.
    #[arg(long)]
    quick: bool,
    /// Output directory (default: rfc/evidence/, or target/rfc-quick/ with --quick).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of the pressure workloads.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker threads for the sweep (results do not depend on it).
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Kernel lab cases.
    #[arg(long, default_value_t = 100_000)]
    lab_cases: u64,
    /// Kernel lab deadline in seconds (build + boot + run).
    #[arg(long, default_value_t = 240)]
    lab_timeout: u64,
    /// Instead of the sweep's pressure workload, replay this allocation
    /// trace (format: rfc/src/trace.rs) and measure the framebuffers in the
    /// VRAM it leaves; prints the results and writes trace-results.json.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// VRAM (BAR) size for --trace, bytes (K/M/G suffixes allowed).
    #[arg(long, default_value = "16G")]
    trace_bar: String,
    /// Minimum chunk for --trace: 4 or 64 (KiB).
    #[arg(long, default_value_t = 4)]
    trace_chunk: u32,
    /// Only the real-allocator comparison: the sweep (reduced with --quick)
    /// recorded as traces, replayed on the kernel's gpu_buddy by `kernel-lab
    /// buddy`, compared with the model; writes real-buddy.{md,svg,json} to
    /// --out, else rfc/evidence/ (target/rfc-quick/ with --quick)
    /// (rfc/src/real_buddy.rs).
    #[arg(long)]
    real_allocator: bool,
    /// Lab kernel for --real-allocator.
    #[arg(long, default_value = "lab-patched")]
    real_kernel: String,
    /// With --real-allocator: compare with this `kernel-lab buddy` report
    /// instead of running the lab.
    #[arg(long)]
    real_report: Option<PathBuf>,
    /// With --real-allocator: pressure runs per cell (default: the sweep's).
    #[arg(long)]
    real_trials: Option<u32>,
    /// With --real-allocator: the kernels the framebuffer end to end runs
    /// on (rfc/src/fb_e2e.rs); `none` skips it.
    #[arg(long, value_delimiter = ',', default_values_t = rfc::fb_e2e::KERNELS.map(String::from))]
    e2e_kernels: Vec<String>,
    /// With --real-allocator: only the framebuffer end to end (not the sweep).
    #[arg(long)]
    e2e_only: bool,
    /// With --real-allocator: the end to end from the reports an earlier
    /// run left in target/framebuffer-e2e/ (no QEMU).
    #[arg(long)]
    e2e_reuse: bool,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn write(dir: &Path, name: &str, text: &str) -> Result<(), Error> {
    std::fs::write(dir.join(name), text).map_err(|e| format!("write {}: {e}", dir.join(name).display()).into())
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, Error> {
    Ok(serde_json::to_string_pretty(v)? + "\n")
}

fn main() -> ExitCode {
    let args = Args::parse();
    let r = if args.real_allocator {
        run_real_allocator(&args)
    } else if args.trace.is_some() {
        run_trace(&args)
    } else {
        run(&args)
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rfc: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_real_allocator(args: &Args) -> Result<(), Error> {
    let root = workspace_root();
    let mut cfg = if args.quick { SweepConfig::quick(args.seed) } else { SweepConfig::full(args.seed) };
    cfg.trials = args.real_trials.unwrap_or(cfg.trials);
    // As for the sweep: --quick never touches the committed evidence.
    let out =
        args.out.clone().unwrap_or_else(|| root.join(if args.quick { "target/rfc-quick" } else { "rfc/evidence" }));
    // One scratch directory per sweep size, so reports of different sweeps never mix.
    let work = root.join(format!("target/real-buddy/{}-t{}", if args.quick { "quick" } else { "full" }, cfg.trials));
    let command = format!(
        "cargo run --release -p rfc -- --real-allocator{}{} --real-kernel {}",
        if args.quick { " --quick" } else { "" },
        args.real_trials.map(|t| format!(" --real-trials {t}")).unwrap_or_default(),
        args.real_kernel
    );
    let g = rfc::real_buddy::Generate {
        cfg,
        out: &out,
        work: &work,
        kernel: &args.real_kernel,
        report: args.real_report.as_deref(),
        command: &command,
    };
    if !args.e2e_only {
        println!("{}", rfc::real_buddy::generate(&g)?);
        println!("written: {}/real-buddy.{{md,svg,json}}", out.display());
    }
    if args.e2e_kernels.iter().any(|k| k == "none") {
        return Ok(());
    }
    let work = root.join(format!("target/framebuffer-e2e/{}", if args.quick { "quick" } else { "full" }));
    let e = rfc::fb_e2e::Generate {
        seed: args.seed,
        out: &out,
        work: &work,
        allocator_kernel: &args.real_kernel,
        kernels: &args.e2e_kernels,
        only: args.quick.then_some(rfc::fb_e2e::ACCEPTANCE),
        reuse: args.e2e_reuse,
    };
    println!("{}", rfc::fb_e2e::generate(&e)?);
    println!("written: {}/framebuffer-e2e/{{placements.json,e2e.json,e2e.md}}", out.display());
    Ok(())
}

fn run_trace(args: &Args) -> Result<(), Error> {
    let path = args.trace.as_ref().ok_or("no trace")?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let ops = trace::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let size = trace::parse(&format!("alloc bar {}", args.trace_bar)).map_err(|e| format!("--trace-bar: {e}"))?;
    let bar = match &size[0].op {
        trace::Op::Alloc { size, .. } => *size,
        trace::Op::Free { .. } => unreachable!("parsed an alloc"),
    };
    let chunk = if args.trace_chunk == 64 { Chunk::K64 } else { Chunk::K4 };
    let mut buddy = Buddy::gpu_buddy(bar, chunk)?;
    let st = trace::replay(&mut buddy, &ops)?;
    let cfg = SweepConfig {
        bars: vec![bar],
        occupancies: vec![buddy.occupancy()],
        chunks: vec![chunk],
        ..SweepConfig::full(args.seed)
    };
    let occ = buddy.occupancy();
    let (samples, _) = experiment::measure_framebuffers(&cfg, &mut buddy, occ, 0)?;
    println!(
        "trace {}: {} allocs, {} ENOSPC, {} frees, {} live; occupancy {:.1} %",
        path.display(),
        st.allocs,
        st.enospc,
        st.frees,
        st.live,
        buddy.occupancy() * 100.0
    );
    for s in &samples {
        match &s.scattered {
            Some(x) => println!(
                "  {:>5}: contiguous {}, nr_ranges {}, sg BUS_ADDR {} IOVA {} per-range {}",
                s.resolution, s.contiguous, x.nr_ranges, x.multi.bus_addr, x.multi.iova, x.multi.per_range
            ),
            None => println!("  {:>5}: no room", s.resolution),
        }
    }
    let out = args.out.clone().unwrap_or_else(|| workspace_root().join("target/rfc-trace"));
    std::fs::create_dir_all(&out)?;
    write(&out, "trace-results.json", &json(&samples)?)?;
    println!("written: {}", out.join("trace-results.json").display());
    Ok(())
}

fn run(args: &Args) -> Result<(), Error> {
    let t0 = Instant::now();
    let root = workspace_root();
    let evidence = root.join("rfc/evidence");
    let out =
        args.out.clone().unwrap_or_else(|| if args.quick { root.join("target/rfc-quick") } else { evidence.clone() });
    std::fs::create_dir_all(&out)?;
    let committed = out == evidence;

    // The kernel lab runs beside the sweep: it is mostly QEMU and cargo.
    let lab_thread = (!args.offline).then(|| {
        let (root, out) = (root.clone(), out.clone());
        let (cases, seed, timeout) = (args.lab_cases, 1, Duration::from_secs(args.lab_timeout));
        std::thread::spawn(move || {
            let t = Instant::now();
            let r = lab::run(
                &root,
                cases,
                seed,
                &out.join("kernel-lab-report.new.json"),
                &out.join("kernel-lab.log"),
                timeout,
            );
            (r, t.elapsed())
        })
    });

    let cfg = if args.quick { SweepConfig::quick(args.seed) } else { SweepConfig::full(args.seed) };
    let pb = ProgressBar::new(experiment::run_count(&cfg) as u64);
    if std::io::stderr().is_terminal() {
        pb.set_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} pressure runs, {elapsed} (eta {eta})")?
                .progress_chars("=> "),
        );
        pb.set_message("framebuffer sweep");
    } else {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    let ts = Instant::now();
    let (samples, timings) = experiment::sweep(&cfg, args.jobs, &|| pb.inc(1))?;
    pb.finish_and_clear();
    let sweep_secs = ts.elapsed().as_secs_f64();

    let cells = report::cells(&samples);
    let f = report::findings(&samples);
    #[derive(serde::Serialize)]
    struct Results<'a> {
        seed: u64,
        config: &'a SweepConfig,
        mix: &'a [rfc::pressure::SizeClass],
        pressure: rfc::pressure::Pressure,
        findings: &'a report::Findings,
        cells: &'a [report::Cell],
        samples: &'a [experiment::Sample],
    }
    let results = Results {
        seed: args.seed,
        config: &cfg,
        mix: &rfc::pressure::MIX,
        pressure: rfc::pressure::Pressure::new(0.0),
        findings: &f,
        cells: &cells,
        samples: &samples,
    };
    write(&out, "results.json", &json(&results)?)?;
    write(&out, "timings.json", &json(&timings)?)?;
    let plot_files = plots::draw_all(&out, &samples, &cells, &timings)?;

    // Kernel facts: fresh from the lab, or the last committed ones.
    let committed_report = evidence.join("kernel-lab-report.json");
    let (lab_report, lab_status): (Option<LabReport>, String) = match lab_thread.map(|h| h.join()) {
        Some(Ok((Ok(r), d))) => {
            let new = out.join("kernel-lab-report.new.json");
            std::fs::rename(&new, out.join("kernel-lab-report.json"))?;
            (Some(r), format!("kernel lab ran: {} cases in {:.0} s", args.lab_cases, d.as_secs_f64()))
        }
        other => {
            let why = match other {
                None => "--offline".to_string(),
                Some(Ok((Err(e), _))) => {
                    format!("kernel lab failed ({e}); log: {}", out.join("kernel-lab.log").display())
                }
                Some(Err(_)) => "kernel lab thread panicked".to_string(),
                Some(Ok((Ok(_), _))) => unreachable!("matched above"),
            };
            let last = std::fs::read_to_string(&committed_report).ok().and_then(|j| lab::parse(&j).ok());
            if last.is_some() && !committed {
                std::fs::copy(&committed_report, out.join("kernel-lab-report.json"))?;
            }
            let s = match &last {
                Some(_) => format!("{why}: using the last committed facts (rfc/evidence/kernel-lab-report.json)"),
                None => format!("{why}: no committed kernel facts either"),
            };
            (last, s)
        }
    };

    let suite = props::suite();
    let sem = semantics::markdown(lab_report.as_ref().map(|r| &r.predicted_checks));
    write(&out, "semantics.md", &format!("# Semantics of VFIO_DEVICE_FEATURE_DMA_BUF\n\nGenerated by `cargo run --release -p rfc` from `validator::Reject::ALL` (order = precedence: the first failing check decides). \"lab cases\": requests of the kernel lab's report decided by that check on the real kernel.\n\n{sem}"))?;
    let strict = strict_md(&f, lab_report.as_ref());
    write(&out, "strict.md", &format!("# The Strict proposal\n\n{strict}"))?;
    let props_md = props::markdown(suite);
    write(&out, "properties.md", &format!("# Properties\n\n{props_md}"))?;
    let fb_md = report::framebuffer_md(&cells);
    write(&out, "framebuffer.md", &format!("# The framebuffer experiment\n\n{}\n{fb_md}", experiment_intro(&cfg)))?;
    let alt = alternatives_md(&f);
    write(&out, "alternatives.md", &format!("# Alternatives, measured\n\n{alt}"))?;
    let mut kernel_md = match &lab_report {
        Some(r) => lab::markdown(r, &lab_status),
        None => format!("No kernel facts: {lab_status}.\n"),
    };
    kernel_md.push_str(&importer_md(&root));
    write(&out, "kernel.md", &format!("# What the real kernel does\n\n{kernel_md}"))?;
    let defects = defects_md(&f);
    let lab_matrix = lab_matrix_md(&root);
    let fb_e2e = fb_e2e_md(&root);
    let summary = summary_md(&f, &cfg, &plot_files);
    write(&out, "summary.md", &format!("# Summary\n\n{summary}"))?;

    // RFC.md: in place for the committed evidence, else a rendered copy.
    let rfc_src = root.join("rfc/RFC.md");
    let mut doc = std::fs::read_to_string(&rfc_src)?;
    for (name, body) in [
        ("summary", summary.as_str()),
        ("semantics", sem.as_str()),
        ("kernel", kernel_md.as_str()),
        ("strict", strict.as_str()),
        ("alternatives", alt.as_str()),
        ("defects", defects.as_str()),
        ("labkernels", lab_matrix.as_str()),
        ("fbe2e", fb_e2e.as_str()),
        ("properties", props_md.as_str()),
    ] {
        doc = report::replace_section(&doc, name, body)?;
    }
    let rfc_out = if committed { rfc_src } else { out.join("RFC.md") };
    std::fs::write(&rfc_out, doc)?;

    println!(
        "rfc: {} samples ({} pressure runs, seed {}) in {sweep_secs:.1} s; {lab_status}",
        f.samples,
        experiment::run_count(&cfg),
        args.seed
    );
    println!(
        "  scattered framebuffers needing > 1 range: {}/{}; max nr_ranges {}; workaround over {} fds: {}; kernel-faithful IOVA map failures: {}/{}",
        f.multi_range_needed,
        f.scattered_ok,
        f.max_nr_ranges.values().max().unwrap_or(&0),
        RLIMIT_NOFILE_SOFT,
        f.over_fd_limit,
        f.kernel_iova_failures,
        f.multi_range_needed
    );
    println!("  properties: {} found", suite.len());
    println!("  evidence: {} ({} plots); RFC: {}", out.display(), plot_files.len(), rfc_out.display());
    println!("  total {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}

fn experiment_intro(cfg: &SweepConfig) -> String {
    let mix: Vec<String> = rfc::pressure::MIX
        .iter()
        .map(|c| format!("{:.0} % {} ({} to {})", c.weight * 100.0, c.name, fmt_bytes(c.min), fmt_bytes(c.max)))
        .collect();
    format!(
        "Generated by `cargo run --release -p rfc` (seed {}). VRAM = the BAR, managed by the model of Linux 7.2's gpu_buddy \
         (`rfc::buddy::Buddy::gpu_buddy`, checked block for block against the kernel's: evidence/real-buddy.md). Pressure: fill to the target occupancy with objects of the mix {}, log-uniform sizes, \
         allocated non-contiguously, then 10 churn rounds each freeing 30 % of live objects at random and refilling. \
         {} trials per (BAR, chunk, occupancy). Each framebuffer (32 bpp, pitch aligned to 256 B) is allocated \
         contiguously (one power-of-two block, then the kernel's `__alloc_contig_try_harder()` fallback) and scattered (adjacent blocks merged into one range), exported \
         through kmod-shim (fixed mode) as one multi-range dma-buf and as one dma-buf per range, and mapped by \
         three importers: BUS_ADDR, IOVA span, per-range `dma_map_phys()`. \"kernel-faithful IOVA map fails\" \
         maps the multi-range dma-buf once more in kmod-shim's kernel-faithful mode (defect 1).\n\n\
         Plots: [contiguous-success.svg](contiguous-success.svg), [nr-ranges.svg](nr-ranges.svg), \
         [sg-entries.svg](sg-entries.svg), [workaround.svg](workaround.svg), \
         [export-map-time.svg](export-map-time.svg). Data: [results.json](results.json) (deterministic for the \
         seed), [timings.json](timings.json) (wall clock, not deterministic).\n",
        cfg.seed,
        mix.join(", "),
        cfg.trials
    )
}

fn summary_md(f: &report::Findings, cfg: &SweepConfig, plots: &[String]) -> String {
    let max4 = f.max_nr_ranges.get(&Chunk::K4.bytes()).copied().unwrap_or(0);
    let max64 = f.max_nr_ranges.get(&Chunk::K64.bytes()).copied().unwrap_or(0);
    let c90: Vec<String> = f.contiguous_at_90.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let plots: Vec<String> = plots.iter().map(|p| format!("[{p}](evidence/{p})")).collect();
    format!(
        "Sweep: BARs {}, occupancies {}, chunks {}, {} trials, seed {} ({} framebuffer allocations).\n\n\
         - Contiguous allocation succeeded in {} of {} attempts; at {} BAR, 90 % occupancy, 4 KiB chunks: {} (trials).\n\
         - A scattered allocation succeeded in {} attempts; {} of them ({}) needed more than one range.\n\
         - Largest `nr_ranges`: {} (4 KiB chunks), {} (64 KiB chunks); largest range array {} bytes \
           (Linux's copy limit is 4 MiB = 262,144 ranges; the Strict cap is 65,536).\n\
         - Multi-range on the IOVA path: at most {} sg entry per importer; BUS_ADDR and per-range: one per range.\n\
         - Single-range workaround: one dma-buf, fd and export ioctl per range; {} framebuffers need more than {} fds \
           (the default `RLIMIT_NOFILE` soft limit); {} exceed udmabuf's default `list_limit` of {}.\n\
         - kmod-shim's kernel-faithful mode fails the multi-range IOVA map in {} of {} multi-range cases (defect 1, EADDRINUSE as on Intel VT-d; confirmed on the running kernel).\n\n\
         Details: [framebuffer tables](evidence/framebuffer.md), plots {}.\n",
        cfg.bars.iter().map(|b| fmt_bytes(*b)).collect::<Vec<_>>().join(", "),
        cfg.occupancies.iter().map(|o| format!("{:.0} %", o * 100.0)).collect::<Vec<_>>().join(", "),
        cfg.chunks.iter().map(|c| fmt_bytes(c.bytes())).collect::<Vec<_>>().join(", "),
        cfg.trials,
        cfg.seed,
        f.samples,
        f.contiguous_ok,
        f.samples,
        fmt_bytes(*cfg.bars.iter().max().unwrap_or(&0)),
        if c90.is_empty() { "not swept".to_string() } else { c90.join(", ") },
        f.scattered_ok,
        f.multi_range_needed,
        if f.scattered_ok == 0 { "n/a".into() } else { format!("{:.0} %", 100.0 * f.multi_range_needed as f64 / f.scattered_ok as f64) },
        max4,
        max64,
        f.max_array_bytes,
        f.max_sg_iova,
        f.over_fd_limit,
        RLIMIT_NOFILE_SOFT,
        f.over_udmabuf_limit,
        UDMABUF_LIST_LIMIT,
        f.kernel_iova_failures,
        f.multi_range_needed,
        plots.join(", ")
    )
}

fn strict_md(f: &report::Findings, lab: Option<&LabReport>) -> String {
    let rules = semantics::strict();
    let count = |k: &str| lab.and_then(|r| r.predicted_checks.get(k)).copied().unwrap_or(0);
    let kernel = lab.map_or("the kernel lab (no report)".to_string(), |r| format!("Linux {}", r.kernel));
    let open = lab.and_then(|r| r.fact("open-flags", "open_flags 0xffffffff")).unwrap_or("(no lab fact)");
    let nonblock = lab.and_then(|r| r.fact("open-flags", "open_flags O_RDWR|O_NONBLOCK")).unwrap_or("(no lab fact)");
    let maxnr = f.max_nr_ranges.values().max().copied().unwrap_or(0);
    let evidence = [
        format!("Measured on {kernel}: the range array is copied as `nr_ranges * 16` bytes whatever argsz says; {} lab requests were decided by `memdup_array_user()` (EFAULT {}, ENOMEM {}) with the validator, which ignores argsz under `Policy::Linux`, agreeing on every one.", count("RangeArrayFault") + count("RangeArrayTooLarge"), count("RangeArrayFault"), count("RangeArrayTooLarge")),
        format!("Measured on {kernel}: `open_flags = 0xffffffff` is accepted (`{open}`); `O_RDWR|O_NONBLOCK` gives `{nonblock}`."),
        format!("The framebuffer experiment's largest `nr_ranges` is {maxnr} (8K, 4 KiB chunks, fragmented VRAM): {:.0} % of the 65,536 cap. Linux's limit (ENOMEM above `KMALLOC_MAX_SIZE`, 262,144 ranges with 4 KiB pages, measured) is 4x the cap and 33.5 million ranges with arm64 64 KiB pages.", 100.0 * maxnr as f64 / 65_536.0),
        format!("Measured on {kernel}: out-of-BAR ranges answered EOVERFLOW in {} lab requests and EINVAL in {}; which one depends on the BAR's physical address.", count("PhysAddrOverflow"), count("RangeBeyondBar")),
    ];
    let mut s = String::from("Each rule as `validator::STRICT_RULES` defines it (the table that also generates `Policy::Strict`'s docs), with its evidence. Strict makes every Linux check first, so it never accepts what Linux rejects.\n\n| # | rule | rationale | evidence |\n|---|---|---|---|\n");
    for (i, (title, text)) in rules.iter().enumerate() {
        let ev = evidence.get(i).map(String::as_str).unwrap_or("");
        s.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            i + 1,
            title.replace('|', "\\|"),
            text.replace('|', "\\|"),
            ev.replace('|', "\\|")
        ));
    }
    s
}

fn alternatives_md(f: &report::Findings) -> String {
    let maxnr = f.max_nr_ranges.values().max().copied().unwrap_or(0);
    format!(
        "Measured over the {} scattered framebuffers of the sweep (tables: `rfc/evidence/framebuffer.md`).\n\n\
         | design | dma-bufs / fds / export ioctls per framebuffer | argument bytes (worst case) | importer's view | limit hit in the sweep |\n|---|---|---|---|---|\n\
         | multi-range (merged in 6.19, modelled here) | 1 / 1 / 1 | {} (16 B per range) | one dma-buf; IOVA path: one contiguous span, at most {} sg entry | none (max nr_ranges {maxnr} < 65,536 Strict cap < 262,144 kmalloc limit) |\n\
         | single range, one dma-buf per range | up to {maxnr} / {maxnr} / {maxnr} | {maxnr} ioctls x 40 B (single-range argument) | {maxnr} dma-bufs, {maxnr} imports, {maxnr} separate IOVA spans: no linear view of the framebuffer | {} framebuffers need more than 1,024 fds (default `RLIMIT_NOFILE`) |\n\
         | per-range region index (layout assumed: `u32 region_index, u32 pad, u64 offset, u64 length`) | 1 / 1 / 1 | {} (24 B per range, +50 %) | as multi-range | the kmalloc limit drops to 174,762 ranges; every framebuffer lies in one BAR, so the field never carries information here |\n\
         | udmabuf-style list (`UDMABUF_CREATE_LIST`: an fd per item) | 1 / 1 + one fd per item for the caller / 1 | {} (24 B per item) | one dma-buf | {} framebuffers exceed udmabuf's default `list_limit` (1,024) |\n",
        f.scattered_ok,
        f.max_array_bytes,
        f.max_sg_iova.max(1),
        f.over_fd_limit,
        maxnr * 24,
        maxnr * 24,
        f.over_udmabuf_limit
    )
}

/// What the kernel does after the fd exists, from the importer lab's
/// committed report (`rfc/evidence/kernel-importer-7.2.json`); the counts are
/// read from it, the facts are those its findings established.
fn importer_md(root: &std::path::Path) -> String {
    let path = root.join("rfc/evidence/kernel-importer-7.2.json");
    let report = std::fs::read_to_string(&path).ok().and_then(|t| lab::parse_importer(&t).ok());
    let Some(report) = report else {
        return format!("\n### After the fd: a real importer\n\nNo importer report at {}.\n", path.display());
    };
    let kernel = &report.kernel;
    let checks: Vec<_> = report.checks().collect();
    let agree = checks.iter().filter(|c| c.agree).count();
    let unexplained: usize = report.topologies.iter().map(|t| t.unexplained).sum();
    let compared = report.topologies.iter().filter(|t| !t.checks.is_empty()).count();
    format!(
        "\n### After the fd: a real importer\n\n\
         The kernel lab's test importer module (kernel-lab/importer/) attaches to the dma-buf from a second \
         emulated PCI device, maps it under the reservation lock, copies out the kernel's own sg table, and drives \
         the device's DMA engine to read the BAR through each DMA address. Against kmod-shim's kernel-faithful \
         predictions on {kernel} (report: [kernel-importer-7.2.md](evidence/kernel-importer-7.2.md), \
         [JSON](evidence/kernel-importer-7.2.json)): **{agree} of {} checks agree** over {compared} QEMU topologies, \
         {unexplained} disagreements unexplained; the explained ones are the PCIe-switch topology's DMA reads, \
         which QEMU routes through its emulated IOMMU instead of peer to peer. Facts: every dma-buf with two or \
         more ranges fails to map on the IOVA path with EADDRINUSE (defect 1 below); memory disable and device \
         close call the importer's invalidation callback once and later maps fail with ENODEV; re-enable calls it \
         again and maps work; VFIO_DEVICE_RESET on a device without a reset method fails with EINVAL and revokes \
         nothing; on the `iommu=pt` path the old DMA address reads the BAR again once memory is re-enabled, \
         because revocation tears nothing down there. The importer run is not part of this job (it needs a Debian \
         chroot and minutes of emulated DMA): `cargo run --release -p kernel-lab -- importer --kernel 7.2 \
         --topology all`. Details and reproducers: [kernel-lab/FINDINGS.md](../kernel-lab/FINDINGS.md).\n",
        checks.len()
    )
}

/// The lab kernels' matrix (`rfc/evidence/lab-matrix/matrix.json`, written
/// by `kernel-lab matrix`): the same parts on Debian's 7.2.13, the lab
/// build as shipped and the lab build with the fix series, side by side.
/// RFC.md's end-to-end section, from the committed framebuffer run.
fn fb_e2e_md(root: &std::path::Path) -> String {
    let path = root.join("rfc/evidence/framebuffer-e2e/e2e.json");
    let rows: Option<Vec<kernel_lab::framebuffer::host::FbRow>> =
        std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok());
    match rows {
        Some(rows) => rfc::fb_e2e::rfc_section(&rows),
        None => format!(
            "No end-to-end framebuffer run at {}: run `cargo run --release -p rfc -- --real-allocator`.\n",
            path.display()
        ),
    }
}

fn lab_matrix_md(root: &std::path::Path) -> String {
    use kernel_lab::matrix::{MatrixReport, Part, Summary};
    let path = root.join("rfc/evidence/lab-matrix/matrix.json");
    let Some(m) = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str::<MatrixReport>(&t).ok())
    else {
        return format!("No lab matrix report at {}: run `cargo run --release -p kernel-lab -- matrix --out rfc/evidence/lab-matrix`.\n", path.display());
    };
    let mut md = format!(
        "Debian's own `linux-source-7.2` 7.2.13-1, built by the lab with a debug configuration \
         (`kernel-lab/config/lab.config`: KASAN, kmemleak, lockdep, fault injection, DMA-API debug, IOMMUFD) as \
         shipped (`lab-shipped`) and with `kernel-patches/` applied (`lab-patched`), beside Debian's own 7.2.13 \
         kernel, all under the same QEMU topologies ({}, `kernel-lab matrix`; full report: \
         [matrix.md](evidence/lab-matrix/matrix.md), [JSON](evidence/lab-matrix/matrix.json)).\n\n",
        m.date
    );
    let kernels: Vec<&String> = m.kernels.iter().collect();
    md.push_str("| part |");
    for k in &kernels {
        md.push_str(&format!(" {k} |"));
    }
    md.push_str("\n| --- |");
    for _ in &kernels {
        md.push_str(" --- |");
    }
    md.push('\n');
    for part in Part::ALL {
        md.push_str(&format!("| {} |", part.name()));
        for k in &kernels {
            let cell = match m.run(k, part).and_then(|r| r.summary.as_ref()) {
                None => "not run".to_string(),
                Some(Summary::Conformance(c)) => match &c.feature_absent {
                    Some(e) => format!("feature absent ({e})"),
                    None => format!("{} cases, {} disagreements", c.cases, c.disagreements),
                },
                Some(Summary::Importer(i)) => {
                    let multi: Vec<_> =
                        i.shapes.iter().filter(|s| s.nr_ranges > 1 && s.topology.contains("iova")).collect();
                    let mapped = multi.iter().filter(|s| s.map == "0" && s.reads_ok == s.reads).count();
                    let failed: std::collections::BTreeSet<&str> =
                        multi.iter().filter(|s| s.map != "0").map(|s| s.map.as_str()).collect();
                    format!(
                        "IOVA path, nr_ranges > 1: {mapped} of {} shapes mapped and read intact by edu{}; {} unexplained",
                        multi.len(),
                        if failed.is_empty() { String::new() } else { format!(", the rest fail with {}", failed.into_iter().collect::<Vec<_>>().join("/")) },
                        i.unexplained
                    )
                }
                Some(other) => lab_cell(other),
            };
            md.push_str(&format!(" {cell} |"));
        }
        md.push('\n');
    }
    md
}

/// A selftest or fault-sweep cell of the lab matrix table.
fn lab_cell(s: &kernel_lab::matrix::Summary) -> String {
    use kernel_lab::matrix::Summary;
    match s {
        Summary::Selftest(t) => {
            let (p, f, k) = t.devices.iter().fold((0, 0, 0), |(a, b, c), d| (a + d.1, b + d.2, c + d.3));
            let caught = t.breakages.iter().filter(|b| b.1).count();
            let breakages = if t.breakages.is_empty() {
                String::new()
            } else {
                format!(
                    "; {caught} of {} breakage boots as declared (each removed check fails exactly the tests named after its rule, the unchanged control fails none)",
                    t.breakages.len()
                )
            };
            format!("feature {}: {p} pass, {f} fail, {k} skip{breakages}", t.feature)
        }
        Summary::Fault(f) => {
            let defects: Vec<String> = f.defects.iter().map(|(id, v, _)| format!("{id} {v}")).collect();
            let leaks: usize = f.kmemleak.iter().map(|k| k.0).sum();
            if defects.is_empty() {
                f.verdict.clone()
            } else {
                format!(
                    "defects {}; kmemleak {leaks} objects; {} other sanitizer lines; {} unexplained",
                    defects.join(", "),
                    f.sanitizer.len(),
                    f.failures
                )
            }
        }
        Summary::Framebuffer(f) => f.line(),
        Summary::Iommufd(i) => i.line(),
        Summary::Conformance(_) | Summary::Importer(_) => String::new(),
    }
}

fn defects_md(f: &report::Findings) -> String {
    defects_section(f.kernel_iova_failures, f.multi_range_needed)
}

/// The defects section from `kmod_shim::DEFECTS` and the framebuffer
/// experiment's count of multi-range IOVA map failures.
fn defects_section(kernel_iova_failures: usize, multi_range_needed: usize) -> String {
    use kmod_shim::{DefectStatus, Fidelity, Injection, DEFECTS};
    let ids = |want: fn(&DefectStatus) -> bool| -> Vec<String> {
        DEFECTS.iter().filter(|d| want(&d.status)).map(|d| d.id.to_string()).collect()
    };
    let unconfirmed = ids(|s| matches!(s, DefectStatus::Unconfirmed));
    // Confirmed only with an injection: the error paths.
    let lab_build = ids(
        |s| matches!(s, DefectStatus::Confirmed { injection, gone_on_patched: true, .. } if *injection != Injection::None),
    );
    let mut error_paths = String::new();
    if !lab_build.is_empty() {
        error_paths.push_str(&format!(
            "Defects {} are error paths Debian's kernels cannot inject faults into; each is confirmed on the lab \
             build of Debian's 7.2.13 source (7.2.13-nrlab: fail-nth, a kprobe return override, DMA-API \
             debugging; the IOVA leaks decided under `iommu.strict=1`) and gone on the same build with the patch \
             series in `kernel-patches/` (FINDINGS F7). ",
            lab_build.join(", ")
        ));
    }
    let by_kmemleak: Vec<String> = DEFECTS
        .iter()
        .filter_map(|d| match d.status {
            DefectStatus::Confirmed {
                trace: kmod_shim::LabTrace::Kmemleak { .. },
                gone_on_patched: true,
                finding,
                ..
            } => Some(format!("{} ({finding})", d.id)),
            _ => None,
        })
        .collect();
    if !by_kmemleak.is_empty() {
        error_paths.push_str(&format!(
            "Defect {} needs no fault and no second range: the lab found it, a kmemleak scan on the lab build \
             reporting one leaked scatterlist per map/unmap cycle, and it is gone with the series. ",
            by_kmemleak.join(", ")
        ));
    }
    if !unconfirmed.is_empty() {
        error_paths.push_str(&format!(
            "Defects {} are error paths the importer has not exercised yet (they need error injection) and \
             remain unconfirmed. ",
            unconfirmed.join(", ")
        ));
    }
    let fixed = ids(|s| matches!(s, DefectStatus::FixedUpstream { .. }));
    let read_from: Vec<&str> = DEFECTS.iter().map(|d| d.read_from).fold(Vec::new(), |mut v, r| {
        if !v.contains(&r) {
            v.push(r);
        }
        v
    });
    let mut s = format!(
        "Found by reading the source (drivers/dma-buf/dma-buf-mapping.c, drivers/vfio/pci/vfio_pci_dmabuf.c, \
         drivers/iommu/dma-iommu.c of the {} trees); modelled by kmod-shim's kernel-faithful mode \
         (`Fidelity::Kernel`, Linux {}), each covered by a kmod-shim test.\n\n\
         **Defect 1 is confirmed on the running kernel**, Linux 7.2.13 and 7.3.4 under QEMU with intel-iommu: the \
         kernel lab's test importer maps a dma-buf through `dma_buf_map_attachment()` on the IOVA path, and every \
         dma-buf with two or more ranges fails with EADDRINUSE while single ranges (up to a whole 8 GiB BAR) map \
         and the peer's DMA reads the right bytes. The fixture repeats the kernel's IOVA steps by hand and shows \
         the fix: linking range i at the sum of the earlier lengths maps every shape, and the peer reads each \
         range's own bytes in order; on the lab build of 7.2.13 the same map fails as shipped and works with \
         `kernel-patches/0001`, the peer reading both ranges in order. Report: [kernel-importer-7.2.md](evidence/kernel-importer-7.2.md) \
         ([JSON](evidence/kernel-importer-7.2.json)); write-up and reproducer: \
         [kernel-lab/FINDINGS.md](../kernel-lab/FINDINGS.md). Until that is fixed, the multi-range UAPI \
         merged in 6.19 delivers nothing to an importer behind a translating Intel IOMMU. {}\
         Defect {} is fixed upstream and listed for the record only: 7.2.13 has the fix, so `Fidelity::Kernel` \
         releases once; `Fidelity::KernelPre70Rc6` models the code before it.\n\n\
         The list below is kmod-shim's defect table (`kmod_shim::DEFECTS`):\n\n",
        read_from.join(", "),
        Fidelity::KERNEL_VERSION,
        error_paths,
        fixed.join(", "),
    );
    for d in DEFECTS {
        s.push_str(&format!("{d}\n"));
    }
    s.push_str(&format!(
        "\nMeasured consequence of defect 1 in the model: the multi-range IOVA map fails (EADDRINUSE) in {} of the {} \
         scattered framebuffers that need more than one range, i.e. every one; single-range dma-bufs map.\n",
        kernel_iova_failures, multi_range_needed
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::defects_section;

    #[test]
    fn defects_section_reads_the_table() {
        let s = defects_section(3, 3);
        for d in kmod_shim::DEFECTS {
            assert!(s.contains(&format!("{}. **{}**", d.id, d.title)), "defect {} missing", d.id);
        }
        assert!(s.contains("Defects 2, 3, 4 are error paths Debian's kernels cannot inject faults into"), "{s}");
        assert!(s.contains("Defect 5 is fixed upstream"), "{s}");
        assert!(s.contains("Defect 6 (F9) needs no fault"), "{s}");
        assert!(s.contains("fixed upstream in v7.0-rc6 (commit e98137f0a874"), "{s}");
    }
}
