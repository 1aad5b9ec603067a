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
use lsq_webhooks::queue::{Dispatch, LeasedJob, Pushed, Queue, QueueConfig, Requeue};
use queue_support::{config, connect, job, next_job, tenant};

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
