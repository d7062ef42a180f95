//! Spool-then-deliver loop shared by the network sinks (webhook, Alertmanager).
//!
//! One tokio task per sink takes alerts off the sink's queue, encodes each into the JSON object
//! its receiver expects, appends it to the sink's [`Spool`] (applying the fsync policy), and
//! only then tries delivery: a `POST` of a JSON array of up to `max_batch_alerts` spooled
//! objects. Spool I/O runs on the blocking pool so disk latency never stalls the runtime.
//!
//! Response policy, chosen so that nothing is lost to a fixable mistake and nothing blocks
//! the spool forever:
//! - 2xx: the batch is acknowledged in the spool and counted as delivered.
//! - 400, 413, 422 (the receiver refuses the *content*): the batch is halved until the
//!   offending alert is alone; a single refused alert is dropped and counted as `rejected`.
//! - Anything else (connection errors, timeouts, 408, 429, 5xx, and also 401/403/404, which
//!   are configuration mistakes an operator can fix): retried with exponential backoff and
//!   jitter, honouring `Retry-After`, for as long as the alerts are spooled.
//!
//! Invariants: an alert is acknowledged only after a 2xx for a body containing it, or after its
//! own rejection; the task owns the spool and is its only user; at shutdown it delivers for at
//! most `shutdown_grace_secs` and then leaves the rest spooled.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{log_warn, SinkCounters};
use crate::alert::config::DeliveryDefaults;
use crate::alert::spool::Spool;
use crate::alert::Alert;

/// Alerts taken off the queue per spool round trip.
const MAX_INTAKE_BURST: usize = 256;
/// Bytes of a refusing response body quoted in the log.
const MAX_LOGGED_BODY_BYTES: usize = 256;

/// What differs between network sinks: the per-alert JSON and the request around a batch.
pub(crate) trait Format: Send + Sync + 'static {
    /// One alert as the JSON object this receiver expects; stored in the spool as is.
    fn encode(&self, alert: &Alert) -> Result<Vec<u8>, serde_json::Error>;
    /// The request carrying `body`, a JSON array of encoded alerts.
    fn request(&self, client: &reqwest::Client, body: Vec<u8>) -> reqwest::RequestBuilder;
}

/// An HTTP client with the sink's timeouts and, if configured, extra trusted CAs.
pub(crate) fn build_client(
    d: &DeliveryDefaults,
    ca_file: Option<&Path>,
) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(d.timeout_secs))
        .connect_timeout(Duration::from_secs(d.connect_timeout_secs))
        .user_agent(concat!("apitap/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no PEM certificates in file", path.display()));
        }
        b = b.tls_certs_merge(certs);
    }
    b.build().map_err(|e| e.to_string())
}

/// Exponential backoff with "equal jitter": the n-th delay is uniform in `[d/2, d]` with
/// `d = min(initial * 2^n, max)`, so retries of many sensors spread out yet never come sooner
/// than half the nominal delay.
pub(crate) struct Backoff {
    initial_secs: f64,
    max_secs: f64,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    pub(crate) fn new(initial_secs: f64, max_secs: f64) -> Backoff {
        Backoff {
            initial_secs,
            max_secs,
            attempt: 0,
            // Seeded from the process's random hash keys: no extra dependency for jitter.
            rng: RandomState::new().hash_one(0x5eed_u64) | 1,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let nominal =
            (self.initial_secs * 2f64.powi(self.attempt.min(40) as i32)).min(self.max_secs);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64*: plenty for jitter.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let unit =
            (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        Duration::from_secs_f64(nominal / 2.0 + nominal / 2.0 * unit)
    }
}

/// The spool, moved to a blocking thread for each operation and back.
struct SpoolSlot {
    spool: Option<Box<Spool>>,
    counters: Arc<SinkCounters>,
}

impl SpoolSlot {
    /// Runs `f` on the blocking pool. `None` only if `f` panicked, which loses the spool.
    async fn run<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Spool) -> R + Send + 'static,
    ) -> Option<R> {
        let mut spool = self.spool.take()?;
        let counters = self.counters.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let r = f(&mut spool);
            counters.publish_spool(&spool.stats());
            (spool, r)
        })
        .await;
        match joined {
            Ok((spool, r)) => {
                self.spool = Some(spool);
                Some(r)
            }
            Err(_) => None,
        }
    }

    fn pending(&self) -> usize {
        self.spool.as_ref().map_or(0, |s| s.pending())
    }
}

