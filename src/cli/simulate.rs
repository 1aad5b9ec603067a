//! `lsq-webhooks simulate`: run the LeadSquared simulator until SIGINT/SIGTERM.
//!
//! Prints `listening on http://ADDR` on standard output once bound (so a script that asked
//! for port 0 can read the port), then serves until told to stop.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
use tokio_util::sync::CancellationToken;

use super::{BadInput, Global};
use crate::sim::{AccountSource, Faults, RateLimitStyle, SimConfig, SimState};

/// Arguments of `simulate`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("accounts").required(true).args(["tenants", "any_account"])))]
pub struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8089")]
    pub listen: SocketAddr,
    /// Accept the tenants of this tenants CSV (their keys and limits).
    #[arg(long, value_name = "FILE")]
    pub tenants: Option<PathBuf>,
    /// Accept any keys: each access key is an account with --default-limit.
    #[arg(long)]
    pub any_account: bool,
    /// Calls per window for --any-account accounts.
    #[arg(long, default_value_t = crate::tenant::DEFAULT_LIMIT)]
    pub default_limit: u32,
    /// The rate-limit window in milliseconds (LeadSquared's is 5000).
    #[arg(long, default_value_t = 5000)]
    pub window_ms: u64,
    /// Whether refused calls count against the window.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub count_rejected: bool,
    /// How the rate-limit error arrives: HTTP 429, 200 with "Status":"Error", or 403.
    #[arg(long, value_enum, default_value_t = Style::S429)]
    pub rate_limit_style: Style,
    /// Send Retry-After with the rate-limit error.
    #[arg(long)]
    pub retry_after: bool,
    /// Accept event 2 without a top-level ActivityEvent (LeadSquared reportedly refuses it).
    #[arg(long)]
    pub lenient_event_2: bool,
    /// Seed of the fault generator.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Share of admitted calls answered 500 without being processed (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Share of admitted Create calls that create the webhook, then answer 500 (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub created_then_error_rate: f64,
    /// Share of admitted calls whose connection is reset without an answer (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub reset_rate: f64,
    /// Latency added to every admitted call, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Up to this many more milliseconds, drawn uniformly.
    #[arg(long, default_value_t = 0)]
    pub latency_jitter_ms: u64,
    /// Another client (the tenant's own integrations) on every account: this many calls per
    /// window on average, at random (Poisson) times, counted against the same window.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub other_client_calls: u32,
    /// The other client's calls per window for one account (tenant name, or `key-...` under
    /// --any-account), instead of --other-client-calls. Repeatable.
    #[arg(long, value_name = "ACCOUNT=N")]
    pub other_client_calls_for: Vec<String>,
    /// The other client retries each refused call once, this many milliseconds later (by
    /// default it never retries).
    #[arg(long, value_name = "MS")]
    pub other_client_retry_ms: Option<u64>,
    /// Calls per day every account may make, every client's counted; answered once spent with
    /// "API calls exceeded the limit of N in 86400 second(s)". No quota by default.
    #[arg(long, value_name = "N")]
    pub daily_limit: Option<u32>,
    /// The daily limit of one account, instead of --daily-limit. Repeatable.
    #[arg(long, value_name = "ACCOUNT=N")]
    pub daily_limit_for: Vec<String>,
    /// The quota's day in milliseconds (the UTC day by default; shorter for tests).
    #[arg(long, default_value_t = 86_400_000)]
    pub day_ms: u64,
    /// Serve one more region on another address (`NAME=ADDR`, or `NAME=PORT` for
    /// 127.0.0.1): any call of an account of another region answers 401 there, except
    /// UserByAccessKey.Get. `--listen` serves the region `default`. Repeatable.
    #[arg(long, value_name = "NAME=ADDR")]
    pub region: Vec<String>,
    /// The region an account lives in (`ACCOUNT=NAME`; others live in `default`).
    /// Repeatable.
    #[arg(long, value_name = "ACCOUNT=NAME")]
    pub account_region: Vec<String>,
}

/// `--region` values: name → address.
fn regions(values: &[String]) -> Result<BTreeMap<String, SocketAddr>, BadInput> {
    let mut out = BTreeMap::new();
    for v in values {
        let parsed = v.split_once('=').and_then(|(name, at)| {
            let at = at.trim();
            let addr = match at.parse::<u16>() {
                Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
                Err(_) => at.parse().ok()?,
            };
            Some((name.trim().to_string(), addr))
        });
        match parsed {
            Some((name, _)) if name.is_empty() || name == crate::sim::DEFAULT_REGION => {
                return Err(BadInput(format!(
                    "--region: {v:?}: a region needs a name other than \"default\" (--listen serves that one)"
                )));
            }
            Some((name, addr)) => {
                if out.insert(name.clone(), addr).is_some() {
                    return Err(BadInput(format!("--region: {name:?} is given twice")));
                }
            }
            None => {
                return Err(BadInput(format!(
                    "--region: expected NAME=ADDR or NAME=PORT, got {v:?}"
                )));
            }
        }
    }
    Ok(out)
}

