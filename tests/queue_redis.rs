//! The Redis queue's behaviour against a real Redis: push and idempotency, leases, retries,
//! pauses, dead letters, wakeups, and records damaged in Redis.

mod common;
mod queue_support;

use std::time::Duration;

use lsq_webhooks::job::{JobId, JobState};
use lsq_webhooks::queue::embedded::EmbeddedQueue;
use lsq_webhooks::queue::redis::RedisQueue;
use lsq_webhooks::queue::{Dispatch, Dispatched, LeasedJob, Pushed, Queue, QueueError, Requeue};
use queue_support::{config, connect, job, next_job, raw, redis_now_ms, tenant};
use redis::AsyncCommands;

fn enqueued(p: &[Pushed]) -> Vec<JobId> {
    p.iter()
        .filter_map(|p| match p {
            Pushed::Enqueued { job } => Some(job.clone()),
            Pushed::Duplicate { .. } => None,
        })
        .collect()
}

#[tokio::test]
async fn push_dispatch_complete_in_order() {
    let q = connect(config(&common::unique_queue("order"), 500)).await;
    q.put_tenants(&[tenant("acme", 25)]).await.expect("tenants");
    let pushed = q
        .push(&[job("acme", 1), job("acme", 2), job("acme", 3)])
        .await
        .expect("push");
    let ids = enqueued(&pushed);
    assert_eq!(ids.len(), 3);

    let j1 = next_job(&q).await;
    assert_eq!(j1.id, ids[0]);
    assert_eq!(j1.tenant, "acme");
    assert_eq!(j1.attempt, 1);
    assert!(!j1.outcome_unknown);
    assert_eq!(j1.body, job("acme", 1).body);
    q.answered(&j1).await.expect("answered");
    q.complete(&j1, "wh-1", false).await.expect("complete");

    let j2 = next_job(&q).await;
    assert_eq!(j2.id, ids[1]);
    q.complete(&j2, "wh-2", true).await.expect("complete");

    let r = q.job(&ids[0]).await.expect("job").expect("exists");
    assert_eq!(r.status, JobState::Done);
    assert_eq!(r.webhook_id.as_deref(), Some("wh-1"));
    assert_eq!(r.attempts, 1);
    let r = q.job(&ids[2]).await.expect("job").expect("exists");
    assert_eq!(r.status, JobState::Queued);
    assert_eq!(
        (r.tenant.as_str(), r.key.as_str()),
        ("acme", job("acme", 3).key.as_str())
    );

    let results = q.results(None).await.expect("results");
    assert_eq!(
        results.iter().map(|r| r.job.clone()).collect::<Vec<_>>(),
        vec![ids[0].clone(), ids[1].clone()]
    );
    assert!(results[1].reconciled);

    let s = q.status().await.expect("status");
    assert_eq!((s.queued, s.running, s.done, s.dead), (1, 0, 2, 0));
    assert!(q.job(&JobId::new()).await.expect("job").is_none());

    let series = q.done_per_second(60).await.expect("done per second");
    assert_eq!(series.len(), 60);
    assert_eq!(series.iter().sum::<u64>(), 2);
    q.ping().await.expect("ping");
    assert!(!q.is_idle().await.expect("idle"));
    let j3 = next_job(&q).await;
    assert!(
        !q.is_idle().await.expect("idle"),
        "a running job is not idle"
    );
    q.complete(&j3, "wh-3", false).await.expect("complete");
    assert!(q.is_idle().await.expect("idle"));
}

#[tokio::test]
async fn enqueue_is_idempotent() {
    let q = connect(config(&common::unique_queue("idem"), 500)).await;
    q.put_tenants(&[tenant("acme", 25), tenant("beta", 25)])
        .await
        .expect("tenants");
    let first = q
        .push(&[job("acme", 1), job("acme", 2), job("acme", 1)])
        .await
        .expect("push");
    let ids = enqueued(&first);
    assert_eq!(ids.len(), 2);
    assert_eq!(
        first[2],
        Pushed::Duplicate {
            job: ids[0].clone()
        }
    );

    let mut with_key = job("acme", 3);
    with_key.key = "given-key".into();
    let mut same_key = job("acme", 4);
    same_key.key = "given-key".into();
    let mut other_tenant = job("beta", 4);
    other_tenant.key = "given-key".into();
    let second = q
        .push(&[job("acme", 2), with_key, same_key, other_tenant])
        .await
        .expect("push");
    assert_eq!(
        second[0],
        Pushed::Duplicate {
            job: ids[1].clone()
        }
    );
    assert!(matches!(second[1], Pushed::Enqueued { .. }));
    assert!(matches!(second[2], Pushed::Duplicate { .. }));
    // Keys are per tenant.
    assert!(matches!(second[3], Pushed::Enqueued { .. }));
    assert_eq!(q.status().await.expect("status").queued, 4);
}