/// A network sink's task state.
pub(crate) struct NetworkSink {
    pub(crate) name: String,
    pub(crate) format: Box<dyn Format>,
    pub(crate) client: reqwest::Client,
    pub(crate) delivery: DeliveryDefaults,
    pub(crate) grace: Duration,
    pub(crate) counters: Arc<SinkCounters>,
}

/// What the delivery side is waiting for.
struct Schedule {
    /// When to attempt delivery next; `None` when nothing is pending.
    due: Option<Instant>,
    /// The last attempt failed: `due` is a backoff deadline that new alerts must not advance.
    retrying: bool,
    /// Alerts per attempt; lowered while isolating an alert the receiver refuses.
    batch_limit: usize,
    backoff: Backoff,
    consecutive_failures: u64,
}

enum Outcome {
    /// Nothing was pending.
    Idle,
    Delivered,
    /// Try again after a backoff (at least `min_delay` when the receiver asked for it).
    Retry {
        min_delay: Option<Duration>,
    },
    /// The receiver refused the content of a batch of `sent` alerts: split it.
    Split {
        sent: usize,
    },
}

impl NetworkSink {
    pub(crate) async fn run(self, spool: Spool, mut rx: mpsc::Receiver<Arc<Alert>>) {
        let mut slot = SpoolSlot {
            spool: Some(Box::new(spool)),
            counters: self.counters.clone(),
        };
        self.counters.publish_spool(&match &slot.spool {
            Some(s) => s.stats(),
            None => Default::default(),
        });
        let mut sched = Schedule {
            due: (slot.pending() > 0).then(Instant::now),
            retrying: false,
            batch_limit: self.delivery.max_batch_alerts,
            backoff: Backoff::new(
                self.delivery.retry_initial_backoff_secs,
                self.delivery.retry_max_backoff_secs,
            ),
            consecutive_failures: 0,
        };
        loop {
            tokio::select! {
                msg = rx.recv() => {
                    let Some(first) = msg else { break };
                    if !self.intake(&mut slot, &mut rx, first).await {
                        return;
                    }
                    let pending = slot.pending();
                    if pending > 0 && !sched.retrying {
                        if pending >= sched.batch_limit {
                            sched.due = Some(Instant::now());
                        } else if sched.due.is_none() {
                            sched.due = Some(
                                Instant::now()
                                    + Duration::from_secs_f64(self.delivery.batch_timeout_secs),
                            );
                        }
                    }
                }
                () = sleep_until_opt(sched.due) => {
                    let outcome = self.attempt(&mut slot, &mut sched, None).await;
                    if slot.spool.is_none() {
                        return;
                    }
                    self.reschedule(&mut sched, outcome, slot.pending());
                }
            }
        }
        // The queue is closed and drained: deliver what we can within the grace period.
        let deadline = Instant::now() + self.grace;
        while slot.pending() > 0 && Instant::now() < deadline {
            if sched.retrying {
                if let Some(due) = sched.due {
                    tokio::time::sleep_until(due.min(deadline)).await;
                }
                if Instant::now() >= deadline {
                    break;
                }
            }
            let outcome = self.attempt(&mut slot, &mut sched, Some(deadline)).await;
            if slot.spool.is_none() {
                return;
            }
            self.reschedule(&mut sched, outcome, slot.pending());
        }
        if let Some(Err(e)) = slot.run(|s| s.sync()).await {
            log_warn(
                "Alert spool sync at shutdown failed.",
                &[("sink", &self.name), ("error", &e)],
            );
        }
    }

