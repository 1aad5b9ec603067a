//! Tenants as they really are (issue 14), through the worker pool against the simulator
//! over real HTTP, on both queue backends: hosts discovered with `UserByAccessKey.Get`
//! lazily across two regions, a wrong region's 401 rediscovered without spending an
//! attempt, bad keys parking the tenant after a few calls (jobs intact, resumed by a
//! re-import), and an unreachable host (refused, or silent until each call times out)
//! holding its tenant while the others run.
//!
//! Counts, never timings: how many calls reached the simulator, how many attempts each job
//! spent, where each job ended.

mod common;
mod worker_support;

use std::sync::Arc;
use std::time::Duration;

use lsq_webhooks::job::JobState;
use lsq_webhooks::queue::{HoldKind, Queue, QueueConfig, UnreachablePolicy};
use lsq_webhooks::secret::Secret;
use lsq_webhooks::sim::{self, SimServer, SimState};
use lsq_webhooks::tenant::Tenant;
use lsq_webhooks::worker::{Pool, PoolTotals, RetryPolicy, WorkerConfig};
use tokio_util::sync::{CancellationToken, DropGuard};
use worker_support::*;

const WINDOW: Duration = Duration::from_secs(1);

/// A simulator serving the region `default` and the region `eu` on two ports.
struct Regions {
    home: SimServer,
    eu: SimServer,
    _stop: DropGuard,
}

impl Regions {
    async fn start(tenants: &[Tenant], in_eu: &[&str]) -> Regions {
        let mut config = sim_config(tenants, WINDOW);
        for name in in_eu {
            config
                .account_regions
                .insert((*name).to_string(), "eu".into());
        }
        let state = SimState::new(config).expect("valid simulator config");
        let stop = CancellationToken::new();
        let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
        let home =
            sim::serve(bind().await.expect("bind"), state.clone(), stop.clone()).expect("serve");
        let eu = sim::serve_region(bind().await.expect("bind"), state, "eu", stop.clone())
            .expect("serve");
        Regions {
            home,
            eu,
            _stop: stop.drop_guard(),
        }
    }
}

fn tenant(name: &str, api_base: Option<url::Url>, secret: &str) -> Tenant {
    Tenant {
        name: name.into(),
        api_base,
        access_key: Secret::new(format!("ak-{name}")),
        secret_key: Secret::new(secret.to_string()),
        limit: 25,
        reserve: 0,
        daily_limit: None,
    }
}

fn good(name: &str, api_base: Option<url::Url>) -> Tenant {
    tenant(name, api_base, &format!("sk-{name}"))
}

fn worker_config(concurrency: usize, discovery_url: url::Url) -> WorkerConfig {
    WorkerConfig {
        concurrency,
        exit_when_idle: true,
        retry: RetryPolicy {
            base: Duration::from_millis(10),
            factor: 2.0,
            cap: Duration::from_millis(200),
        },
        reconcile_settle: Duration::from_millis(300),
        tenant_cache_ttl: Duration::from_millis(200),
        discovery_url,
        ..WorkerConfig::default()
    }
}

async fn run(queue: Arc<dyn Queue>, config: WorkerConfig) -> PoolTotals {
    let pool = Pool::new(queue, client(Duration::from_secs(10)), config);
    tokio::time::timeout(Duration::from_secs(120), pool.run(CancellationToken::new()))
        .await
        .expect("the pool finishes and exits when idle")
        .expect("the pool ran")
}

async fn new_queue(backend: Backend, test: &str) -> Arc<dyn Queue> {
    queue(
        backend,
        test,
        QueueConfig {
            window: WINDOW,
            max_attempts: 8,
            ..QueueConfig::default()
        },
    )
    .await
}

