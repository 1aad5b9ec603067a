//! Issue 18: the worker pool keeps each tenant's webhooks in their desired state: a changed
//! URL or header value updates the webhook (by its recorded Id, or found by Retrieve when
//! the Id is gone), a delete line removes it, the same body again is a duplicate; on the
//! Redis queue and the embedded one, against the simulator over real HTTP, with and
//! without LeadSquared's faults.

mod common;
mod revision_support;
mod worker_support;

use std::collections::BTreeMap;
use std::time::Duration;

use lsq_webhooks::job::{JobState, Outcome};
use lsq_webhooks::leadsquared::WebhookId;
use lsq_webhooks::queue::{Pushed, QueueConfig};
use lsq_webhooks::sim::Faults;
use revision_support::*;
use worker_support::*;

const WINDOW: Duration = Duration::from_secs(1);

async fn converges(backend: Backend, faults: Faults, test: &str) {
    let lossy = faults.created_then_error_rate > 0.0;
    let nowhere = url::Url::parse("http://127.0.0.1:1").expect("url");
    let mut config = sim_config(&tenants(&nowhere, 3, &[25]), WINDOW);
    config.faults = faults;
    let sim = start_sim(config).await;
    let ts = tenants(&sim.server.base_url(), 3, &[25]);
    let queue = queue(
        backend,
        test,
        QueueConfig {
            window: WINDOW,
            max_attempts: 20,
            ..QueueConfig::default()
        },
    )
    .await;
    queue.put_tenants(&ts).await.expect("tenants");

    let url = |t: &str, n: usize, v: u32| format!("https://hooks.example/{t}/{n}/v{v}");
    let first: Vec<_> = ts
        .iter()
        .flat_map(|t| (0..4).map(move |n| (t.name.clone(), n)))
        .map(|(t, n)| create(&t, hook(&t, n, &url(&t, n, 1), "s1")))
        .collect();
    queue.push(&first).await.expect("push");
    drain(queue.clone()).await;
    assert_sim_holds(&sim.stats(), &desired(&first));

    // The hand of an operator: hook 3 of t00 deleted and made again by hand under a new
    // Id; hook 2 of t01 and hook 3 of t02 deleted.
    let c = client(Duration::from_secs(2));
    let stats = sim.stats();
    let id_of = |t: &str, n: usize| {
        stats.accounts[t]
            .webhooks
            .iter()
            .find(|w| w.description == description(t, n))
            .map(|w| WebhookId(w.id.clone()))
            .expect("created")
    };
    let by_hand = async |t: &lsq_webhooks::tenant::Tenant, n: usize, recreate: bool| {
        // Faults may hit these calls too: repeat until the state is the one wanted.
        for _ in 0..50 {
            let _ = c.delete(t, &id_of(&t.name, n)).await;
            let gone = !sim.stats().accounts[&t.name]
                .webhooks
                .iter()
                .any(|w| w.description == description(&t.name, n));
            if gone {
                break;
            }
        }
        if recreate {
            let w = lsq_webhooks::leadsquared::CreateWebhook::from_value(&hook(
                &t.name,
                n,
                &url(&t.name, n, 1),
                "s1",
            ))
            .expect("valid");
            for _ in 0..50 {
                let _ = c.create(t, &w).await;
                let made = sim.stats().accounts[&t.name]
                    .webhooks
                    .iter()
                    .filter(|w| w.description == description(&t.name, n))
                    .count();
                if made > 0 {
                    assert_eq!(made, 1);
                    break;
                }
            }
        }
    };
    by_hand(&ts[0], 3, true).await;
    by_hand(&ts[1], 2, false).await;
    by_hand(&ts[2], 3, false).await;

    // The second file: per tenant, hook 0 moves, hook 1 is the same, hook 2 is deleted,
    // hook 3 rotates its header value, hook 4 is new; and a delete of a key never pushed.
    let mut second = Vec::new();
    for t in &ts {
        let t = t.name.as_str();
        second.push(create(t, hook(t, 0, &url(t, 0, 2), "s1")));
        second.push(create(t, hook(t, 1, &url(t, 1, 1), "s1")));
        second.push(delete(&create(t, hook(t, 2, &url(t, 2, 1), "s1"))));
        second.push(create(t, hook(t, 3, &url(t, 3, 1), "s2")));
        second.push(create(t, hook(t, 4, &url(t, 4, 1), "s1")));
    }
    let mut never = create("t02", hook("t02", 9, &url("t02", 9, 1), "s1"));
    never.key = "never-pushed".into();
    second.push(delete(&never));
    let pushed = queue.push(&second).await.expect("push");
    let duplicates = pushed
        .iter()
        .filter(|p| matches!(p, Pushed::Duplicate { .. }))
        .count();
    assert_eq!(duplicates, 3, "hook 1 of each tenant is unchanged");
    drain(queue.clone()).await;

    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    assert_sim_holds(&sim.stats(), &desired(&all));
    let results = queue.results(None).await.expect("results");
    assert!(
        results.iter().all(|r| r.status == JobState::Done),
        "{results:?}"
    );
    let mut outcomes: BTreeMap<Outcome, usize> = BTreeMap::new();
    for r in &results {
        *outcomes
            .entry(r.outcome.unwrap_or(Outcome::Created))
            .or_default() += 1;
    }
    // 12 first creates and 3 new hooks, and t02's hook 3, deleted by hand before its
    // rotation, created again by the update; 3 moves and 2 rotations (t00's of the hook
    // made again by hand, found by Retrieve); t00's and t02's hook 2 deleted; t01's, deleted
    // by hand, and the never-pushed key not found. A delete whose answer was lost finds the
    // webhook gone when it is repeated: with faults, some deletes end as not found.
    let count = |o: Outcome| outcomes.get(&o).copied().unwrap_or(0);
    // With lost answers an update that created its webhook again may be repeated, and
    // then finds it and updates it: the split between the two may move, not their sum.
    assert_eq!(
        count(Outcome::Created) + count(Outcome::Updated),
        21,
        "{outcomes:?}"
    );
    assert_eq!(
        count(Outcome::Deleted) + count(Outcome::NotFound),
        4,
        "{outcomes:?}"
    );
    if lossy {
        let stats = sim.stats();
        let lost: u64 = stats
            .accounts
            .values()
            .map(|a| a.faults.created_then_error + a.faults.resets + a.faults.errors)
            .sum();
        assert!(lost > 0, "no fault was injected: the case tests nothing");
    } else {
        assert_eq!(count(Outcome::Created), 16, "{outcomes:?}");
        assert_eq!(count(Outcome::Deleted), 2, "{outcomes:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_updates_deletes_and_duplicates_converge() {
    converges(Backend::Redis, Faults::default(), "rev-redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_updates_deletes_and_duplicates_converge() {
    converges(Backend::Embedded, Faults::default(), "rev-emb").await;
}

/// Lost answers: every change may be done and answered 500, answered 500 undone, or its
/// connection reset; the retries converge to the same state with no duplicate.
fn lossy() -> Faults {
    Faults {
        seed: 18,
        error_rate: 0.1,
        created_then_error_rate: 0.2,
        reset_rate: 0.05,
        ..Faults::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_updates_and_deletes_whose_answers_were_lost_converge() {
    converges(Backend::Redis, lossy(), "rev-redis-lossy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_updates_and_deletes_whose_answers_were_lost_converge() {
    converges(Backend::Embedded, lossy(), "rev-emb-lossy").await;
}
