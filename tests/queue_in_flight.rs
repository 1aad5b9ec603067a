//! The fence before a Create (`Queue::sending`) and what it means when the holder vanishes
//! (issue 5): a job whose lease expires, or that is handed back, while its Create may still
//! land at LeadSquared is not offered to anyone before that moment, so the reconcile that
//! follows cannot miss the webhook. Against a real Redis, and the embedded backend on
//! tokio's paused clock.

mod common;
mod queue_support;

use std::time::Duration;

use lsq_webhooks::job::JobState;
use lsq_webhooks::queue::embedded::EmbeddedQueue;
use lsq_webhooks::queue::{
    Dispatch, Dispatched, Fence, LeasedJob, Pushed, Queue, QueueConfig, Requeue,
};
use queue_support::{config, connect, job, next_job, raw, tenant};

fn id_of(p: &[Pushed]) -> lsq_webhooks::job::JobId {
    match &p[0] {
        Pushed::Enqueued { job } => job.clone(),
        other => panic!("not enqueued: {other:?}"),
    }
}

async fn state_of(q: &dyn Queue, job: &LeasedJob) -> JobState {
    q.job(&job.id).await.expect("job").expect("exists").status
}

#[tokio::test]
async fn redis_a_lease_lost_mid_create_waits_until_the_call_can_no_longer_land() {
    let mut c = config(&common::unique_queue("inflight"), 500);
    c.lease = Duration::from_millis(200);
    let q = connect(c).await;
    q.put_tenants(&[tenant("acme", 25)]).await.expect("tenants");
    let id = id_of(&q.push(&[job("acme", 1)]).await.expect("push"));
    let first = next_job(&q).await;
    // Taken before the fence, so Redis's moment of the fence is no earlier than this.
    let fenced_at = tokio::time::Instant::now();
    assert!(
        q.sending(&first, Duration::from_millis(1500))
            .await
            .expect("fence")
    );
    // The holder goes silent. Its lease runs out after 200 ms, but the job waits in the
    // schedule (not in the tenant's list) until the Create can no longer land.
    let deadline = fenced_at + Duration::from_secs(30);
    while state_of(&q, &first).await == JobState::Running {
        assert!(tokio::time::Instant::now() < deadline, "never taken back");
        let _ = q.dispatch().await.expect("dispatch");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state_of(&q, &first).await, JobState::Scheduled);
    let second = next_job(&q).await;
    // A lower bound (noise can only make it later): not before the Create's window ended
    // (1 ms of slack for the window's storage in whole ms).
    assert!(
        fenced_at.elapsed() >= Duration::from_millis(1499),
        "handed out while the first Create could still land"
    );
    assert_eq!(second.id, id);
    assert_eq!((second.attempt, second.outcome_unknown), (2, true));
    // The old holder may neither send nor record.
    assert!(
        !q.sending(&first, Duration::from_secs(1))
            .await
            .expect("fence")
    );
    assert!(!q.heartbeat(&first).await.expect("heartbeat"));
    q.complete(&second, "wh-1", true).await.expect("complete");
}

#[tokio::test]
async fn redis_a_lease_lost_before_any_create_is_handed_back_at_once() {
    let mut c = config(&common::unique_queue("inflight-none"), 500);
    c.lease = Duration::from_millis(200);
    let q = connect(c).await;
    q.put_tenants(&[tenant("acme", 25)]).await.expect("tenants");
    q.push(&[job("acme", 1)]).await.expect("push");
    let first = next_job(&q).await;
    // No fence: the holder died before sending. The job goes straight back to its list.
    let second = next_job(&q).await;
    assert_eq!((second.attempt, second.outcome_unknown), (2, true));
    assert_ne!(second.lease, first.lease);
}