#[tokio::test]
async fn a_large_mixed_push_keeps_each_tenants_order_and_answers_in_input_order() {
    // Several push script calls (batches of 1,000), tenants interleaved in the input, and a
    // key repeated 1,500 jobs later (answered by the client as a duplicate of its first use;
    // keys already in Redis are `enqueue_is_idempotent`'s case).
    let q = connect(config(&common::unique_queue("bulk"), 500)).await;
    let names = ["a", "b", "c", "d", "e", "f", "g"];
    let tenants: Vec<_> = names.iter().map(|n| tenant(n, 1_000)).collect();
    q.put_tenants(&tenants).await.expect("tenants");
    let mut jobs: Vec<_> = (0..2_500).map(|n| job(names[n % names.len()], n)).collect();
    jobs[1_700] = jobs[200].clone();
    let pushed = q.push(&jobs).await.expect("push");
    assert_eq!(pushed.len(), jobs.len());
    assert_eq!(
        pushed[1_700],
        Pushed::Duplicate {
            job: match &pushed[200] {
                Pushed::Enqueued { job } => job.clone(),
                other => panic!("expected the first use enqueued, got {other:?}"),
            }
        }
    );
    assert_eq!(enqueued(&pushed).len(), 2_499);
    // Each id answers for its own job.
    for i in [0, 1, 999, 1_000, 2_499] {
        let Pushed::Enqueued { job: id } = &pushed[i] else {
            panic!("job {i} not enqueued");
        };
        let r = q.job(id).await.expect("job").expect("known");
        assert_eq!(
            (r.tenant.as_str(), r.key.as_str()),
            (jobs[i].tenant.as_str(), jobs[i].key.as_str())
        );
        assert_eq!(r.status, JobState::Queued);
    }
    // Every tenant's jobs come out in input order, with their bodies.
    let mut next_of: std::collections::HashMap<String, Vec<usize>> = Default::default();
    for (i, j) in jobs.iter().enumerate() {
        if i != 1_700 {
            next_of.entry(j.tenant.clone()).or_default().push(i);
        }
    }
    for list in next_of.values_mut() {
        list.reverse();
    }
    for _ in 0..2_499 {
        let leased = next_job(&q).await;
        let i = next_of
            .get_mut(&leased.tenant)
            .and_then(Vec::pop)
            .expect("a job of that tenant is due");
        assert_eq!(leased.key, jobs[i].key, "tenant {}", leased.tenant);
        assert_eq!(leased.body, jobs[i].body);
        q.complete(&leased, "wh", false).await.expect("complete");
    }
    assert!(next_of.values().all(Vec::is_empty));
}

#[tokio::test]
async fn unknown_tenant_refuses_the_whole_push() {
    let q = connect(config(&common::unique_queue("unknown"), 500)).await;
    q.put_tenants(&[tenant("acme", 25)]).await.expect("tenants");
    let mut jobs: Vec<_> = (0..2500).map(|n| job("acme", n)).collect();
    jobs.push(job("nobody", 1));
    match q.push(&jobs).await {
        Err(QueueError::UnknownTenant(t)) => assert_eq!(t, "nobody"),
        other => panic!("expected UnknownTenant, got {other:?}"),
    }
    let s = q.status().await.expect("status");
    assert_eq!(s.queued, 0);
    assert_eq!(q.dispatch().await.expect("dispatch"), Dispatch::Empty);
}

