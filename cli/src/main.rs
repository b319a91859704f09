//! `nr-ranges`: check `VFIO_DEVICE_FEATURE(DMA_BUF)` requests against the
//! validator, or encode them as the ioctl's bytes. See `docs/cli-formats.md`.

use std::io::{self, ErrorKind};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use nr_ranges::{load_device, run, Mode};
use validator::Policy;

/// Exit status for a fatal error: bad usage, bad device file, I/O error.
const EXIT_FATAL: u8 = 2;

/// VFIO_DEVICE_FEATURE_DMA_BUF requests as JSON lines: check them against
/// the validator, or encode them as ioctl bytes.
///
/// Reads one request per line on stdin, writes one answer per line on
/// stdout. A malformed line gets a "line N: ..." message on stderr and no
/// answer; the exit status is then 1. Fatal errors exit with 2. Formats:
/// docs/cli-formats.md.
#[derive(Debug, Parser)]
#[command(name = "nr-ranges", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the kernel's verdict for each request line
    ///
    /// Verdicts: {"result":"fd","size":N}, {"result":"probe"},
    /// {"result":"other-feature","feature":N} or
    /// {"errno":"EINVAL","check":"NAME"[,"index":N]}.
    Check {
        /// The device file: {"page_size":4096,"kmalloc_max":N,"bars":[{"index":2,"kind":"mem","start":N,"len":N}]}.
        #[arg(long, value_name = "DEVICE.json")]
        device: PathBuf,
        /// The rules: Linux 7.2 as it is, or Linux plus nr-ranges' proposed checks.
        #[arg(long, value_enum, default_value_t = PolicyArg::Linux)]
        policy: PolicyArg,
    },
    /// Print the bytes of each request's ioctl argument as lowercase hex
    ///
    /// The bytes are the feature header, the dma-buf header, then the ranges
    /// as written, in host byte order.
    Encode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PolicyArg {
    /// Linux 7.2 exactly.
    Linux,
    /// Linux plus the checks nr-ranges proposes.
    Strict,
}

impl From<PolicyArg> for Policy {
    fn from(p: PolicyArg) -> Self {
        match p {
            PolicyArg::Linux => Policy::Linux,
            PolicyArg::Strict => Policy::Strict,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let device;
    let mode = match cli.command {
        Command::Check { device: path, policy } => {
            device = match load_device(&path) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("nr-ranges: {e}");
                    return ExitCode::from(EXIT_FATAL);
                }
            };
            Mode::Check { device: &device, policy: policy.into() }
        }
        Command::Encode => Mode::Encode,
    };
    match run(mode, io::stdin().lock(), io::stdout().lock(), io::stderr().lock()) {
        Ok(summary) => ExitCode::from(summary.exit_status()),
        // The reader of stdout went away: nobody is left to answer.
        Err(e) if e.kind() == ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nr-ranges: I/O error: {e}");
            ExitCode::from(EXIT_FATAL)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
