//! The `lsq-webhooks` binary: parse the command line, set up logging, run the command.

use std::process::ExitCode;

use clap::Parser;
use lsq_webhooks::cli;

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_tracing(args.global.log_format, args.command.default_log_level());
    cli::run(args).await
}