#[tokio::test]
async fn paused_tenant_resumes_at_its_time_and_others_go_on() {
    let q = connect(config(&common::unique_queue("pause"), 500)).await;
    q.put_tenants(&[tenant("acme", 10), tenant("beta", 10)])
        .await
        .expect("tenants");
    let ids = enqueued(
        &q.push(&[job("acme", 1), job("acme", 2)])
            .await
            .expect("push"),
    );
    let j1 = next_job(&q).await;
    assert_eq!(j1.id, ids[0]);
    q.rate_limited(&j1, Duration::from_millis(400), Some(3))
        .await
        .expect("rate limited");

    let s = q.status().await.expect("status");
    let acme = s
        .tenants
        .iter()
        .find(|t| t.tenant == "acme")
        .expect("acme row");
    let paused_until = acme.paused_until_ms.expect("paused");
    assert!(
        acme.pause_reason
            .as_deref()
            .unwrap_or("")
            .contains("rate limited")
    );
    assert_eq!(acme.limit, 3, "limit follows the one LeadSquared named");
    assert_eq!(acme.waiting, 2);

    // Another tenant is not held up by the pause.
    let b = enqueued(&q.push(&[job("beta", 1)]).await.expect("push"));
    let jb = next_job(&q).await;
    assert_eq!(jb.id, b[0]);
    q.complete(&jb, "wh-b", false).await.expect("complete");

    match q.dispatch().await.expect("dispatch") {
        Dispatch::Wait(d) => assert!(d > Duration::ZERO),
        other => panic!("acme is paused, expected a wait, got {other:?}"),
    }
    let again = next_job(&q).await;
    assert_eq!(again.id, ids[0], "the job went back to the front");
    assert_eq!(again.attempt, 1, "a rate limit does not spend an attempt");
    assert!(
        again.dispatched_at_ms >= paused_until,
        "dispatched at {} before the pause ended at {paused_until}",
        again.dispatched_at_ms
    );
    assert_eq!(
        q.tenant("acme").await.expect("tenant").expect("acme").limit,
        3
    );

    // Re-importing with a higher limit keeps the lower learned one.
    q.put_tenants(&[tenant("acme", 25)]).await.expect("tenants");
    assert_eq!(
        q.tenant("acme").await.expect("tenant").expect("acme").limit,
        3
    );
}

