//! Detection inside `apitap run`: the [`DetectAnalyzer`] runs a [`DetectEngine`] on the
//! analysis thread and sends its alerts to the sinks.
//!
//! At start, [`load`] reads what `apitap detect` reads, from `[detect] model_dir`: the model
//! (`model.json`, or an empty one when there is none yet), the pseudonym key exactly as
//! `apitap learn` finds or creates it, the learned detectors (`detect.json`), and the optional
//! spec and GeoIP database. Any error names the file and refuses the start: a sensor that
//! silently ran without its baselines would look healthy and detect nothing.
//!
//! A young model learns first: the engine only detects once the model spans
//! `learning_period_secs` of traffic (counted in packet time). With `adapt`, it keeps learning
//! while it detects, except from traffic that raised a finding (no baseline poisoning).
//!
//! Invariants:
//! - The engine only sees packet time; the wall clock only paces the saves
//!   (`save_interval_secs`, checked on the analysis stage's flush) and the metrics.
//! - Alerts go to [`AlertOutput::submit`], which never blocks: a slow sink cannot stall
//!   detection.
//! - Every save replaces `model.json` atomically ([`Model::save`]), so a crash mid-save leaves
//!   the previous checkpoint. At shutdown the open incidents are closed (their final records
//!   are submitted) before the last save.
//! - A periodic save copies the baselines on the analysis thread and writes them there: for
//!   the time it takes, transactions wait in the analysis queue (a live capture drops the
//!   newest when it is full, counted in `apitap_daemon_channel_drops_total`).

use super::analysis::{AlertOutput, Analyzer};
use crate::alert::Alert;
use crate::cli::model::{pseudonym_key, KEY_FILE, PSEUDONYM_KEY_ENV};
use crate::common::{Duration, Timestamp};
use crate::config::Config;
use crate::detect::learned::TrainedModel;
use crate::detect::{DetectConfig, DetectEngine, DetectEnv, DetectError};
use crate::identity::IdentityExtractor;
use crate::inventory::spec::{Spec, SpecError};
use crate::inventory::template::RouteLearner;
use crate::model::store::StoreError;
use crate::model::Model;
use crate::telemetry::metrics::{inc, DetectStatus};
use crate::telemetry::Metrics;
use crate::transaction::Transaction;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Why detection could not start; every message names the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `model.json` or `detect.json` could not be read.
    #[error(transparent)]
    Model(#[from] StoreError),
    /// The pseudonym key file could not be read or created.
    #[error("{0}")]
    Key(String),
    /// The model was learned with another pseudonym key: its caller ids would not match.
    #[error(
        "{}: learned with pseudonym key {learned}, but the key now is {now}; use the same \
         [secrets] pseudonym_key or {PSEUDONYM_KEY_ENV}",
        file.display()
    )]
    KeyMismatch {
        file: PathBuf,
        learned: String,
        now: String,
    },
    /// The key or the `[identity]` settings were refused.
    #[error("{place}: {reason}")]
    Identity { place: String, reason: String },
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The engine refused its settings or an input (the GeoIP database).
    #[error(transparent)]
    Engine(#[from] DetectError),
}

/// Loads the model and everything else detection needs, from `cfg.detect`; `None` when
/// `[detect] enabled = false`.
pub fn load(cfg: &Config) -> Result<Option<DetectEngine>, StartError> {
    let d = &cfg.detect;
    if !d.enabled {
        return Ok(None);
    }
    let dir = &d.model_dir;
    let configured = cfg.secrets.pseudonym_key.expose().as_bytes();
    let (key, key_id) =
        pseudonym_key(dir, configured).map_err(|e| StartError::Key(format!("{e:#}")))?;
    let identity =
        IdentityExtractor::new(&cfg.identity, &key).map_err(|e| StartError::Identity {
            place: if configured.is_empty() {
                dir.join(KEY_FILE).display().to_string()
            } else {
                "[secrets] pseudonym_key".to_owned()
            },
            reason: e.to_string(),
        })?;
    let mut model = if Model::file(dir).exists() {
        let m = Model::load(dir)?;
        if m.pseudonym_key_id != key_id {
            return Err(StartError::KeyMismatch {
                file: Model::file(dir),
                learned: m.pseudonym_key_id,
                now: key_id,
            });
        }
        m
    } else {
        Model::new(
            &sensor_name(),
            &key_id,
            RouteLearner::new(cfg.routes.clone()),
        )
    };
    let spec = match non_empty(&d.spec) {
        Some(p) => {
            let spec = Spec::load(p)?;
            model.routes = std::mem::take(&mut model.routes).with_spec_paths(spec.paths());
            Some(spec)
        }
        None => None,
    };
    let env = DetectEnv {
        spec,
        geoip: non_empty(&d.geoip).map(Path::to_path_buf),
        trained: TrainedModel::load(dir)?,
    };
    let learned_detectors = env.trained.is_some();
    let mut engine = DetectEngine::new(model, identity, d.clone(), env)?;
    let period = Duration::from_secs(d.learning_period_secs);
    engine.learn_first(period);
    let m = engine.model();
    let span = m.last_seen.saturating_since(m.first_seen);
    let learning = m.first_seen == Timestamp::ZERO || span < period;
    tracing::info!(
        model = %Model::file(dir).display(),
        model_age_hours = format!("{:.1}", span.as_secs_f64() / 3600.0),
        learned_transactions = m.counters.learned,
        detectors = %engine.detector_names().join(","),
        learned_detectors,
        learning,
        learning_left_hours = format!("{:.1}", Duration::from_nanos(period.as_nanos().saturating_sub(span.as_nanos())).as_secs_f64() / 3600.0),
        "Detection started."
    );
    Ok(Some(engine))
}