    /// Encodes and spools `first` and whatever else is queued (up to a burst). Returns false if
    /// the spool was lost (a panic in spool code), which ends the sink.
    async fn intake(
        &self,
        slot: &mut SpoolSlot,
        rx: &mut mpsc::Receiver<Arc<Alert>>,
        first: Arc<Alert>,
    ) -> bool {
        let mut encoded = Vec::new();
        let mut next = Some(first);
        while let Some(alert) = next.take() {
            self.counters.queue_depth.fetch_sub(1, Ordering::Relaxed);
            match self.format.encode(&alert) {
                Ok(bytes) => encoded.push(bytes),
                Err(e) => {
                    self.counters.failures.fetch_add(1, Ordering::Relaxed);
                    log_warn(
                        "Alert could not be encoded; dropped for this sink.",
                        &[("sink", &self.name), ("id", &alert.id), ("error", &e)],
                    );
                }
            }
            if encoded.len() < MAX_INTAKE_BURST {
                next = rx.try_recv().ok();
            }
        }
        let counters = self.counters.clone();
        let name = self.name.clone();
        let done = slot
            .run(move |spool| {
                let mut consecutive = 0u64;
                let dropped_before = spool.stats().dropped;
                for record in &encoded {
                    match spool.append(record) {
                        Ok(_) => {}
                        Err(crate::alert::spool::AppendError::TooLarge { len, max }) => {
                            counters.oversize_drops.fetch_add(1, Ordering::Relaxed);
                            log_warn(
                                "Alert larger than spool.max_record_bytes; dropped.",
                                &[("sink", &name), ("bytes", &len), ("max_record_bytes", &max)],
                            );
                        }
                        Err(crate::alert::spool::AppendError::Io(e)) => {
                            if counters.failure_should_log(&mut consecutive) {
                                log_warn(
                                    "Alert spool append failed; the alert is lost for this sink.",
                                    &[("sink", &name), ("error", &e)],
                                );
                            }
                        }
                    }
                }
                let dropped = spool.stats().dropped;
                // Logged when the running total crosses a power of two: a long outage with a
                // full spool drops on every burst, and one line per burst would flood the log.
                if dropped > dropped_before
                    && (dropped_before == 0 || dropped.ilog2() > dropped_before.ilog2())
                {
                    log_warn(
                        "Spool full; dropped the oldest undelivered alerts.",
                        &[
                            ("sink", &name),
                            ("dropped_now", &(dropped - dropped_before)),
                            ("dropped_total", &dropped),
                        ],
                    );
                }
                if let Err(e) = spool.flush() {
                    counters.failures.fetch_add(1, Ordering::Relaxed);
                    log_warn(
                        "Alert spool fsync failed.",
                        &[("sink", &name), ("error", &e)],
                    );
                }
            })
            .await;
        if done.is_none() {
            log_warn(
                "Alert spool failed unrecoverably; this sink stops.",
                &[("sink", &self.name)],
            );
        }
        done.is_some()
    }

