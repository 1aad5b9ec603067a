//! Completions batched per process: jobs whose call found their webhook hand the Id (and the
//! call's history entry) to one writer task, which records up to
//! [`WorkerConfig::complete_batch`](super::WorkerConfig::complete_batch) of them with one
//! [`Queue::complete_many`] call. A batch goes out as soon as the previous one is written:
//! what came in meanwhile goes together, so a busy process sends few, large batches and an
//! idle one sends each completion at once, with no timer to wait for. With a batch of 1
//! there is no writer: each job records its own success, concurrently.
//!
//! A job is acknowledged as done only once its batch is written: until then it holds its
//! lease and its worker waits. If the process dies between the answer and the write, the
//! lease runs out and the job is reconciled (the Id is found with Retrieve), as after any
//! crash mid-call; no Id is lost.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::job::{Attempt, Outcome};
use crate::queue::{Completion, LeasedJob, Queue, QueueError};

/// One success waiting for its batch.
struct Pending {
    job: LeasedJob,
    webhook_id: String,
    reconciled: bool,
    outcome: Outcome,
    attempt: Attempt,
    /// When the call's answer arrived (the job's call is re-stamped then).
    answered: Instant,
    /// Told whether it was recorded.
    reply: oneshot::Sender<Result<bool, QueueError>>,
}

/// The handle jobs send their successes through; the writer task ends when every handle
/// is dropped.
#[derive(Clone)]
pub(crate) struct Completions {
    queue: Arc<dyn Queue>,
    /// `None` with a batch of 1: each job writes its own, as many at once as jobs finish.
    tx: Option<mpsc::UnboundedSender<Pending>>,
}

impl Completions {
    /// Starts the writer task on `queue`, at most `batch` completions per store call.
    pub fn start(queue: Arc<dyn Queue>, batch: usize) -> Self {
        let tx = (batch > 1).then(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(write(queue.clone(), rx, batch));
            tx
        });
        Completions { queue, tx }
    }

    /// Records a success with its call's history entry, once its batch is written:
    /// [`QueueError::LeaseLost`] when the lease was lost; a store error as the batch met it
    /// (repeating is safe, as for [`Queue::complete`]).
    pub async fn complete(
        &self,
        job: &LeasedJob,
        webhook_id: &str,
        reconciled: bool,
        outcome: Outcome,
        attempt: &Attempt,
        answered: Instant,
    ) -> Result<(), QueueError> {
        let Some(tx) = &self.tx else {
            let one = Completion {
                job,
                webhook_id,
                reconciled,
                outcome,
                attempt: Some(attempt),
                answered_ago: answered.elapsed(),
            };
            return match self.queue.complete_many(&[one]).await?[..] {
                [true] => Ok(()),
                _ => Err(QueueError::LeaseLost(job.id.clone())),
            };
        };
        let (reply, recorded) = oneshot::channel();
        let pending = Pending {
            job: job.clone(),
            webhook_id: webhook_id.to_string(),
            reconciled,
            outcome,
            attempt: attempt.clone(),
            answered,
            reply,
        };
        let stopped = || QueueError::Unavailable("the completion writer stopped".into());
        tx.send(pending).map_err(|_| stopped())?;
        match recorded.await.map_err(|_| stopped())? {
            Ok(true) => Ok(()),
            Ok(false) => Err(QueueError::LeaseLost(job.id.clone())),
            Err(e) => Err(e),
        }
    }
}

/// The writer: waits for a success, takes every other one already waiting (up to `batch`),
/// writes them in one call and tells each job its answer.
async fn write(queue: Arc<dyn Queue>, mut rx: mpsc::UnboundedReceiver<Pending>, batch: usize) {
    let mut pending = Vec::with_capacity(batch);
    while rx.recv_many(&mut pending, batch).await > 0 {
        let sent = Instant::now();
        let done: Vec<Completion<'_>> = pending
            .iter()
            .map(|p| Completion {
                job: &p.job,
                webhook_id: &p.webhook_id,
                reconciled: p.reconciled,
                outcome: p.outcome,
                attempt: Some(&p.attempt),
                answered_ago: sent.saturating_duration_since(p.answered),
            })
            .collect();
        let result = queue.complete_many(&done).await;
        drop(done);
        for (i, p) in pending.drain(..).enumerate() {
            let answer = match &result {
                Ok(recorded) => Ok(recorded.get(i).copied().unwrap_or(false)),
                Err(e) => Err(e.clone()),
            };
            // A job that stopped waiting (its task ended) needs no answer.
            let _ = p.reply.send(answer);
        }
    }
}