fn non_empty(p: &Path) -> Option<&Path> {
    Some(p).filter(|p| !p.as_os_str().is_empty())
}

/// This host's name, recorded in a model started from scratch (as `apitap learn --sensor`).
fn sensor_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sensor".to_owned())
}

/// The detection stage of the daemon; see the module documentation.
pub struct DetectAnalyzer {
    /// `None` once finished.
    engine: Option<DetectEngine>,
    alerts: AlertOutput,
    metrics: Metrics,
    model_dir: PathBuf,
    save_every: std::time::Duration,
    last_save: Instant,
    raised: Vec<Alert>,
    /// Latest packet time seen, for the learning state and the model age.
    now: Timestamp,
}

impl DetectAnalyzer {
    pub fn new(
        engine: DetectEngine,
        cfg: &DetectConfig,
        alerts: AlertOutput,
        metrics: Metrics,
    ) -> DetectAnalyzer {
        let a = DetectAnalyzer {
            engine: Some(engine),
            alerts,
            metrics,
            model_dir: cfg.model_dir.clone(),
            save_every: std::time::Duration::from_secs(cfg.save_interval_secs),
            last_save: Instant::now(),
            raised: Vec::new(),
            now: Timestamp::ZERO,
        };
        a.publish();
        a
    }

    fn submit(&mut self) {
        for a in self.raised.drain(..) {
            // Refusals and full sink queues are counted and logged by the output itself.
            let _ = self.alerts.submit(a);
        }
    }

    fn publish(&self) {
        let Some(e) = &self.engine else { return };
        let age = self.now.saturating_since(e.model().last_seen);
        let detectors = e.detector_counters();
        self.metrics.publish_detect(&DetectStatus {
            counters: e.counters(),
            incidents: e.incident_counters(),
            open_incidents: e.open_incidents(),
            learning: !e.detecting(self.now),
            model_age_secs: if self.now == Timestamp::ZERO {
                0.0
            } else {
                age.as_secs_f64()
            },
            detectors: &detectors,
        });
    }

    /// Writes `model` to the model directory, counting and logging the result.
    fn save(&mut self, model: &Model) {
        self.last_save = Instant::now();
        let started = Instant::now();
        match model.save(&self.model_dir) {
            Ok(()) => {
                inc(&self.metrics.detect_model_saves, &["ok"], 1);
                tracing::info!(
                    model = %Model::file(&self.model_dir).display(),
                    endpoints = model.endpoints.len(),
                    callers = model.callers.len(),
                    millis = started.elapsed().as_millis() as u64,
                    "Model saved."
                );
            }
            Err(e) => {
                inc(&self.metrics.detect_model_saves, &["error"], 1);
                tracing::error!(error = %e, "Saving the model failed; the previous checkpoint stays.");
            }
        }
    }
}

impl DetectAnalyzer {
    /// SIGHUP: reads `[detect] spec` again (the file may have changed even when its path did
    /// not). A spec that cannot be read keeps the running one, and says why.
    fn reload_spec(&mut self, cfg: &Config) {
        let Some(engine) = self.engine.as_mut() else {
            return;
        };
        match non_empty(&cfg.detect.spec) {
            None => engine.set_spec(None),
            Some(p) => match Spec::load(p) {
                Ok(spec) => {
                    let operations = spec.paths().len();
                    engine.set_spec(Some(spec));
                    tracing::info!(spec = %p.display(), operations, "Spec reloaded.");
                }
                Err(e) => tracing::error!(
                    error = %e,
                    "Spec reload failed; keeping the running spec."
                ),
            },
        }
    }
}

impl Analyzer for DetectAnalyzer {
    fn reconfigure(&mut self, cfg: &Config) {
        self.reload_spec(cfg);
    }