async fn lazy_discovery_across_two_regions(backend: Backend) {
    let home_t = good("home", None);
    let eu_t = good("euro", None);
    let sim = Regions::start(&[home_t.clone(), eu_t.clone()], &["euro"]).await;
    let queue = new_queue(backend, "dlazy").await;
    queue
        .put_tenants(&[home_t.clone(), eu_t.clone()])
        .await
        .expect("tenants");
    queue
        .push(&jobs(&[home_t.clone(), eu_t.clone()], 6))
        .await
        .expect("push");
    // Discovery asks the home region's host about both: it answers for every account.
    run(queue.clone(), worker_config(8, sim.home.base_url())).await;
    let stats = sim.home.stats();
    assert_all_done_and_matching(queue.as_ref(), &stats, 12).await;
    let host = |name: &str| {
        let q = queue.clone();
        let name = name.to_string();
        async move {
            q.tenant(&name)
                .await
                .expect("tenant")
                .expect("known")
                .api_base
        }
    };
    assert_eq!(host("home").await, Some(sim.home.base_url()));
    assert_eq!(host("euro").await, Some(sim.eu.base_url()));
    for name in ["home", "euro"] {
        let a = &stats.accounts[name];
        assert_eq!(a.webhooks.len(), 6, "{name}");
        assert_eq!(a.wrong_region, 0, "{name}: no call went to the wrong host");
        // One discovery per tenant; jobs dispatched meanwhile waited for it in this
        // process instead of asking again.
        assert_eq!(a.discovery_calls, 1, "{name}: {a:?}");
        assert_eq!(a.calls, a.create_calls + a.discovery_calls, "{name}: {a:?}");
    }
    for r in queue.results(None).await.expect("results") {
        assert_eq!(r.attempts, 1, "discovery spends no attempt: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_hosts_are_discovered_lazily_across_two_regions() {
    lazy_discovery_across_two_regions(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_hosts_are_discovered_lazily_across_two_regions() {
    lazy_discovery_across_two_regions(Backend::Embedded).await;
}

async fn wrong_region_is_rediscovered(backend: Backend) {
    let moved = good("moved", None);
    let sim = Regions::start(std::slice::from_ref(&moved), &["moved"]).await;
    // Imported with the home region's host; the account lives in eu.
    let stale = Tenant {
        api_base: Some(sim.home.base_url()),
        ..moved
    };
    let queue = new_queue(backend, "dmoved").await;
    queue
        .put_tenants(std::slice::from_ref(&stale))
        .await
        .expect("tenants");
    queue
        .push(&jobs(std::slice::from_ref(&stale), 5))
        .await
        .expect("push");
    run(queue.clone(), worker_config(1, sim.home.base_url())).await;
    let stats = sim.home.stats();
    // Every job done once, none twice, no attempt spent on the 401.
    assert_all_done_and_matching(queue.as_ref(), &stats, 5).await;
    for r in queue.results(None).await.expect("results") {
        assert_eq!(r.attempts, 1, "{r:?}");
    }
    let a = &stats.accounts["moved"];
    assert_eq!(a.wrong_region, 1, "one Create met the wrong host: {a:?}");
    assert_eq!(a.discovery_calls, 1, "{a:?}");
    assert_eq!(a.create_calls, 5, "{a:?}");
    let stored = queue.tenant("moved").await.expect("tenant").expect("known");
    assert_eq!(stored.api_base, Some(sim.eu.base_url()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_wrong_regions_401_is_rediscovered_without_spending_an_attempt() {
    wrong_region_is_rediscovered(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_a_wrong_regions_401_is_rediscovered_without_spending_an_attempt() {
    wrong_region_is_rediscovered(Backend::Embedded).await;
}

/// A tenant with a wrong secret key: `known_host` says whether the tenants file gave its
/// host (Create meets the 401 first) or left it to discovery.
async fn bad_keys_park_and_a_reimport_resumes(backend: Backend, known_host: bool, test: &str) {
    let right = good("bad", None);
    let other = good("fine", None);
    let sim = Regions::start(&[right.clone(), other.clone()], &[]).await;
    let host = known_host.then(|| sim.home.base_url());
    let wrong = tenant("bad", host.clone(), "sk-wrong-secret");
    let fine = good("fine", Some(sim.home.base_url()));
    let queue = new_queue(backend, test).await;
    queue
        .put_tenants(&[wrong.clone(), fine.clone()])
        .await
        .expect("tenants");
    let pushed = queue
        .push(&jobs(std::slice::from_ref(&wrong), 30))
        .await
        .expect("push");
    queue
        .push(&jobs(std::slice::from_ref(&fine), 5))
        .await
        .expect("push");
    // Concurrency 2: with a known host two Creates can be in flight when the 401 comes.
    let totals = run(queue.clone(), worker_config(2, sim.home.base_url())).await;
    assert_eq!(
        totals.buried, 0,
        "keys refused never kill a job: {totals:?}"
    );
    let stats = sim.home.stats();
    // The wrong keys are no account: the simulator counts their calls as unauthorized.
    assert!(
        (1..=3).contains(&stats.unauthorized),
        "calls with the refused keys: {}",
        stats.unauthorized
    );
    assert_eq!(stats.accounts["fine"].webhooks.len(), 5);
    let hold = queue
        .tenant_hold("bad")
        .await
        .expect("hold")
        .expect("the tenant is parked");
    assert_eq!(hold.kind, HoldKind::KeysRefused);
    assert_eq!(hold.reason, "keys refused by LeadSquared (401)");
    let status = queue.status().await.expect("status");
    let row = status
        .tenants
        .iter()
        .find(|t| t.tenant == "bad")
        .expect("row");
    assert_eq!(row.waiting, 30, "every job still queued");
    assert_eq!(
        row.hold.as_ref().map(|h| h.kind),
        Some(HoldKind::KeysRefused)
    );
    for p in &pushed {
        let lsq_webhooks::queue::Pushed::Enqueued { job } = p else {
            panic!("{p:?}");
        };
        let r = queue.job(job).await.expect("job").expect("exists");
        assert_eq!((r.status, r.attempts), (JobState::Queued, 0), "{r:?}");
    }
    // The right keys imported: the tenant resumes and every job is done, once.
    queue
        .put_tenants(&[Tenant {
            api_base: host,
            ..right
        }])
        .await
        .expect("tenants");
    assert_eq!(queue.tenant_hold("bad").await.expect("hold"), None);
    run(queue.clone(), worker_config(4, sim.home.base_url())).await;
    let stats = sim.home.stats();
    assert_all_done_and_matching(queue.as_ref(), &stats, 35).await;
    assert_eq!(stats.accounts["bad"].webhooks.len(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_bad_keys_park_the_tenant_and_a_reimport_resumes_it() {
    bad_keys_park_and_a_reimport_resumes(Backend::Redis, false, "dbad").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_bad_keys_park_the_tenant_and_a_reimport_resumes_it() {
    bad_keys_park_and_a_reimport_resumes(Backend::Embedded, false, "dbad").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_bad_keys_with_a_known_host_park_after_at_most_3_calls() {
    bad_keys_park_and_a_reimport_resumes(Backend::Redis, true, "dbadhost").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_bad_keys_with_a_known_host_park_after_at_most_3_calls() {
    bad_keys_park_and_a_reimport_resumes(Backend::Embedded, true, "dbadhost").await;
}

/// How the host of the tenant `gone` fails.
#[derive(Clone, Copy, PartialEq)]
enum DeadHost {
    /// Nothing listens on its port: every connection is refused.
    Closed,
    /// It accepts connections and never answers: every call times out after it was sent.
    Silent,
}

impl DeadHost {
    /// The address of such a host on loopback.
    fn start(self) -> std::net::SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        if self == DeadHost::Silent {
            // Accepts and keeps every connection open, reading nothing, answering nothing,
            // for the rest of the test process.
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for c in l.incoming().flatten() {
                    held.push(c);
                }
            });
        }
        addr
    }
}

/// Each call to the silent host times out after this; the simulator answers well within it.
const SILENT_TIMEOUT: Duration = Duration::from_secs(2);

async fn unreachable_host_holds_its_tenant(backend: Backend, dead: DeadHost) {
    let fine = good("fine", None);
    let sim = Regions::start(std::slice::from_ref(&fine), &[]).await;
    let addr = dead.start();
    let gone = good(
        "gone",
        Some(url::Url::parse(&format!("http://{addr}")).expect("url")),
    );
    let fine = Tenant {
        api_base: Some(sim.home.base_url()),
        ..fine
    };
    let queue = new_queue(backend, "dgone").await;
    queue
        .put_tenants(&[gone.clone(), fine.clone()])
        .await
        .expect("tenants");
    let gone_jobs = queue
        .push(&jobs(std::slice::from_ref(&gone), 10))
        .await
        .expect("push");
    queue
        .push(&jobs(std::slice::from_ref(&fine), 40))
        .await
        .expect("push");
    let config = WorkerConfig {
        exit_when_idle: false,
        unreachable: UnreachablePolicy {
            after: 3,
            base: Duration::from_millis(500),
            max: Duration::from_secs(2),
            jitter: 1.0,
        },
        ..worker_config(4, sim.home.base_url())
    };
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let (queue, stop) = (queue.clone(), stop.clone());
        async move {
            Pool::new(queue, client(SILENT_TIMEOUT), config)
                .run(stop)
                .await
        }
    });
    // Until the other tenant's 40 jobs are done (a guard of 60 s against a hang).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut seen_hold = None;
    loop {
        if seen_hold.is_none() {
            seen_hold = queue.tenant_hold("gone").await.expect("hold");
        }
        let done = queue
            .results(Some("fine"))
            .await
            .expect("results")
            .iter()
            .filter(|r| r.status == JobState::Done)
            .count();
        if done == 40 && seen_hold.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fine: {done} of 40 done"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    running.await.expect("join").expect("the pool ran");
    let hold = seen_hold.expect("held");
    assert_eq!(hold.kind, HoldKind::HostUnreachable);
    assert!(hold.failures >= 3, "{hold:?}");
    let why = match dead {
        DeadHost::Closed => "unreachable",
        DeadHost::Silent => "timed out",
    };
    assert!(hold.reason.contains(why), "{hold:?}");
    // The other tenant: every job done at its first attempt, nothing refused or limited.
    let stats = sim.home.stats();
    let a = &stats.accounts["fine"];
    assert_eq!(
        (a.webhooks.len(), a.create_calls, a.rate_limited),
        (40, 40, 0)
    );
    for r in queue.results(Some("fine")).await.expect("results") {
        assert_eq!(r.attempts, 1, "{r:?}");
    }
    // The unreachable tenant's jobs: none dead. A refused connection spends no attempt; of
    // a run of timeouts only the first spends one (the call may have been processed, so
    // each job that sent one waits, outcome unknown, to reconcile).
    let mut spent = 0;
    for p in &gone_jobs {
        let lsq_webhooks::queue::Pushed::Enqueued { job } = p else {
            panic!("{p:?}");
        };
        let r = queue.job(job).await.expect("job").expect("exists");
        assert!(
            matches!(r.status, JobState::Queued | JobState::Scheduled),
            "{r:?}"
        );
        spent += r.attempts;
    }
    let most = match dead {
        DeadHost::Closed => 0,
        DeadHost::Silent => 1,
    };
    assert!(
        spent <= most,
        "{spent} attempts spent on an unanswering host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_an_unreachable_host_holds_its_tenant_and_others_run() {
    unreachable_host_holds_its_tenant(Backend::Redis, DeadHost::Closed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_an_unreachable_host_holds_its_tenant_and_others_run() {
    unreachable_host_holds_its_tenant(Backend::Embedded, DeadHost::Closed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_host_that_keeps_timing_out_holds_its_tenant_after_one_attempt() {
    unreachable_host_holds_its_tenant(Backend::Redis, DeadHost::Silent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_a_host_that_keeps_timing_out_holds_its_tenant_after_one_attempt() {
    unreachable_host_holds_its_tenant(Backend::Embedded, DeadHost::Silent).await;
}

/// `tenants import --discover` through the binary, against the two regions: each host found
/// with one call, a refused tenant held at once, the output saying how many of each; a
/// second import keeps the hosts and costs no call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_discovers_hosts_across_two_regions_and_parks_refused_keys() {
    let home_t = good("home", None);
    let eu_t = good("euro", None);
    let sim = Regions::start(&[home_t.clone(), eu_t.clone()], &["euro"]).await;
    let dir = tempfile::tempdir().expect("dir");
    let csv = dir.path().join("tenants.csv");
    std::fs::write(
        &csv,
        "tenant,api_base,access_key,secret_key\n\
         home,,ak-home,sk-home\n\
         euro,,ak-euro,sk-euro\n\
         bad,,ak-bad,sk-wrong\n",
    )
    .expect("write");
    let name = common::unique_queue("dimport");
    let import = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"))
            .args(["tenants", "import", "--discover", "--discovery-url"])
            .arg(sim.home.base_url().as_str())
            .arg(&csv)
            .env("REDIS_URL", common::redis_url())
            .env("LSQ_QUEUE", &name)
            .env("RUST_LOG", "debug")
            .output()
            .expect("run");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        for key in ["sk-home", "sk-euro", "sk-wrong", "ak-home", "ak-bad"] {
            assert!(!text.contains(key), "a key in the output: {text}");
        }
        text
    };
    let first = import();
    assert!(
        first.contains("discovered 2 host(s); 1 tenant(s) held: keys refused by LeadSquared (401); 0 left to the worker"),
        "{first}"
    );
    let queue = lsq_webhooks::queue::redis::RedisQueue::connect(
        &common::redis_url(),
        QueueConfig {
            name: name.clone(),
            ..QueueConfig::default()
        },
    )
    .await
    .expect("connect");
    let host = |t: Option<Tenant>| t.expect("known").api_base;
    assert_eq!(
        host(queue.tenant("home").await.expect("tenant")),
        Some(sim.home.base_url())
    );
    assert_eq!(
        host(queue.tenant("euro").await.expect("tenant")),
        Some(sim.eu.base_url())
    );
    assert_eq!(host(queue.tenant("bad").await.expect("tenant")), None);
    assert_eq!(
        queue
            .tenant_hold("bad")
            .await
            .expect("hold")
            .map(|h| h.kind),
        Some(HoldKind::KeysRefused)
    );
    let stats = sim.home.stats();
    assert_eq!(stats.accounts["home"].discovery_calls, 1);
    assert_eq!(stats.accounts["euro"].discovery_calls, 1);
    assert_eq!(stats.unauthorized, 1);
    // Again: the discovered hosts are kept (same keys), so only the refused tenant is left
    // without one; it is held, so no call is made for it either.
    let second = import();
    assert!(second.contains("0 tenant(s) held"), "{second}");
    let stats = sim.home.stats();
    assert_eq!(stats.accounts["home"].discovery_calls, 1);
    assert_eq!(stats.unauthorized, 1, "a held tenant is not asked again");
    queue.delete_all().await.expect("clean up");
}

/// A discovery host that answers every request 401 (keys refused), `after` it arrived.
async fn slow_refusing_discovery(after: Duration) -> url::Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                tokio::time::sleep(after).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .await;
            });
        }
    });
    url::Url::parse(&format!("http://{addr}")).expect("url")
}

/// Issue 27: jobs of a tenant whose Create met 401 wait, in their worker, for the one
/// discovery of that tenant in flight. The wait keeps their leases alive: with a lease far
/// shorter than the discovery takes, no lease runs out under the live worker, no job is
/// taken back (which spent an attempt each time, and buried jobs "lease expired with all 8
/// attempts spent"), and every job is still queued with its attempts when the tenant is
/// held.
async fn waiting_on_discovery_keeps_the_lease(backend: Backend) {
    let right = good("bad", None);
    let sim = Regions::start(std::slice::from_ref(&right), &[]).await;
    let wrong = tenant("bad", Some(sim.home.base_url()), "sk-wrong-secret");
    let queue = queue(
        backend,
        "dlease",
        QueueConfig {
            window: WINDOW,
            lease: Duration::from_millis(400),
            ..QueueConfig::default()
        },
    )
    .await;
    queue
        .put_tenants(std::slice::from_ref(&wrong))
        .await
        .expect("tenants");
    let pushed = queue
        .push(&jobs(std::slice::from_ref(&wrong), 30))
        .await
        .expect("push");
    let discovery = slow_refusing_discovery(Duration::from_millis(1500)).await;
    let totals = run(queue.clone(), worker_config(16, discovery)).await;
    assert_eq!(
        (totals.lease_lost, totals.buried),
        (0, 0),
        "no lease lost, no job dead: {totals:?}"
    );
    let hold = queue.tenant_hold("bad").await.expect("hold").expect("held");
    assert_eq!(hold.kind, HoldKind::KeysRefused);
    for p in &pushed {
        let lsq_webhooks::queue::Pushed::Enqueued { job } = p else {
            panic!("{p:?}");
        };
        let r = queue.job(job).await.expect("job").expect("exists");
        assert_eq!((r.status, r.attempts), (JobState::Queued, 0), "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_waiting_on_discovery_keeps_the_lease() {
    waiting_on_discovery_keeps_the_lease(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_waiting_on_discovery_keeps_the_lease() {
    waiting_on_discovery_keeps_the_lease(Backend::Embedded).await;
}
