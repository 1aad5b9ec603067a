//! The Lua scripts of the Redis queue, each prefixed with the shared helpers of
//! `prelude.lua` that it uses. Every `.lua` file opens with a header naming its KEYS and ARGV.
//!
//! Only the helpers a script uses, and the ones they use, go in front of it ([`with_prelude`]):
//! Redis runs a script's whole text on every call, and defining all forty of the prelude's
//! definitions cost 16 µs a call on the machine of `docs/decisions.md` ("What a job costs inside
//! Redis's Lua"), which a one-job script such as the fence pays in full.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use redis::{Script, ScriptInvocation};

use crate::queue::share;

const PRELUDE: &str = include_str!("prelude.lua");

/// One top-level definition of the prelude: the names it defines and its text.
struct Definition {
    name: String,
    text: String,
}

/// The prelude's top-level definitions, in order, read once for every script.
static DEFINITIONS: LazyLock<Vec<Definition>> = LazyLock::new(definitions);

/// The prelude's top-level definitions, in order. Each starts at a line `local ...` in the
/// first column and runs to the next one (the prelude has nothing else at the top level);
/// comment and blank lines in the first column are left out.
fn definitions() -> Vec<Definition> {
    let mut defs: Vec<Definition> = Vec::new();
    for line in PRELUDE.lines() {
        if let Some(rest) = line.strip_prefix("local ") {
            let rest = rest.strip_prefix("function ").unwrap_or(rest);
            let name: String = rest.chars().take_while(|c| is_word(*c)).collect();
            defs.push(Definition {
                name,
                text: String::new(),
            });
        } else if line.starts_with("--") || line.is_empty() {
            continue;
        }
        if let Some(d) = defs.last_mut() {
            d.text.push_str(line);
            d.text.push('\n');
        }
    }
    defs
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The words (identifiers, and anything else made of word characters) in `text`.
fn words(text: &str) -> BTreeSet<&str> {
    text.split(|c: char| !is_word(c))
        .filter(|w| !w.is_empty())
        .collect()
}

/// `body` with the prelude's definitions it names, directly or through other definitions,
/// in front of it in the prelude's order. A name is taken wherever it appears as a word
/// (comments too), so a definition is never left out; at worst one too many goes in.
pub(super) fn with_prelude(body: &str) -> String {
    let defs = &*DEFINITIONS;
    let mut needed: BTreeSet<&str> = BTreeSet::new();
    let mut pending: Vec<&str> = words(body).into_iter().collect();
    while let Some(w) = pending.pop() {
        let Some(d) = defs.iter().find(|d| d.name == w) else {
            continue;
        };
        if needed.insert(d.name.as_str()) {
            pending.extend(words(&d.text));
        }
    }
    let mut out: String = defs
        .iter()
        .filter(|d| needed.contains(d.name.as_str()))
        .map(|d| d.text.as_str())
        .collect();
    out.push_str(body);
    with_constants(&out)
}

/// `text` with the share controller's constants written in, from the one place they are
/// defined (`queue::share`).
fn with_constants(text: &str) -> String {
    text.replace("SHARE_CLIMB_SCALE", &format!("{:?}", share::climb_scale()))
        .replace("SHARE_DOUBLING", &format!("{:?}", share::DOUBLING))
        .replace("SHARE_OVERLAP", &format!("{:?}", share::OVERLAP))
}

/// A script of the queue. Each call declares two keys: the one its caller names (a cluster
/// client routes the call by it) and its shard's [`guard_key`].
pub(super) struct QueueScript(Script);

impl QueueScript {
    fn new(code: &str) -> Self {
        QueueScript(Script::new(code))
    }

    /// A call with `key` as KEYS[1] and the guard of `key`'s shard as KEYS[2].
    pub(super) fn key(&self, key: String) -> ScriptInvocation<'_> {
        let guard = guard_key(&key);
        let mut invocation = self.0.key(key);
        invocation.key(guard);
        invocation
    }

    /// The script itself, to load it.
    pub(super) fn script(&self) -> &Script {
        &self.0
    }
}

