//! Every reason text the queue records: why a tenant is paused, why a job is dead, why a job
//! waits in the schedule. Built once here for both backends: the embedded queue records
//! them as they are, the Redis backend hands them to its Lua scripts as ARGV, so no script
//! composes text and the two backends cannot word a reason differently
//! (tests/queue_conformance.rs checks each one on both).

/// A tenant paused because LeadSquared answered "rate limited", naming its limit or not.
pub fn rate_limited(limit: Option<u32>) -> String {
    match limit {
        Some(l) => format!("rate limited by LeadSquared (limit of {l} per window)"),
        None => "rate limited by LeadSquared".to_string(),
    }
}

/// A job dead after a transient failure on its last attempt.
pub fn gave_up(attempts: u32, error: &str) -> String {
    format!("gave up after {attempts} attempts: {error}")
}

/// A job dead because its lease expired with no attempt left (it kills or hangs its worker
/// every time).
pub fn lease_expired_no_attempts_left(max_attempts: u32) -> String {
    format!(
        "lease expired with all {max_attempts} attempts spent (the worker died or hung \
         holding the job)"
    )
}

/// A job taken back from a worker whose lease expired before it sent a Create; its next
/// dispatch reconciles.
pub const LEASE_EXPIRED: &str =
    "lease expired (the worker died or hung); handed back to be reconciled";

/// A job taken back from a worker whose lease expired while its Create may still land: it
/// waits in the schedule until that call can no longer land.
pub const LEASE_EXPIRED_MID_CALL: &str = "lease expired mid-call (the worker died or hung); \
     reconciled once that call can no longer land";

/// A job handed back (shutdown's hard stop) while its Create may still land.
pub const HANDED_BACK_MID_CALL: &str =
    "handed back mid-call; reconciled once that call can no longer land";

/// Damaged data, met only in a store another program can write to (Redis): a dead job's
/// reason says what was wrong with its record.
pub mod corrupt {
    /// A leased job's record names no tenant.
    pub const NO_TENANT: &str = "corrupt job record (no tenant)";
    /// A due retry whose record is gone.
    pub const RETRY_RECORD_MISSING: &str = "job record missing when its retry came due";
    /// An expired lease whose record is gone.
    pub const LEASE_RECORD_MISSING: &str = "job record missing when its lease expired";
    /// A job whose `bodies` entry does not split into tenant, key and body.
    pub const DAMAGED_ENTRY: &str = "corrupt job record (damaged entry in bodies)";
    /// A job whose record is not a hash; the data is renamed to `corrupt:<id>`.
    pub const NOT_A_HASH: &str = "corrupt job record (not a hash); kept as corrupt:<job id>";
    /// A job in a tenant's list with neither a record nor a `bodies` entry.
    pub const RECORD_MISSING: &str = "job record missing from the queue";
    /// A job with a record but no body, or no state.
    pub const NO_BODY_OR_STATE: &str = "corrupt job record (no body or no state)";
}