    fn name(&self) -> &'static str {
        "detect"
    }

    fn on_transaction(&mut self, tx: &Transaction) {
        let Some(engine) = self.engine.as_mut() else {
            return;
        };
        engine.observe(tx, &mut self.raised);
        self.now = self.now.max(tx.ts());
        if !self.raised.is_empty() {
            self.submit();
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.publish();
        if self.last_save.elapsed() >= self.save_every {
            if let Some(model) = self.engine.as_ref().map(DetectEngine::snapshot_model) {
                self.save(&model);
            }
        }
        Ok(())
    }

    fn finish(&mut self) {
        let Some(engine) = self.engine.as_mut() else {
            return;
        };
        engine.finish(&mut self.raised);
        self.submit();
        // The final counts, with every incident closed.
        self.publish();
        if let Some(engine) = self.engine.take() {
            let model = engine.into_model();
            self.save(&model);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::OfflineSource;
    use crate::engine::Engine;
    use crate::identity::IdentityConfig;
    use crate::inventory::template::RouteConfig;

    const KEY: &[u8] = b"daemon-detection-test-key-012345";

    fn transactions(pcap: &str) -> Vec<Transaction> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("captures")
            .join(pcap);
        let mut src = OfflineSource::open(&[path]).expect("bundled capture");
        let mut engine = Engine::new(Config::default().engine());
        let mut out = Vec::new();
        while let Some(p) = src.next_packet() {
            engine.process(&p, &mut out);
        }
        engine.finish(&mut out);
        out
    }

    /// An analyzer over an empty model saving to `model_dir` at every flush.
    fn analyzer(model_dir: &Path, alerts: &Path, metrics: &Metrics) -> DetectAnalyzer {
        let identity = IdentityExtractor::new(&IdentityConfig::default(), KEY).unwrap();
        let model = Model::new("s", "k", RouteLearner::new(RouteConfig::default()));
        let mut engine = DetectEngine::new(
            model,
            identity,
            DetectConfig::default(),
            DetectEnv::default(),
        )
        .unwrap();
        engine.learn_first(Duration::from_secs(
            DetectConfig::default().learning_period_secs,
        ));
        // Below the configurable minimum, which only guards operators from thrashing disks.
        let cfg = DetectConfig {
            model_dir: model_dir.to_owned(),
            save_interval_secs: 0,
            ..DetectConfig::default()
        };
        let pipeline = super::super::analysis::tests::file_pipeline(alerts);
        DetectAnalyzer::new(
            engine,
            &cfg,
            AlertOutput::new(pipeline, metrics.clone()),
            metrics.clone(),
        )
    }

    fn saves(m: &Metrics, result: &str) -> u64 {
        m.detect_model_saves.with_label_values(&[result]).get()
    }

    #[test]
    fn saves_when_due_and_at_finish_and_counts_failures() {
        let dir = std::env::temp_dir().join(format!("apitap-detection-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let txs = transactions("api-basic.pcap");
        let metrics = Metrics::new();
        let model_dir = dir.join("model");
        let mut a = analyzer(&model_dir, &dir.join("alerts.jsonl"), &metrics);
        assert_eq!(
            metrics.detect_learning.get(),
            1,
            "an empty model learns first"
        );
        let (first, rest) = txs.split_at(txs.len() / 2);
        for t in first {
            a.on_transaction(t);
        }
        a.flush().unwrap();
        assert_eq!(saves(&metrics, "ok"), 1);
        let checkpoint = Model::load(&model_dir).expect("checkpoint");
        assert_eq!(checkpoint.counters.learned, metrics.detect_learned.get());
        assert_eq!(metrics.detect_transactions.get(), first.len() as u64);
        for t in rest {
            a.on_transaction(t);
        }
        a.finish();
        assert_eq!(saves(&metrics, "ok"), 2);
        let last = Model::load(&model_dir).expect("final save");
        assert_eq!(last.counters.learned, metrics.detect_learned.get());
        assert!(last.counters.learned > checkpoint.counters.learned);
        assert_eq!(metrics.detect_transactions.get(), txs.len() as u64);
        assert_eq!(
            metrics.detect_findings.get(),
            0,
            "nothing judged while learning"
        );
        // Finished: later calls change nothing.
        a.flush().unwrap();
        a.finish();
        assert_eq!(saves(&metrics, "ok"), 2);

        // A model directory that cannot be created: counted, logged, and the stage goes on.
        let blocked = dir.join("alerts.jsonl").join("model");
        let metrics = Metrics::new();
        let mut a = analyzer(&blocked, &dir.join("alerts2.jsonl"), &metrics);
        a.on_transaction(&txs[0]);
        a.flush().unwrap();
        a.finish();
        assert_eq!((saves(&metrics, "ok"), saves(&metrics, "error")), (0, 2));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
