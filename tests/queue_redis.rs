//! What only the Redis backend has, against a real Redis: pushes split into script batches,
//! wake-ups between connections, records damaged by another program, queue names that must
//! make a Redis Cluster hash tag, and deleting one queue's keys. The `Queue` contract both
//! backends share is tests/queue_conformance.rs.

mod common;
mod queue_support;

use std::time::Duration;

use lsq_webhooks::job::{JobId, JobState};
use lsq_webhooks::queue::{Completion, Dispatch, Pushed, Queue, QueueError};
use queue_support::{config, connect, job, next_job, raw, tenant};
use redis::AsyncCommands;

fn enqueued(p: &[Pushed]) -> Vec<JobId> {
    p.iter()
        .filter_map(|p| match p {
            Pushed::Enqueued { job } => Some(job.clone()),
            Pushed::Duplicate { .. } => None,
        })
        .collect()
}

/// Redis only: a push is split into script calls of 1,000 jobs, grouped by tenant, with
/// repeats within the push answered by the client.
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

/// Redis only: the wake-up travels over pub/sub to another connection (another process).
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

    // A push between a dispatch that found nothing and the wait is not lost either (the
    // dispatch waits for job 1's lease: nothing to hand out).
    assert!(matches!(
        waiter.dispatch().await.expect("dispatch"),
        Dispatch::Wait(_)
    ));
    producer.push(&[job("acme", 2)]).await.expect("push");
    tokio::time::timeout(
        Duration::from_secs(60),
        waiter.wait_for_work(Duration::from_secs(600)),
    )
    .await
    .expect("woken by the push");
}

/// Redis only: records another program damaged (or an older version wrote) are buried with
/// a reason and never stop dispatch.
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

/// Redis only: the queue name is the Redis Cluster hash tag, so braces are refused.
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

/// Redis only: `delete_all` removes every key of its queue, whatever state the jobs are in,
/// and none of queues whose names extend its own (`x:other`, `xy`: the prefix is the whole
/// hash tag).
#[tokio::test]
async fn delete_all_deletes_this_queues_keys_and_no_other_queues() {
    let name = common::unique_queue("delete");
    let mut queues = Vec::new();
    for n in [name.clone(), format!("{name}:other"), format!("{name}y")] {
        let q = connect(config(&n, 60_000)).await;
        q.put_tenants(&[tenant("acme", 2)]).await.expect("tenants");
        q.push(&[job("acme", 1), job("acme", 2), job("acme", 3)])
            .await
            .expect("push");
        // One done, one dead, one still queued, calls in the log: most kinds of key.
        let a = next_job(&q).await;
        q.complete(&a, "wh", false).await.expect("complete");
        let b = next_job(&q).await;
        q.bury(&b, "refused").await.expect("bury");
        queues.push(q);
    }
    let con = raw().await;
    let keys_of = |prefix: String| {
        let mut con = con.clone();
        async move {
            let keys: Vec<String> = con.keys(format!("{prefix}*")).await.expect("keys");
            keys.len() as u64
        }
    };
    let before: Vec<u64> =
        futures::future::join_all(queues.iter().map(|q| keys_of(q.prefix().to_string()))).await;
    assert!(before.iter().all(|n| *n >= 8), "{before:?}");
    assert_eq!(queues[0].delete_all().await.expect("delete"), before[0]);
    let after: Vec<u64> =
        futures::future::join_all(queues.iter().map(|q| keys_of(q.prefix().to_string()))).await;
    assert_eq!(after, [0, before[1], before[2]]);
    assert_eq!(queues[0].delete_all().await.expect("delete"), 0);
    // The other queues still work.
    let s = queues[1].status().await.expect("status");
    assert_eq!((s.queued, s.done, s.dead), (1, 1, 1));
}

/// Redis only (issue 13): the adaptive share is state in the queue, so a worker restart (a
/// new handle on the same prefix) and every other process see it.
#[tokio::test]
async fn a_new_handle_on_the_same_queue_sees_the_share() {
    let name = common::unique_queue("share-restart");
    // A long window, so the share cannot climb back while the test runs.
    let q = connect(config(&name, 60_000)).await;
    q.put_tenants(&[tenant("acme", 10)]).await.expect("tenants");
    q.push(&[job("acme", 0), job("acme", 1)])
        .await
        .expect("push");
    let j = next_job(&q).await;
    q.rate_limited(&j, Duration::ZERO, None)
        .await
        .expect("rate limited");
    drop(q);
    let again = connect(config(&name, 60_000)).await;
    let row = again.status().await.expect("status").tenants;
    // One call of ours in a window of 10 refused: cut to the floor, a share of 1 (2 calls
    // in a window at most, one window's gap apart).
    assert_eq!((row[0].tenant.as_str(), row[0].share), ("acme", 2));
    assert!((row[0].share_calls - 1.0).abs() < 0.01, "{:?}", row[0]);
    // Its dispatch holds to it: paced, the next call waits a gap after the refused one.
    again
        .push(&(2..10).map(|n| job("acme", n)).collect::<Vec<_>>())
        .await
        .expect("push");
    match again.dispatch().await.expect("dispatch") {
        Dispatch::Wait(d) => assert!(d > Duration::from_secs(50), "{d:?}"),
        other => panic!("paced at a share of 1 per minute, got {other:?}"),
    }
}

