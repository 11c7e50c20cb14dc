//! `avsd`: parses the command line, installs logging and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = avsd::cli::Cli::parse();
    let default_level = match &cli.command {
        avsd::cli::Command::Run => "info",
        _ => "warn",
    };
    avsd::cli::init_logging(cli.verbose, default_level);
    avsd::cli::run(cli)
}