#[tokio::test]
async fn redis_a_hand_back_mid_create_waits_and_other_finishes_forget_the_fence() {
    let q = connect(config(&common::unique_queue("inflight-requeue"), 500)).await;
    q.put_tenants(&[tenant("acme", 25)]).await.expect("tenants");
    q.push(&[job("acme", 1), job("acme", 2)])
        .await
        .expect("push");

    // Abandoned mid-Create (shutdown's hard stop): scheduled until the call can't land.
    let a = next_job(&q).await;
    assert!(q.sending(&a, Duration::from_secs(60)).await.expect("fence"));
    let back = Requeue {
        spend_attempt: false,
        outcome_unknown: true,
    };
    q.requeue(&a, back).await.expect("requeue");
    assert_eq!(state_of(&q, &a).await, JobState::Scheduled);

    // A Create that answered (here: a transient failure the worker schedules itself) clears
    // the fence: the retry comes when the worker said, not 60 s later.
    let b = next_job(&q).await;
    assert_ne!(b.id, a.id);
    assert!(q.sending(&b, Duration::from_secs(60)).await.expect("fence"));
    q.retry_later(&b, Duration::from_millis(50), "HTTP 500", true)
        .await
        .expect("retry");
    let again = next_job(&q).await;
    assert_eq!(again.id, b.id);
    assert!(again.outcome_unknown);
    // A reconcile that found nothing goes back to the front at once, fence or not.
    q.requeue(
        &again,
        Requeue {
            spend_attempt: false,
            outcome_unknown: false,
        },
    )
    .await
    .expect("requeue");
    let create = next_job(&q).await;
    assert_eq!((create.id.clone(), create.outcome_unknown), (b.id, false));
    let s = q.status().await.expect("status");
    assert_eq!((s.scheduled, s.running), (1, 1));
}

fn embedded() -> EmbeddedQueue {
    EmbeddedQueue::new(QueueConfig {
        name: "inflight".into(),
        lease: Duration::from_secs(5),
        ..QueueConfig::default()
    })
}

async fn dispatch(q: &EmbeddedQueue) -> Dispatch {
    q.dispatch().await.expect("dispatch")
}

#[tokio::test(start_paused = true)]
async fn embedded_a_lease_lost_mid_create_waits_until_the_call_can_no_longer_land() {
    let q = embedded();
    q.put_tenants(&[tenant("acme", 25)]).await.expect("tenants");
    q.push(&[job("acme", 1)]).await.expect("push");
    let Dispatch::Job(first) = dispatch(&q).await else {
        panic!("no job")
    };
    assert!(
        q.sending(&first, Duration::from_secs(40))
            .await
            .expect("fence")
    );
    // Lease (5 s) expired, call window (40 s) not: waiting in the schedule.
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(matches!(dispatch(&q).await, Dispatch::Wait(_)));
    assert_eq!(state_of(&q, &first).await, JobState::Scheduled);
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(matches!(dispatch(&q).await, Dispatch::Wait(_)));
    tokio::time::advance(Duration::from_secs(5)).await;
    let Dispatch::Job(second) = dispatch(&q).await else {
        panic!("not handed out once the call could no longer land")
    };
    assert_eq!((second.attempt, second.outcome_unknown), (2, true));
    assert!(
        !q.sending(&first, Duration::from_secs(1))
            .await
            .expect("fence")
    );
}

#[tokio::test(start_paused = true)]
async fn embedded_a_hand_back_mid_create_waits_but_one_before_it_does_not() {
    let q = embedded();
    q.put_tenants(&[tenant("acme", 25)]).await.expect("tenants");
    q.push(&[job("acme", 1), job("acme", 2)])
        .await
        .expect("push");
    let back = Requeue {
        spend_attempt: false,
        outcome_unknown: true,
    };
    let Dispatch::Job(a) = dispatch(&q).await else {
        panic!("no job")
    };
    assert!(q.sending(&a, Duration::from_secs(40)).await.expect("fence"));
    q.requeue(&a, back).await.expect("requeue");
    assert_eq!(state_of(&q, &a).await, JobState::Scheduled);
    // Handed back before its Create was sent: straight to the front.
    let Dispatch::Job(b) = dispatch(&q).await else {
        panic!("no job")
    };
    assert_ne!(b.id, a.id);
    q.requeue(&b, back).await.expect("requeue");
    let Dispatch::Job(again) = dispatch(&q).await else {
        panic!("not at the front")
    };
    assert_eq!(again.id, b.id);
}

