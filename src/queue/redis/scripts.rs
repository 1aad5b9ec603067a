//! The Lua scripts of the Redis queue, each prefixed with the shared helpers of
//! `prelude.lua`. Every `.lua` file opens with a header naming its KEYS and ARGV.

use std::sync::LazyLock;

use redis::Script;

macro_rules! script {
    ($name:ident, $file:literal, $doc:literal) => {
        #[doc = $doc]
        pub(super) static $name: LazyLock<Script> = LazyLock::new(|| {
            Script::new(concat!(include_str!("prelude.lua"), include_str!($file)))
        });
    };
}

/// Enqueue many jobs, with idempotency. Sent whole with EVAL inside the push's MULTI/EXEC
/// (see `RedisQueue::push_batch`), so it is not in [`all`].
pub(super) const PUSH_CODE: &str = concat!(include_str!("prelude.lua"), include_str!("push.lua"));
script!(
    DISPATCH,
    "dispatch.lua",
    "The limiter: promote, take back, pick a tenant, lease."
);
script!(
    COMPLETE,
    "complete.lua",
    "Record successes, a batch at a time, with their history."
);
script!(RETRY_LATER, "retry_later.lua", "Schedule a retry, or bury.");
script!(
    RATE_LIMITED,
    "rate_limited.lua",
    "Pause the tenant, requeue at the front."
);
script!(
    REQUEUE,
    "requeue.lua",
    "Hand a job back to the front of its list."
);
script!(BURY, "bury.lua", "Dead-letter a leased job.");
script!(HEARTBEAT, "heartbeat.lua", "Extend a lease.");
script!(
    ANSWERED,
    "answered.lua",
    "Re-stamp a call when its answer arrived."
);
script!(PUT_TENANTS, "put_tenants.lua", "Add or update tenants.");
script!(
    LEARN_DAILY_LIMIT,
    "learn_daily_limit.lua",
    "Record a daily quota LeadSquared named."
);
script!(STATUS, "status.lua", "Counts and per-tenant view.");
script!(RETRY_DEAD, "retry_dead.lua", "Requeue dead jobs.");
script!(PURGE_DEAD, "purge_dead.lua", "Delete dead jobs.");
script!(
    PURGE_DONE,
    "purge_done.lua",
    "Delete done jobs' records; their keys stay taken."
);
script!(
    NOTE_ATTEMPT,
    "note_attempt.lua",
    "Add a call to a job's history."
);
script!(
    PULSE,
    "pulse.lua",
    "Counts, latency and throttled tenants for a scrape."
);
script!(
    DONE_PER_SECOND,
    "done_per_second.lua",
    "Jobs done per second, recent seconds."
);

script!(HOLD, "hold.lua", "Hold a tenant.");
script!(RELEASE, "release.lua", "End a tenant's hold.");
script!(
    HOST_FAILED,
    "host_failed.lua",
    "Count an unreachable host; hold its tenant after a few."
);
script!(
    HOST_ANSWERED,
    "host_answered.lua",
    "Start a host's failure streak over, and end its probe."
);
script!(SET_HOST, "set_host.lua", "Record a discovered API base.");
script!(
    TAKE_CALL,
    "take_call.lua",
    "Spend a call in a tenant's window for a call no dispatch made."
);

script!(UNSENT, "unsent.lua", "Forget a call that was never sent.");

script!(TENANTS, "tenants.lua", "One page of the tenants view.");
script!(
    PAUSE_QUEUE,
    "pause_queue.lua",
    "Pause or resume the whole queue."
);

/// Every script, to load them all when connecting (so that pipelined calls never meet
/// `NOSCRIPT` and get retried out of order).
pub(super) fn all() -> [&'static Script; 26] {
    [
        &DISPATCH,
        &COMPLETE,
        &RETRY_LATER,
        &RATE_LIMITED,
        &REQUEUE,
        &BURY,
        &HEARTBEAT,
        &ANSWERED,
        &PUT_TENANTS,
        &LEARN_DAILY_LIMIT,
        &STATUS,
        &RETRY_DEAD,
        &PURGE_DEAD,
        &PURGE_DONE,
        &DONE_PER_SECOND,
        &PULSE,
        &NOTE_ATTEMPT,
        &HOLD,
        &RELEASE,
        &HOST_FAILED,
        &HOST_ANSWERED,
        &SET_HOST,
        &TAKE_CALL,
        &UNSENT,
        &TENANTS,
        &PAUSE_QUEUE,
    ]
}