#[tokio::test]
async fn expired_lease_is_taken_back_and_the_old_holder_refused() {
    let mut c = config(&common::unique_queue("lease"), 500);
    c.lease = Duration::from_millis(200);
    let q = connect(c).await;
    q.put_tenants(&[tenant("acme", 25)]).await.expect("tenants");
    let ids = enqueued(&q.push(&[job("acme", 1)]).await.expect("push"));
    let first = next_job(&q).await;
    assert!(q.heartbeat(&first).await.expect("heartbeat"));

    // Nobody heartbeats: the job comes back once the lease has run out.
    let second = next_job(&q).await;
    assert_eq!(second.id, ids[0]);
    assert_eq!(second.attempt, 2, "the lost attempt counts");
    assert!(
        second.outcome_unknown,
        "the first call may have reached LeadSquared"
    );
    assert_ne!(second.lease, first.lease);

    assert!(!q.heartbeat(&first).await.expect("heartbeat"));
    match q.complete(&first, "wh-stale", false).await {
        Err(QueueError::LeaseLost(id)) => assert_eq!(id, ids[0]),
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    for refused in [
        q.bury(&first, "x").await,
        q.retry_later(&first, Duration::ZERO, "x", false).await,
        q.rate_limited(&first, Duration::ZERO, None).await,
        q.requeue(
            &first,
            Requeue {
                spend_attempt: false,
                outcome_unknown: false,
            },
        )
        .await,
    ] {
        assert!(
            matches!(refused, Err(QueueError::LeaseLost(_))),
            "{refused:?}"
        );
    }
    q.complete(&second, "wh-1", true).await.expect("complete");
    let r = q.job(&ids[0]).await.expect("job").expect("exists");
    assert_eq!(
        (r.status, r.webhook_id.as_deref()),
        (JobState::Done, Some("wh-1"))
    );
}

#[tokio::test]
async fn a_job_that_kills_its_worker_every_time_ends_dead() {
    let mut c = config(&common::unique_queue("killer"), 500);
    c.lease = Duration::from_millis(100);
    c.max_attempts = 2;
    let q = connect(c).await;
    q.put_tenants(&[tenant("acme", 25)]).await.expect("tenants");
    let ids = enqueued(&q.push(&[job("acme", 1)]).await.expect("push"));
    assert_eq!(next_job(&q).await.attempt, 1);
    assert_eq!(next_job(&q).await.attempt, 2);
    // The second lease expires with no attempt left: dead, not dispatched again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while q.status().await.expect("status").dead == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never buried");
        match q.dispatch().await.expect("dispatch") {
            Dispatch::Job(j) => panic!("dispatched a third time: {j:?}"),
            _ => q.wait_for_work(Duration::from_millis(20)).await,
        }
    }
    let dead = q.dead().await.expect("dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].job, ids[0]);
    assert!(
        dead[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("lease expired"),
        "{:?}",
        dead[0].error
    );
}

#[tokio::test]
async fn retry_later_comes_back_at_the_front_and_gives_up_at_max_attempts() {
    let mut c = config(&common::unique_queue("retry"), 500);
    c.max_attempts = 2;
    let q = connect(c).await;
    q.put_tenants(&[tenant("acme", 25)]).await.expect("tenants");
    let ids = enqueued(
        &q.push(&[job("acme", 1), job("acme", 2), job("acme", 3)])
            .await
            .expect("push"),
    );
    let j1 = next_job(&q).await;
    q.retry_later(
        &j1,
        Duration::from_millis(300),
        "500 from LeadSquared",
        true,
    )
    .await
    .expect("retry");
    assert_eq!(q.status().await.expect("status").scheduled, 1);
    let r = q.job(&ids[0]).await.expect("job").expect("exists");
    assert_eq!(r.status, JobState::Scheduled);
    assert_eq!(r.error.as_deref(), Some("500 from LeadSquared"));

    // Once the retry is due it goes before the jobs that never ran.
    let mut con = raw().await;
    while redis_now_ms(&mut con).await < j1.dispatched_at_ms + 350 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = next_job(&q).await;
    assert_eq!(again.id, ids[0], "a due retry goes to the front");
    assert_eq!(again.attempt, 2);
    assert!(again.outcome_unknown);
    q.retry_later(&again, Duration::from_millis(1), "500 again", false)
        .await
        .expect("retry");
    let r = q.job(&ids[0]).await.expect("job").expect("exists");
    assert_eq!(r.status, JobState::Dead);
    assert!(
        r.error
            .as_deref()
            .unwrap_or("")
            .starts_with("gave up after 2 attempts")
    );
}

#[tokio::test]
async fn requeue_and_dead_letters() {
    let q = connect(config(&common::unique_queue("dead"), 500)).await;
    q.put_tenants(&[tenant("acme", 25)]).await.expect("tenants");
    let ids = enqueued(
        &q.push(&[job("acme", 1), job("acme", 2)])
            .await
            .expect("push"),
    );
    let j1 = next_job(&q).await;
    q.requeue(
        &j1,
        Requeue {
            spend_attempt: false,
            outcome_unknown: true,
        },
    )
    .await
    .expect("requeue");
    let j1 = next_job(&q).await;
    assert_eq!(
        (j1.id.clone(), j1.attempt, j1.outcome_unknown),
        (ids[0].clone(), 1, true)
    );
    q.bury(&j1, "400: MXInvalidInputException: bad URL")
        .await
        .expect("bury");
    let j2 = next_job(&q).await;
    q.bury(&j2, "401: bad keys").await.expect("bury");

    let dead = q.dead().await.expect("dead");
    assert_eq!(dead.len(), 2);
    assert_eq!(
        dead[0].error.as_deref(),
        Some("400: MXInvalidInputException: bad URL")
    );

    assert_eq!(
        q.retry_dead(Some(&[ids[1].clone()])).await.expect("retry"),
        1
    );
    let back = next_job(&q).await;
    assert_eq!((back.id.clone(), back.attempt), (ids[1].clone(), 1));
    q.complete(&back, "wh-2", false).await.expect("complete");

    assert_eq!(q.purge_dead(None).await.expect("purge"), 1);
    assert!(q.job(&ids[0]).await.expect("job").is_none());
    assert!(q.dead().await.expect("dead").is_empty());
    // A purged job's key is free again.
    let again = q.push(&[job("acme", 1)]).await.expect("push");
    assert!(matches!(again[0], Pushed::Enqueued { .. }));
    let results = q.results(Some("acme")).await.expect("results");
    assert_eq!(results.len(), 1);
    assert!(q.results(Some("beta")).await.expect("results").is_empty());
}

/// Three jobs of a tenant allowed 2 calls per 500 ms; the first two dispatched, and Redis's
/// clock at least 100 ms later, when their answers arrive (returned).
async fn two_calls_answered_later(name: &str) -> (RedisQueue, LeasedJob, LeasedJob, u64) {
    let q = connect(config(&common::unique_queue(name), 500)).await;
    q.put_tenants(&[tenant("acme", 2)]).await.expect("tenants");
    q.push(&[job("acme", 1), job("acme", 2), job("acme", 3)])
        .await
        .expect("push");
    let j1 = next_job(&q).await;
    let j2 = next_job(&q).await;
    let mut con = raw().await;
    while redis_now_ms(&mut con).await < j1.dispatched_at_ms + 100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let answered_at = redis_now_ms(&mut con).await;
    (q, j1, j2, answered_at)
}

/// The third call waits a whole window from the answers: they re-stamped the calls.
async fn third_call_waits_a_window_from(q: &RedisQueue, answered_at: u64) {
    let j3 = next_job(q).await;
    assert!(
        j3.dispatched_at_ms >= answered_at + 500,
        "third call at {} is within 500 ms of the answers at >= {answered_at}",
        j3.dispatched_at_ms
    );
}

#[tokio::test]
async fn answered_restamps_the_call() {
    let (q, j1, j2, answered_at) = two_calls_answered_later("answered").await;
    q.answered(&j1).await.expect("answered");
    q.answered(&j2).await.expect("answered");
    third_call_waits_a_window_from(&q, answered_at).await;
}

/// Issue 4: one dispatch hands out many jobs, exactly those (and in the order) that as
/// many single dispatches would: tenants take turns within a batch, and no tenant gets more
/// than its limit.
#[tokio::test]
async fn dispatch_many_hands_out_a_batch_in_turns_within_the_limits() {
    let q = connect(config(&common::unique_queue("batch"), 60_000)).await;
    q.put_tenants(&[tenant("a", 2), tenant("b", 2), tenant("c", 1)])
        .await
        .expect("tenants");
    let mut jobs = Vec::new();
    for n in 0..3 {
        for t in ["a", "b", "c"] {
            jobs.push(job(t, n));
        }
    }
    q.push(&jobs).await.expect("push");
    let Dispatched::Jobs(batch) = q.dispatch_many(100, None).await.expect("dispatch") else {
        panic!("no jobs")
    };
    let order: Vec<&str> = batch.iter().map(|j| j.tenant.as_str()).collect();
    assert_eq!(order, ["a", "b", "c", "a", "b"]);
    let leases: std::collections::BTreeSet<&str> = batch.iter().map(|j| j.lease.as_str()).collect();
    assert_eq!(leases.len(), batch.len(), "every job has its own lease");
    assert!(batch.iter().all(|j| j.fenced_until.is_none()));
    // Every tenant has spent its limit for the (one-minute) window.
    assert!(matches!(
        q.dispatch_many(100, None).await.expect("dispatch"),
        Dispatched::Wait(d) if d > Duration::from_secs(50)
    ));
    // Each job finishes on its own lease.
    for j in &batch {
        q.complete(j, "wh", false).await.expect("complete");
    }
    let s = q.status().await.expect("status");
    assert_eq!((s.done, s.running, s.queued), (5, 0, 4));
}

/// The finishing scripts re-stamp the job's call themselves (issue 4: one store call after
/// the LeadSquared call instead of two), whether the job ends done or dead.
#[tokio::test]
async fn finishing_restamps_the_call_without_answered() {
    let (q, j1, j2, answered_at) = two_calls_answered_later("finish-restamp").await;
    q.complete(&j1, "wh-1", false).await.expect("complete");
    q.bury(&j2, "refused").await.expect("bury");
    third_call_waits_a_window_from(&q, answered_at).await;
}

/// What `results --purge-done` does once it has written the rows out: the done jobs'
/// records go, nothing else does, and their keys stay taken (the same job pushed again is
/// a duplicate of the purged id, never created twice). Run on both backends.
async fn purging_done_records_keeps_their_keys(q: &dyn Queue) {
    q.put_tenants(&[tenant("acme", 25)]).await.expect("tenants");
    let pushed = q
        .push(&[job("acme", 1), job("acme", 2), job("acme", 3)])
        .await
        .expect("push");
    let ids = enqueued(&pushed);
    let j1 = next_job(q).await;
    q.complete(&j1, "wh-1", false).await.expect("complete");
    let j2 = next_job(q).await;
    q.bury(&j2, "refused").await.expect("bury");
    // One done, one dead, one queued, one unknown id: only the done one goes.
    let mut named = ids.clone();
    named.push(JobId::new());
    assert_eq!(q.purge_done(&named).await.expect("purge"), 1);
    assert!(q.job(&ids[0]).await.expect("job").is_none());
    let results: Vec<JobId> = q
        .results(None)
        .await
        .expect("results")
        .into_iter()
        .map(|r| r.job)
        .collect();
    assert_eq!(results, vec![ids[1].clone()]);
    let s = q.status().await.expect("status");
    assert_eq!((s.queued, s.done, s.dead), (1, 0, 1));
    let again = q.push(&[job("acme", 1)]).await.expect("push");
    assert!(
        matches!(&again[0], Pushed::Duplicate { job } if *job == ids[0]),
        "{again:?}"
    );
    assert_eq!(q.purge_done(&ids).await.expect("purge"), 0);
}

#[tokio::test]
async fn purging_done_records_keeps_their_keys_in_redis() {
    let q = connect(config(&common::unique_queue("purge-done"), 500)).await;
    purging_done_records_keeps_their_keys(&q).await;
}

#[tokio::test]
async fn purging_done_records_keeps_their_keys_embedded() {
    let q = EmbeddedQueue::new(config(&common::unique_queue("purge-done-embedded"), 500));
    purging_done_records_keeps_their_keys(&q).await;
}

#[tokio::test]
async fn wait_for_work_sees_a_push_from_another_connection() {
    let name = common::unique_queue("wake");
    let waiter = std::sync::Arc::new(connect(config(&name, 500)).await);
    let producer = connect(config(&name, 500)).await;
    producer
        .put_tenants(&[tenant("acme", 25)])
        .await
        .expect("tenants");
    assert_eq!(waiter.dispatch().await.expect("dispatch"), Dispatch::Empty);
    let w = waiter.clone();
    let waiting = tokio::spawn(async move { w.wait_for_work(Duration::from_secs(600)).await });
    producer.push(&[job("acme", 1)]).await.expect("push");
    // Not a timing assertion: the wait is 600 s, so returning at all proves the wakeup.
    tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .expect("woken by the push")
        .expect("task");
    assert!(matches!(
        waiter.dispatch().await.expect("dispatch"),
        Dispatch::Job(_)
    ));

    // A push between a dispatch that found nothing and the wait is not lost either.
    assert!(matches!(
        waiter.dispatch().await.expect("dispatch"),
        Dispatch::Empty
    ));
    producer.push(&[job("acme", 2)]).await.expect("push");
    tokio::time::timeout(
        Duration::from_secs(60),
        waiter.wait_for_work(Duration::from_secs(600)),
    )
    .await
    .expect("woken by the push");
}

#[tokio::test]
async fn damaged_records_do_not_stop_dispatch() {
    let name = common::unique_queue("damaged");
    let q = connect(config(&name, 500)).await;
    q.put_tenants(&[tenant("acme", 100)])
        .await
        .expect("tenants");
    let good = enqueued(&q.push(&[job("acme", 1)]).await.expect("push"));
    let p = q.prefix().to_string();
    let mut con = raw().await;
    let _: () = con
        .set(format!("{p}job:not-a-hash"), "garbage")
        .await
        .expect("set");
    // Pushed (in `meta`) but its body lost.
    let _: () = con
        .hset(format!("{p}meta"), "no-body", "acme\nk-no-body")
        .await
        .expect("hset");
    // Dispatched once and requeued, with a damaged attempts count and a body that is not JSON.
    let _: () = con
        .hset_multiple(
            format!("{p}job:odd-attempts"),
            &[
                ("tenant", "acme"),
                ("state", "queued"),
                ("attempts", "many"),
            ],
        )
        .await
        .expect("hset");
    let _: () = con
        .hset(format!("{p}bodies"), "odd-attempts", "{not json")
        .await
        .expect("hset");
    let _: () = con
        .hset(format!("{p}bodies"), "not-a-hash", "{}")
        .await
        .expect("hset");
    // Pushed, but its `bodies` entry has a damaged header (the key length is not a number).
    let _: () = con
        .hset(format!("{p}bodies"), "bad-entry", "acme\nzz\nk{}")
        .await
        .expect("hset");
    let _: () = con
        .rpush(
            format!("{p}q:acme"),
            &[
                "no-record",
                "not-a-hash",
                "no-body",
                "odd-attempts",
                "bad-entry",
            ],
        )
        .await
        .expect("rpush");
    // A tenant in the ready set with no list, and a retry with no record.
    let _: () = con
        .zadd(format!("{p}ready"), "ghost", 0)
        .await
        .expect("zadd");
    let _: () = con
        .zadd(format!("{p}sched"), "no-record-retry", 0)
        .await
        .expect("zadd");

    let mut got = Vec::new();
    loop {
        match q
            .dispatch()
            .await
            .expect("dispatch never fails on damaged data")
        {
            Dispatch::Job(j) => {
                got.push((j.id.0.clone(), j.attempt, j.body.clone()));
                q.complete(&j, "wh", false).await.expect("complete");
            }
            Dispatch::Wait(d) => q.wait_for_work(d).await,
            Dispatch::Empty => break,
        }
    }
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0, good[0].0);
    // The worker gets the odd job and decides about its body; attempts restart from 1.
    assert_eq!(
        got[1],
        ("odd-attempts".to_string(), 1, "{not json".to_string())
    );
    let dead = q.dead().await.expect("dead");
    let mut dead_ids: Vec<&str> = dead.iter().map(|d| d.job.0.as_str()).collect();
    dead_ids.sort();
    assert_eq!(
        dead_ids,
        vec![
            "bad-entry",
            "no-body",
            "no-record",
            "no-record-retry",
            "not-a-hash"
        ]
    );
    assert!(dead.iter().all(|d| d.error.is_some()));
    let bad = dead
        .iter()
        .find(|d| d.job.0 == "bad-entry")
        .expect("bad-entry");
    assert_eq!(
        bad.error.as_deref(),
        Some("corrupt job record (damaged entry in bodies)")
    );
    let kept: Option<String> = con
        .get(format!("{p}corrupt:not-a-hash"))
        .await
        .expect("get");
    assert_eq!(kept.as_deref(), Some("garbage"));

    // A damaged tenant record is an error naming the tenant, never the keys.
    let _: () = con
        .hset(
            format!("{p}tenants"),
            "acme",
            r#"{"name":"acme","secret_key":"sk-LEAK"}"#,
        )
        .await
        .expect("hset");
    let err = q.tenant("acme").await.expect_err("corrupt");
    let text = err.to_string();
    assert!(text.contains("acme") && !text.contains("sk-LEAK"), "{text}");
}

#[tokio::test]
async fn status_shows_tenants_in_their_window() {
    let q = connect(config(&common::unique_queue("status"), 5000)).await;
    q.put_tenants(&[tenant("acme", 2), tenant("beta", 25), tenant("idle", 25)])
        .await
        .expect("tenants");
    q.push(&[
        job("acme", 1),
        job("acme", 2),
        job("acme", 3),
        job("beta", 1),
    ])
    .await
    .expect("push");
    let a = next_job(&q).await;
    let _b = next_job(&q).await;
    let _a2 = next_job(&q).await;
    let s = q.status().await.expect("status");
    assert_eq!((s.queued, s.running, s.scheduled), (1, 3, 0));
    assert!(s.oldest_running_ms.is_some());
    let acme = s.tenants.iter().find(|t| t.tenant == "acme").expect("acme");
    assert_eq!((acme.waiting, acme.limit, acme.calls_in_window), (1, 2, 2));
    let beta = s.tenants.iter().find(|t| t.tenant == "beta").expect("beta");
    assert_eq!((beta.waiting, beta.calls_in_window), (0, 1));
    assert!(s.tenants.iter().all(|t| t.tenant != "idle"));
    // acme spent both calls of its window: the next one waits.
    assert!(matches!(
        q.dispatch().await.expect("dispatch"),
        Dispatch::Wait(_)
    ));
    q.complete(&a, "wh", false).await.expect("complete");
    assert_eq!(
        q.tenant_names().await.expect("names"),
        vec!["acme", "beta", "idle"]
    );
    let acme = q.tenant("acme").await.expect("tenant").expect("acme");
    assert_eq!(acme.secret_key.expose(), "sk-secret-acme");
}

#[tokio::test]
async fn refuses_a_queue_name_that_breaks_the_hash_tag() {
    let err = lsq_webhooks::queue::redis::RedisQueue::connect(
        &common::redis_url(),
        config("bad{name}", 500),
    )
    .await
    .expect_err("refused");
    assert!(matches!(err, QueueError::Config(_)));
}