    /// One delivery attempt of the oldest pending alerts.
    async fn attempt(
        &self,
        slot: &mut SpoolSlot,
        sched: &mut Schedule,
        deadline: Option<Instant>,
    ) -> Outcome {
        let limit = sched.batch_limit;
        let max_bytes = self.delivery.max_batch_bytes;
        let batch = match slot.run(move |s| s.peek(limit, max_bytes)).await {
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                if self
                    .counters
                    .failure_should_log(&mut sched.consecutive_failures)
                {
                    log_warn(
                        "Alert spool read failed.",
                        &[("sink", &self.name), ("error", &e)],
                    );
                }
                return Outcome::Retry { min_delay: None };
            }
            None => return Outcome::Idle,
        };
        if batch.records.is_empty() {
            if batch.corrupt > 0 {
                let end = batch.end;
                let _ = slot.run(move |s| s.ack(end)).await;
            }
            return Outcome::Idle;
        }
        let n = batch.records.len();
        let mut body =
            Vec::with_capacity(batch.records.iter().map(|r| r.len() + 1).sum::<usize>() + 1);
        body.push(b'[');
        for (i, r) in batch.records.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(r);
        }
        body.push(b']');
        if sched.retrying {
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
        }
        let send = self.format.request(&self.client, body).send();
        let result = match deadline {
            Some(d) => match tokio::time::timeout_at(d, send).await {
                Ok(r) => r.map_err(|e| error_chain(&e)),
                Err(_) => Err("shutdown grace period ended".to_string()),
            },
            None => send.await.map_err(|e| error_chain(&e)),
        };
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                if self
                    .counters
                    .failure_should_log(&mut sched.consecutive_failures)
                {
                    log_warn(
                        "Alert delivery failed; will retry.",
                        &[
                            ("sink", &self.name),
                            ("alerts", &n),
                            ("failures", &sched.consecutive_failures),
                            ("error", &e),
                        ],
                    );
                }
                return Outcome::Retry { min_delay: None };
            }
        };
        let status = response.status();
        if status.is_success() {
            let end = batch.end;
            match slot.run(move |s| s.ack(end)).await {
                Some(Ok(())) | None => {}
                Some(Err(e)) => log_warn(
                    "Alert spool ack could not be persisted; these alerts may be sent again after a restart.",
                    &[("sink", &self.name), ("error", &e)],
                ),
            }
            self.counters
                .delivered
                .fetch_add(n as u64, Ordering::Relaxed);
            return Outcome::Delivered;
        }
        let refused_content = matches!(status.as_u16(), 400 | 413 | 422);
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let quoted = quote_body(response).await;
        if refused_content && n > 1 {
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
            return Outcome::Split { sent: n };
        }
        if refused_content {
            let end = batch.end;
            let _ = slot.run(move |s| s.ack(end)).await;
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            log_warn(
                "Receiver refused an alert as malformed; dropped it.",
                &[
                    ("sink", &self.name),
                    ("status", &status.as_u16()),
                    ("response", &quoted),
                ],
            );
            return Outcome::Delivered;
        }
        if self
            .counters
            .failure_should_log(&mut sched.consecutive_failures)
        {
            log_warn(
                "Alert delivery refused; will retry.",
                &[
                    ("sink", &self.name),
                    ("status", &status.as_u16()),
                    ("failures", &sched.consecutive_failures),
                    ("response", &quoted),
                ],
            );
        }
        Outcome::Retry {
            min_delay: retry_after,
        }
    }

    fn reschedule(&self, sched: &mut Schedule, outcome: Outcome, pending: usize) {
        let now = Instant::now();
        match outcome {
            Outcome::Idle => {
                sched.due = (pending > 0).then_some(now);
            }
            Outcome::Delivered => {
                sched.retrying = false;
                sched.consecutive_failures = 0;
                sched.backoff.reset();
                // A lowered limit isolated the refused alert; once past it, go back to full size.
                sched.batch_limit = self.delivery.max_batch_alerts;
                sched.due = (pending > 0).then_some(now);
            }
            Outcome::Split { sent } => {
                // Half of what was sent, not of the limit: `max_batch_bytes` may have made the
                // batch smaller than the limit, and halving the limit alone would not shrink it.
                sched.batch_limit = (sent / 2).max(1);
                sched.due = Some(now);
            }
            Outcome::Retry { min_delay } => {
                let mut delay = sched.backoff.next_delay();
                if let Some(min) = min_delay {
                    delay = delay.max(min.min(Duration::from_secs_f64(
                        self.delivery.retry_max_backoff_secs,
                    )));
                }
                sched.retrying = true;
                sched.due = Some(now + delay);
            }
        }
    }
}

/// An error with its causes (`a: b: c`): reqwest's own message alone ("error sending request")
/// hides whether the connection was refused, timed out or failed TLS verification.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

async fn sleep_until_opt(due: Option<Instant>) {
    match due {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The start of a refusing response's body, for the log.
async fn quote_body(mut response: reqwest::Response) -> String {
    match response.chunk().await {
        Ok(Some(chunk)) => {
            let end = chunk.len().min(MAX_LOGGED_BODY_BYTES);
            String::from_utf8_lossy(chunk.get(..end).unwrap_or(&[])).into_owned()
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_bounds_and_caps() {
        let mut b = Backoff::new(0.5, 8.0);
        for nominal in [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0] {
            let d = b.next_delay().as_secs_f64();
            assert!(
                d >= nominal / 2.0 - 1e-9 && d <= nominal + 1e-9,
                "{d} vs {nominal}"
            );
        }
        b.reset();
        assert!(b.next_delay().as_secs_f64() <= 0.5 + 1e-9);
    }

    #[test]
    fn backoff_jitter_varies() {
        let mut b = Backoff::new(10.0, 10.0);
        let delays: std::collections::HashSet<u64> =
            (0..20).map(|_| b.next_delay().as_nanos() as u64).collect();
        assert!(delays.len() > 10, "{delays:?}");
    }
}
