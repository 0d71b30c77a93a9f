//! Command-line flags: Pingora's (`-c`, `-t`, `-d`, `-u`) plus `--help` and `--version`.

use clap::Parser;
use pingora_core::server::configuration::Opt;

/// `avx-gateway` command line.
#[derive(Parser, Debug, Default)]
#[command(
    name = "avx-gateway",
    version,
    about = "AVX Gateway: an HTTP reverse proxy and API gateway"
)]
pub struct Cli {
    /// What to do; without one, run the gateway.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Configuration file.
    #[arg(
        short,
        long,
        global = true,
        value_name = "FILE",
        default_value = "conf/gateway.yaml"
    )]
    pub conf: String,
    /// Validate the configuration and exit (0 when valid).
    #[arg(short, long)]
    pub test: bool,
    /// Run in the background.
    #[arg(short, long)]
    pub daemon: bool,
    /// Take the listening sockets over from a running instance (graceful upgrade).
    #[arg(short, long)]
    pub upgrade: bool,
    /// Ignored; accepted so `cargo test` harness flags do not break the parser.
    #[arg(long, hide = true)]
    pub nocapture: bool,
}

/// Subcommands that talk to a running gateway.
#[derive(clap::Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Reload the running gateway's config in-process (POST /reload on the admin listener
    /// named in the file); exits non-zero with the reason when the reload fails or is refused.
    Reload,
}

impl Cli {
    /// The Pingora options these flags stand for; the config itself is loaded by us.
    pub fn pingora_opt(&self) -> Opt {
        Opt {
            upgrade: self.upgrade,
            daemon: self.daemon,
            nocapture: self.nocapture,
            test: self.test,
            conf: None,
        }
    }
}

/// Installs the `log` backend (level from `RUST_LOG`, default `info`) so Pingora's logs show;
/// see [`crate::logging`].
pub fn init_logging() {
    crate::logging::init();
}