/// Issue 4: a dispatch can put up the fence itself (`Fence`), saving the worker's `sending`
/// round trip. A fenced job whose holder vanishes (no `sending`, no heartbeat) is not
/// offered again before `dispatch time + slack + in_flight`; a reconcile job is never fenced
/// (it only Retrieves).
#[tokio::test]
async fn redis_a_fenced_dispatch_waits_for_the_create_like_the_explicit_fence() {
    let mut c = config(&common::unique_queue("inflight-dispatch"), 500);
    c.lease = Duration::from_millis(200);
    let q = connect(c).await;
    q.put_tenants(&[tenant("acme", 25)]).await.expect("tenants");
    let id = id_of(&q.push(&[job("acme", 1)]).await.expect("push"));
    let fence = Fence {
        slack: Duration::from_millis(50),
        in_flight: Duration::from_millis(1450),
    };
    let asked = tokio::time::Instant::now();
    let first = loop {
        match q.dispatch_many(4, Some(fence)).await.expect("dispatch") {
            Dispatched::Jobs(jobs) => break jobs.into_iter().next().expect("a job"),
            Dispatched::Wait(_) | Dispatched::Empty => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
        }
    };
    assert_eq!(first.id, id);
    let until = first
        .fenced_until
        .expect("a Create is fenced by its dispatch");
    assert!(
        until >= asked + fence.slack,
        "the slack counts from before the request"
    );
    let mut con = raw().await;
    let call_until: u64 = redis::cmd("HGET")
        .arg(format!("{}job:{}", q.prefix(), id))
        .arg("call_until_ms")
        .query_async(&mut con)
        .await
        .expect("call_until_ms");
    assert!(call_until >= first.dispatched_at_ms + 1500);
    // The holder goes silent: taken back into the schedule, not the list.
    let deadline = asked + Duration::from_secs(30);
    while state_of(&q, &first).await == JobState::Running {
        assert!(tokio::time::Instant::now() < deadline, "never taken back");
        let _ = q.dispatch().await.expect("dispatch");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state_of(&q, &first).await, JobState::Scheduled);
    let second = loop {
        match q.dispatch_many(4, Some(fence)).await.expect("dispatch") {
            Dispatched::Jobs(jobs) => break jobs.into_iter().next().expect("a job"),
            Dispatched::Wait(d) => q.wait_for_work(d.max(Duration::from_millis(1))).await,
            Dispatched::Empty => panic!("the job is gone"),
        }
    };
    // A lower bound (noise can only make it later).
    assert!(
        asked.elapsed() >= Duration::from_millis(1500),
        "handed out while the first Create could still land"
    );
    assert_eq!((second.id.clone(), second.outcome_unknown), (id, true));
    assert_eq!(second.fenced_until, None, "a reconcile is not fenced");
}

#[tokio::test(start_paused = true)]
async fn embedded_a_fenced_dispatch_waits_for_the_create_like_the_explicit_fence() {
    let q = embedded();
    q.put_tenants(&[tenant("acme", 25)]).await.expect("tenants");
    q.push(&[job("acme", 1)]).await.expect("push");
    let fence = Fence {
        slack: Duration::from_secs(1),
        in_flight: Duration::from_secs(39),
    };
    let Dispatched::Jobs(jobs) = q.dispatch_many(4, Some(fence)).await.expect("dispatch") else {
        panic!("no job")
    };
    let first = &jobs[0];
    assert!(first.fenced_until.is_some());
    // Lease (5 s) expired, call window (1 s + 39 s) not: waiting in the schedule.
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(matches!(dispatch(&q).await, Dispatch::Wait(_)));
    assert_eq!(state_of(&q, first).await, JobState::Scheduled);
    tokio::time::advance(Duration::from_secs(33)).await;
    assert!(matches!(dispatch(&q).await, Dispatch::Wait(_)));
    tokio::time::advance(Duration::from_secs(2)).await;
    let Dispatched::Jobs(again) = q.dispatch_many(4, Some(fence)).await.expect("dispatch") else {
        panic!("not handed out once the call could no longer land")
    };
    assert_eq!((again[0].attempt, again[0].outcome_unknown), (2, true));
    assert_eq!(again[0].fenced_until, None, "a reconcile is not fenced");
}