/// `--account-region` values: account → region, each region one that is served.
fn account_regions(
    values: &[String],
    served: &BTreeMap<String, SocketAddr>,
) -> Result<BTreeMap<String, String>, BadInput> {
    let mut out = BTreeMap::new();
    for v in values {
        let Some((account, region)) = v
            .split_once('=')
            .map(|(a, r)| (a.trim(), r.trim()))
            .filter(|(a, r)| !a.is_empty() && !r.is_empty())
        else {
            return Err(BadInput(format!(
                "--account-region: expected ACCOUNT=NAME, got {v:?}"
            )));
        };
        if region != crate::sim::DEFAULT_REGION && !served.contains_key(region) {
            return Err(BadInput(format!(
                "--account-region: {account:?} lives in {region:?}, which no --region serves"
            )));
        }
        if out
            .insert(account.to_string(), region.to_string())
            .is_some()
        {
            return Err(BadInput(format!(
                "--account-region: {account:?} is given twice"
            )));
        }
    }
    Ok(out)
}

/// `ACCOUNT=N` values of a repeatable flag, by account.
fn per_account(flag: &str, values: &[String]) -> Result<BTreeMap<String, u32>, BadInput> {
    let mut out = BTreeMap::new();
    for v in values {
        let parsed = v
            .rsplit_once('=')
            .and_then(|(a, n)| Some((a.trim(), n.trim().parse::<u32>().ok()?)))
            .filter(|(a, _)| !a.is_empty());
        let Some((account, n)) = parsed else {
            return Err(BadInput(format!(
                "{flag}: expected ACCOUNT=N (N a whole number), got {v:?}"
            )));
        };
        if out.insert(account.to_string(), n).is_some() {
            return Err(BadInput(format!("{flag}: {account:?} is given twice")));
        }
    }
    Ok(out)
}

/// `--rate-limit-style` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Style {
    /// HTTP 429.
    #[value(name = "429")]
    S429,
    /// HTTP 200 with "Status":"Error".
    #[value(name = "200")]
    S200,
    /// HTTP 403.
    #[value(name = "403")]
    S403,
}

impl Args {
    /// The simulator configuration these arguments describe.
    pub fn config(&self) -> anyhow::Result<SimConfig> {
        let accounts = match &self.tenants {
            Some(path) => AccountSource::Tenants(
                crate::tenant::read_file(path).map_err(|e| BadInput(e.to_string()))?,
            ),
            None => AccountSource::AnyAccount,
        };
        if self.window_ms == 0 {
            return Err(BadInput("--window-ms must be at least 1".into()).into());
        }
        if self.day_ms == 0 {
            return Err(BadInput("--day-ms must be at least 1".into()).into());
        }
        Ok(SimConfig {
            accounts,
            default_limit: self.default_limit,
            window: Duration::from_millis(self.window_ms),
            count_rejected: self.count_rejected,
            rate_limit_style: match self.rate_limit_style {
                Style::S429 => RateLimitStyle::TooManyRequests,
                Style::S200 => RateLimitStyle::OkWithError,
                Style::S403 => RateLimitStyle::Forbidden,
            },
            retry_after: self.retry_after,
            require_activity_event_for_event_2: !self.lenient_event_2,
            faults: Faults {
                seed: self.seed,
                error_rate: self.error_rate,
                created_then_error_rate: self.created_then_error_rate,
                reset_rate: self.reset_rate,
                latency: Duration::from_millis(self.latency_ms),
                latency_jitter: Duration::from_millis(self.latency_jitter_ms),
            },
            other_client_calls: self.other_client_calls,
            other_client_calls_for: per_account(
                "--other-client-calls-for",
                &self.other_client_calls_for,
            )?,
            other_client_retry: self.other_client_retry_ms.map(Duration::from_millis),
            daily_limit: self.daily_limit,
            daily_limit_for: per_account("--daily-limit-for", &self.daily_limit_for)?,
            day: Duration::from_millis(self.day_ms),
            account_regions: account_regions(&self.account_region, &regions(&self.region)?)?,
        })
    }
}

/// Runs `simulate`.
pub async fn run(_global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let config = args.config()?;
    let extra = regions(&args.region)?;
    let state = SimState::new(config).map_err(|e| BadInput(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let shutdown = CancellationToken::new();
    // Watch the signals before announcing the address: a script may send SIGTERM as soon as
    // it has read the line.
    let signals = super::worker::cancel_on_signal(shutdown.clone())?;
    let server = crate::sim::serve(listener, state, shutdown.clone())
        .context("cannot start the simulator")?;
    // Everything the simulator has to say, in one write once every listener is up: a reader
    // that takes the first line and goes away (a test, `| head -1`) then leaves no later line
    // to meet a closed pipe, which would stop the simulator.
    let mut announce = format!("listening on http://{}\n", server.local_addr());
    tracing::info!(addr = %server.local_addr(), "LeadSquared simulator listening");
    let mut others = Vec::new();
    for (name, addr) in &extra {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for region {name}"))?;
        let region =
            crate::sim::serve_region(listener, server.state().clone(), name, shutdown.clone())
                .context("cannot start the simulator")?;
        announce.push_str(&format!(
            "region {name} listening on http://{}\n",
            region.local_addr()
        ));
        others.push(region);
    }
    // Discovery answers on every region's host; a worker left at the default discovery URL
    // asks the real LeadSquared, which knows none of the simulator's keys.
    announce.push_str(&format!(
        "discovery: --discovery-url http://{} (or LSQ_DISCOVERY_URL)\n",
        server.local_addr()
    ));
    write!(super::output::stdout(), "{announce}")?;
    shutdown.cancelled().await;
    // The watcher has ended: it cancelled the token, or saw it cancelled.
    let _ = signals.await;
    tracing::info!("shutting down");
    shutdown.cancel();
    server.join().await;
    for region in others {
        region.join().await;
    }
    Ok(ExitCode::SUCCESS)
}
