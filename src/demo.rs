//! `avsd demo`: a whole spoken dialog on this machine against an in-process avs-sim.

use std::process::ExitCode;

/// Options of `avsd demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where to write the answer when there is no sound device (default: a temp file).
    #[arg(long)]
    pub output: Option<String>,
}

pub async fn run(_args: DemoArgs) -> ExitCode {
    eprintln!("avsd demo: not wired yet");
    ExitCode::FAILURE
}
