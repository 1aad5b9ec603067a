//! Revisions of a logical webhook (issue 18): what a job pushed under a key that already
//! names a job does. The embedded backend decides with [`push_as`]; Redis's push.lua does
//! the same in its "Revisions" block. `docs/decisions.md` ("Issue 18") has the rules and
//! why.

use crate::job::{JobState, NewJob, Operation, Outcome, body_digest, field_digests};

/// What the job already pushed under a key left behind.
#[derive(Clone, Copy, Debug)]
pub struct KeyRecord<'a> {
    /// Its state.
    pub state: JobState,
    /// What it did, once done (`None`: done before outcomes were recorded, so created).
    pub outcome: Option<Outcome>,
    /// The digest of the body it made LeadSquared hold (`None`: not recorded).
    pub digest: Option<&'a str>,
    /// The webhook's Id.
    pub webhook_id: Option<&'a str>,
}

/// What a push makes of a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushAs {
    /// The key's job stands: the same body, a delete of what is gone already, or a job
    /// still unfinished.
    Duplicate,
    /// A new job doing this.
    New(Operation),
}

/// What a push makes of `job`, given the record of the job its key names (`None`: the key
/// is new).
pub fn push_as(existing: Option<KeyRecord<'_>>, job: &NewJob) -> PushAs {
    let id = |r: &KeyRecord<'_>| r.webhook_id.unwrap_or_default().to_string();
    let Some(record) = existing else {
        return PushAs::New(if job.delete {
            Operation::Delete(String::new())
        } else {
            Operation::Create
        });
    };
    if record.state != JobState::Done {
        return PushAs::Duplicate;
    }
    let gone = matches!(record.outcome, Some(Outcome::Deleted | Outcome::NotFound));
    match (job.delete, gone) {
        (true, true) => PushAs::Duplicate,
        (true, false) => PushAs::New(Operation::Delete(id(&record))),
        (false, true) => PushAs::New(Operation::Create),
        (false, false) if record.digest == Some(job.digest().as_str()) => PushAs::Duplicate,
        (false, false) => PushAs::New(Operation::Update(id(&record))),
    }
}

/// The digest a done job records: of the Create body it sent (behind its operation's
/// mark), or empty after a delete.
pub fn done_digest(stored_body: &str) -> String {
    match Operation::split(stored_body) {
        (Operation::Delete(_), _) => String::new(),
        (_, body) => body_digest(body),
    }
}

/// The field digests a done job records ([`field_digests`] of its Create body; empty after
/// a delete), which `sync` names an update's changed fields from.
pub fn done_fields(stored_body: &str) -> String {
    match Operation::split(stored_body) {
        (Operation::Delete(_), _) => String::new(),
        (_, body) => field_digests(body),
    }
}