/// `{tag}:slot-guard` for a key `{tag}:...`: a key of the shard's slot that nothing writes.
/// Every script call declares it, so that a Redis Cluster node refuses the call before it
/// runs while the slot migrates (`redis-cli --cluster reshard`): with two keys declared and
/// one missing, a node migrating or importing the slot answers `TRYAGAIN` (or `ASK`, to the
/// node that then answers `TRYAGAIN`), which the worker waits out. Without it a script ran,
/// and failed at the first key it touched that was missing on the node ("Script attempted to
/// access a non local key"), after the writes it had made: Redis does not undo them, so a
/// completion could mark its job done and leave it in `running`
/// (tests/cluster.rs, `a_script_is_refused_whole_while_its_slot_migrates`).
pub(super) fn guard_key(key: &str) -> String {
    let prefix = key.find("}:").map_or("", |i| &key[..i + 2]);
    format!("{prefix}slot-guard")
}

macro_rules! script {
    ($name:ident, $file:literal, $doc:literal) => {
        #[doc = $doc]
        pub(super) static $name: LazyLock<QueueScript> =
            LazyLock::new(|| QueueScript::new(&with_prelude(include_str!($file))));
    };
}

/// Enqueue many jobs, with idempotency. Sent whole with EVAL inside the push's MULTI/EXEC
/// (see `RedisQueue::push_batch`), so it is not in [`all`].
pub(super) static PUSH_CODE: LazyLock<String> =
    LazyLock::new(|| with_prelude(include_str!("push.lua")));
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
    ADAPT_SHARE,
    "adapt_share.lua",
    "Set a tenant's share after a cut, unless another came first."
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
pub(super) fn all() -> [&'static Script; 27] {
    [
        DISPATCH.script(),
        COMPLETE.script(),
        RETRY_LATER.script(),
        RATE_LIMITED.script(),
        ADAPT_SHARE.script(),
        REQUEUE.script(),
        BURY.script(),
        HEARTBEAT.script(),
        ANSWERED.script(),
        PUT_TENANTS.script(),
        LEARN_DAILY_LIMIT.script(),
        STATUS.script(),
        RETRY_DEAD.script(),
        PURGE_DEAD.script(),
        PURGE_DONE.script(),
        DONE_PER_SECOND.script(),
        PULSE.script(),
        NOTE_ATTEMPT.script(),
        HOLD.script(),
        RELEASE.script(),
        HOST_FAILED.script(),
        HOST_ANSWERED.script(),
        SET_HOST.script(),
        TAKE_CALL.script(),
        UNSENT.script(),
        TENANTS.script(),
        PAUSE_QUEUE.script(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name the prelude defines, with the ones a definition uses, and whether the
    /// text given to Redis defines each helper a script calls.
    #[test]
    fn a_script_gets_the_helpers_it_uses_and_not_the_others() {
        let defs = definitions();
        let names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
        assert!(names.contains(&"P") && names.contains(&"restamp") && names.len() > 30);
        assert!(defs.iter().all(|d| d.text.starts_with("local ")));

        let fence = with_prelude(include_str!("heartbeat.lua"));
        for helper in [
            "local P =",
            "local function now_us(",
            "local function restamp(",
        ] {
            assert!(fence.contains(helper), "{helper}");
        }
        // restamp's own helpers come too, before it.
        let limit = fence
            .find("local function tenant_limit(")
            .expect("tenant_limit");
        assert!(limit < fence.find("local function restamp(").expect("restamp"));
        for unused in [
            "local function bury(",
            "local function hold_tenant(",
            "local function tenant_cap(",
            "HOLD_KINDS",
        ] {
            assert!(!fence.contains(unused), "{unused}");
        }
        assert!(fence.ends_with(include_str!("heartbeat.lua")));

        // The whole prelude, less its comments, when a body names every helper.
        let all_names = names.join(" ");
        let whole = with_prelude(&all_names);
        let kept: String = defs.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(whole, with_constants(&(kept + &all_names)));
        assert!(!whole.contains("SHARE_CLIMB_SCALE") && whole.contains("doubling = 30.0"));
    }
}
