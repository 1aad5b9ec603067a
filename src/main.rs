//! The `lsq-webhooks` binary: parse the command line, set up logging, run the command.

use std::process::ExitCode;

use clap::Parser;
use lsq_webhooks::cli;

/// mimalloc instead of the system allocator: a worker allocates and frees small buffers for
/// every HTTP call and Redis reply, and glibc's malloc/free took about a fifth of a worker
/// process's CPU under load (perf, issue 4). Built without transparent huge pages
/// (`no_thp`): with them, `enqueue` of 1M jobs spent 2.5-3.1 s of system CPU zeroing and
/// compacting huge pages instead of 0.9-1.2 s (docs/decisions.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => return cli::usage_error(e),
    };
    cli::init_tracing(args.global.log_format, args.command.default_log_level());
    cli::run(args).await
}