/// The latency index (`oldest`) repairs itself: an entry made wrong by hand is shown right
/// and fixed, one for an emptied list goes, and a queue without the index (written before
/// it existed) gets it rebuilt from the ready set.
#[tokio::test]
async fn the_latency_index_is_checked_and_repaired_by_the_pulse() {
    let name = common::unique_queue("oldest");
    let q = connect(config(&name, 500)).await;
    q.put_tenants(&[tenant("acme", 25), tenant("beta", 25)])
        .await
        .expect("tenants");
    q.push(&[job("acme", 0), job("beta", 0)])
        .await
        .expect("push");
    let right = q.pulse(10).await.expect("pulse");
    assert_eq!(right.tenant_latency_ms.len(), 2, "{right:?}");
    let key = format!("{{{name}}}:oldest");
    let mut con = raw().await;

    // A stale score (an hour older than the job) and an entry for a tenant with no list.
    let acme: f64 = con.zscore(&key, "acme").await.expect("zscore");
    let _: () = con
        .zadd(&key, "acme", acme - 3_600_000.0)
        .await
        .expect("zadd");
    let _: () = con.zadd(&key, "ghost", 1.0).await.expect("zadd");
    let p = q.pulse(10).await.expect("pulse");
    let names: Vec<&str> = p
        .tenant_latency_ms
        .iter()
        .map(|(t, _)| t.as_str())
        .collect();
    assert!(!names.contains(&"ghost"), "{p:?}");
    assert!(
        p.latency_ms.expect("latency") < 3_600_000,
        "the stale hour is not reported: {p:?}"
    );
    let fixed: f64 = con.zscore(&key, "acme").await.expect("zscore");
    assert_eq!(fixed, acme, "repaired in Redis too");
    let ghost: Option<f64> = con.zscore(&key, "ghost").await.expect("zscore");
    assert_eq!(ghost, None);

    // No index at all: rebuilt from the tenants with waiting jobs.
    let _: () = con.del(&key).await.expect("del");
    let p = q.pulse(10).await.expect("pulse");
    assert_eq!(p.tenant_latency_ms.len(), 2, "{p:?}");
    let rebuilt: u64 = con.zcard(&key).await.expect("zcard");
    assert_eq!(rebuilt, 2);
}

/// The scrape's indexes of cut shares, spent quotas and holds (`cut`, `quota`,
/// `held:<kind>`) are built once for a queue written before they existed, from the shares,
/// day counts and holds it keeps; the pulse then counts as before.
#[tokio::test]
async fn a_queue_from_before_the_share_indexes_gets_them_built_once() {
    let name = common::unique_queue("pulse-indexes");
    let q = connect(config(&name, 60_000)).await;
    let parked = lsq_webhooks::tenant::Tenant {
        daily_limit: Some(1),
        ..tenant("parked", 25)
    };
    q.put_tenants(&[tenant("acme", 10), parked, tenant("held", 25)])
        .await
        .expect("tenants");
    // parked: its one call of the day. acme: two calls, the second refused: cut to 5.
    q.push(&[job("parked", 0)]).await.expect("push");
    let j = next_job(&q).await;
    q.complete(&j, "wh", false).await.expect("complete");
    q.push(&[job("acme", 0), job("acme", 1)])
        .await
        .expect("push");
    let j = next_job(&q).await;
    q.complete(&j, "wh", false).await.expect("complete");
    let j = next_job(&q).await;
    q.rate_limited(&j, Duration::ZERO, None)
        .await
        .expect("rate limited");
    let hold = lsq_webhooks::queue::NewHold {
        kind: lsq_webhooks::queue::HoldKind::KeysRefused,
        reason: "401".into(),
        length: None,
        by: None,
    };
    assert!(q.hold("held", hold).await.expect("hold"));
    let want = q.pulse(10).await.expect("pulse");
    assert_eq!(
        (want.share_cut, want.quota_reached, want.held.keys_refused),
        (1, 1, 1),
        "{want:?}"
    );

    // As a queue written before the indexes: none of them, and no mark that they were built.
    let mut con = raw().await;
    let prefix = format!("{{{name}}}:");
    for key in ["cut", "quota", "held:keys_refused"] {
        let _: () = con.del(format!("{prefix}{key}")).await.expect("del");
    }
    let _: () = con
        .hdel(format!("{prefix}stats"), "pulse_indexes")
        .await
        .expect("hdel");
    let got = q.pulse(10).await.expect("pulse");
    assert_eq!(
        (got.share_cut, got.quota_reached, got.held, &got.shares),
        (want.share_cut, want.quota_reached, want.held, &want.shares)
    );
    let built: u64 = con.zcard(format!("{prefix}cut")).await.expect("zcard");
    assert_eq!(built, 1);
}

/// Redis only: a job's history damaged by another program (not a list) never fails its
/// completion, nor the other completions of its batch.
#[tokio::test]
async fn a_damaged_history_does_not_fail_a_batch_of_completions() {
    let q = connect(config(&common::unique_queue("hist-damaged"), 500)).await;
    q.put_tenants(&[tenant("acme", 25)]).await.expect("tenants");
    q.push(&[job("acme", 0), job("acme", 1)])
        .await
        .expect("push");
    let (a, b) = (next_job(&q).await, next_job(&q).await);
    let mut con = raw().await;
    let _: () = con
        .set(format!("{}hist:{}", q.prefix(), a.id.0), "garbage")
        .await
        .expect("set");
    let attempt = lsq_webhooks::job::Attempt {
        at_ms: 1,
        call: "create".into(),
        outcome: "created".into(),
        http_status: None,
        exception_type: None,
        duration_ms: 3,
        error: None,
    };
    let done: Vec<Completion<'_>> = [&a, &b]
        .into_iter()
        .map(|job| Completion {
            job,
            webhook_id: "wh",
            reconciled: false,
            outcome: lsq_webhooks::job::Outcome::Created,
            attempt: Some(&attempt),
            answered_ago: Duration::ZERO,
        })
        .collect();
    assert_eq!(
        q.complete_many(&done).await.expect("complete_many"),
        [true, true]
    );
    for id in [&a.id, &b.id] {
        let r = q.job(id).await.expect("job").expect("known");
        assert_eq!(
            (r.status, r.webhook_id.as_deref()),
            (JobState::Done, Some("wh"))
        );
    }
    assert_eq!(q.attempts(&b.id).await.expect("attempts"), [attempt]);
    let status = q.status().await.expect("status");
    assert_eq!((status.done, status.running), (2, 0));
}

/// Redis only (issue 17, item 1): the day's count is one field per day, so that counting a
/// call is one HINCRBY; a count an older version kept (`day` and `calls` fields) carries
/// over into this version's count of the day: a tenant with 4 of its 5 calls spent today
/// gets one call, then waits for the day's end although its window would allow another.
#[tokio::test]
async fn an_older_versions_day_count_carries_over() {
    let name = common::unique_queue("day");
    let mut cfg = config(&name, 500);
    cfg.day = Duration::from_secs(86_400);
    let q = connect(cfg).await;
    let mut acme = tenant("acme", 2);
    acme.daily_limit = Some(5);
    q.put_tenants(&[acme]).await.expect("tenants");
    let p = q.prefix().to_string();
    let mut con = raw().await;
    let (secs, _): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut con)
        .await
        .expect("TIME");
    let today = secs / 86_400;
    let _: () = con
        .hset_multiple(
            format!("{p}day:acme"),
            &[("day", today.to_string()), ("calls", "4".to_string())],
        )
        .await
        .expect("hset");
    q.push(&[job("acme", 1), job("acme", 2)])
        .await
        .expect("push");

    let first = next_job(&q).await;
    assert_eq!(first.tenant, "acme");
    match q.dispatch().await.expect("dispatch") {
        Dispatch::Wait(d) => assert!(d > Duration::from_secs(1), "parked for the day: {d:?}"),
        other => panic!("expected the day's quota to park acme, got {other:?}"),
    }
    let count: Option<u64> = con
        .hget(format!("{p}day:acme"), today.to_string())
        .await
        .expect("hget");
    assert_eq!(count, Some(5));
    let legacy: Option<String> = con
        .hget(format!("{p}day:acme"), "calls")
        .await
        .expect("hget");
    assert_eq!(legacy, None, "the older count is folded into today's");
    assert_eq!(q.status().await.expect("status").tenants[0].calls_today, 5);
}
