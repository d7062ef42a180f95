//! `apitap detect`: offline detection of captures against a learned model.
//!
//! Output is the final record of every incident (one line per alert id), ordered by
//! `first_seen` then id, so the same captures and model give the same bytes; `--updates`
//! prints every record as the daemon would send it instead (an incident's opening record and
//! its closing update share an id). A one-line summary goes to standard error.

use crate::alert::{Alert, AlertKind};
use crate::capture::OfflineSource;
use crate::detect::learned::TrainedModel;
use crate::detect::{DetectEngine, DetectEnv};
use crate::engine::Engine;
use crate::identity::IdentityExtractor;
use crate::inventory::spec::Spec;
use crate::model::Model;
use crate::transaction::Transaction;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct DetectArgs {
    /// pcap or pcapng files; several are merged in timestamp order.
    #[arg(required = true)]
    pub pcaps: Vec<PathBuf>,
    /// Model directory written by `apitap learn`.
    #[arg(long)]
    pub model: PathBuf,
    /// Configuration file: `[detect]` settings, `[identity]` claims and trusted proxies,
    /// engine limits, `[secrets] pseudonym_key`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// OpenAPI spec: its templates name endpoints; traffic outside it is a shadow endpoint,
    /// operations it marks deprecated raise deprecated_endpoint.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// MaxMind-format GeoIP city database, for impossible travel.
    #[arg(long, value_name = "FILE")]
    pub geoip: Option<PathBuf>,
    /// Where alerts go, as JSON Lines; `-` is standard output.
    #[arg(long, value_name = "FILE|-", default_value = "-")]
    pub alerts: String,
    /// Print every record as it is raised (opening and closing update) instead of the final
    /// record per incident.
    #[arg(long)]
    pub updates: bool,
    /// Keep learning while detecting, as the daemon does (`[detect] adapt`): traffic that
    /// raised nothing is learned. Off by default here: offline detection judges captures
    /// against the model as given, so captures from different days give comparable results
    /// (a capture days after the model would otherwise teach it the days between as silence).
    #[arg(long)]
    pub adapt: bool,
    /// Save the baselines as adapted during detection to this model directory.
    #[arg(long, value_name = "DIR", requires = "adapt")]
    pub save_model: Option<PathBuf>,
    /// 2: read packets into transactions on one thread and detect on another, as the daemon
    /// does (same output, less wall time when a second core is free); 1: one thread (also
    /// what a one-core machine gets).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub threads: u8,
}

pub fn detect(args: DetectArgs) -> Result<()> {
    let cfg = super::load_config(args.config.as_deref())?;
    // Opened first, so a bad capture fails before the model is read.
    let source = OfflineSource::open(&args.pcaps)?;
    let engine = Engine::new(cfg.engine());
    // One core: a second thread would only add hand-over costs.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if args.threads < 2 || cores < 2 {
        let mut det = detector(&args, &cfg)?;
        let mut out = Output::open(&args.alerts, args.updates)?;
        let mut raised = Vec::new();
        let (mut source, mut engine, mut batch) = (source, engine, Vec::new());
        while let Some(pkt) = source.next_packet() {
            engine.process(&pkt, &mut batch);
            for t in batch.drain(..) {
                det.observe(&t, &mut raised);
            }
            out.take(&mut raised)?;
        }
        engine.finish(&mut batch);
        for t in batch.drain(..) {
            det.observe(&t, &mut raised);
        }
        return finish(&args, det, out, raised);
    }
    // Two stages on two threads, as in the daemon: packets to transactions, then detection.
    // The first starts reading while the model loads. The bounded channel keeps capture order
    // (the output is the same bytes as with one thread) and memory bounded.
    // `[daemon] max_queued_transactions` bounds the transactions in flight, as in the daemon.
    let batches = (cfg.daemon.max_queued_transactions / BATCH_TRANSACTIONS).max(1);
    let (send, recv) = crossbeam_channel::bounded::<Vec<Transaction>>(batches);
    std::thread::scope(|scope| -> Result<()> {
        scope.spawn(move || transactions(source, engine, &send));
        // On an error below `recv` is dropped, so the first stage stops at its next send.
        let mut det = detector(&args, &cfg)?;
        let mut out = Output::open(&args.alerts, args.updates)?;
        let mut raised = Vec::new();
        for batch in recv {
            for t in &batch {
                det.observe(t, &mut raised);
            }
            out.take(&mut raised)?;
        }
        finish(&args, det, out, raised)
    })
}

/// The detection engine for `args`: model, pseudonym key, spec, GeoIP and learned models.
fn detector(args: &DetectArgs, cfg: &crate::config::Config) -> Result<DetectEngine> {
    if !Model::file(&args.model).exists() {
        bail!(
            "{}: no model there; learn one first with apitap learn --model {} <PCAP>...",
            Model::file(&args.model).display(),
            args.model.display()
        );
    }
    let mut model = Model::load(&args.model)?;
    let (key, key_id) =
        super::model::pseudonym_key(&args.model, cfg.secrets.pseudonym_key.expose().as_bytes())?;
    if model.pseudonym_key_id != key_id {
        bail!(
            "{}: learned with pseudonym key {}, but the key now is {}; use the same {}",
            Model::file(&args.model).display(),
            model.pseudonym_key_id,
            key_id,
            super::model::PSEUDONYM_KEY_ENV
        );
    }
    let identity = IdentityExtractor::new(&cfg.identity, &key)
        .map_err(|e| anyhow::anyhow!("{}: {e}", super::model::PSEUDONYM_KEY_ENV))?;
    let spec = match &args.spec {
        Some(p) => {
            let spec = Spec::load(p)?;
            model.routes = std::mem::take(&mut model.routes).with_spec_paths(spec.paths());
            Some(spec)
        }
        None => None,
    };
    let trained = TrainedModel::load(&args.model)?;
    if trained.is_none() {
        eprintln!(
            "apitap: {}: no learned models, so the learned detectors are off; `apitap learn` writes them.",
            TrainedModel::file(&args.model).display()
        );
    }
    let env = DetectEnv {
        spec,
        geoip: args.geoip.clone(),
        trained,
    };
    let mut detect_cfg = cfg.detect.clone();
    detect_cfg.adapt = args.adapt;
    DetectEngine::new(model, identity, detect_cfg, env).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Ends detection (open incidents closed), writes the last alerts, prints the summary and
/// saves the adapted model when asked.
fn finish(
    args: &DetectArgs,
    mut det: DetectEngine,
    mut out: Output,
    mut raised: Vec<Alert>,
) -> Result<()> {
    det.finish(&mut raised);
    out.take(&mut raised)?;
    let by_kind = out.finish()?;
    let c = det.counters().clone();
    let ic = det.incident_counters().clone();
    let kinds: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
    eprintln!(
        "apitap: {} transactions, {} findings, {} alerts{}{}; {} suppressed, {} rate-limited, {} learned, {} withheld from learning",
        c.transactions,
        c.findings,
        by_kind.values().sum::<u64>(),
        if kinds.is_empty() { "" } else { ": " },
        kinds.join(", "),
        ic.suppressed.values().sum::<u64>(),
        ic.rate_limited,
        c.learned,
        c.withheld_from_learning
    );
    if let Some(dir) = &args.save_model {
        let model = det.into_model();
        model.save(dir)?;
    }
    Ok(())
}

/// Transactions per batch: enough to make the channel's cost per transaction negligible.
const BATCH_TRANSACTIONS: usize = 256;

/// The first stage: reads every packet, sends the transactions in batches, in capture order.
/// Stops early when the detection stage has gone (it failed and returned).
fn transactions(
    mut source: OfflineSource,
    mut engine: Engine,
    send: &crossbeam_channel::Sender<Vec<Transaction>>,
) {
    let mut batch = Vec::with_capacity(BATCH_TRANSACTIONS);
    while let Some(pkt) = source.next_packet() {
        engine.process(&pkt, &mut batch);
        if batch.len() >= BATCH_TRANSACTIONS {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_TRANSACTIONS));
            if send.send(full).is_err() {
                return;
            }
        }
    }
    engine.finish(&mut batch);
    if !batch.is_empty() {
        let _ = send.send(batch);
    }
}

/// Where alert records go, and how many of each kind.
struct Output {
    w: Box<dyn Write>,
    what: String,
    updates: bool,
    /// Final records by id, when not printing updates.
    finals: BTreeMap<String, Alert>,
    by_kind: BTreeMap<AlertKind, u64>,
}

impl Output {
    fn open(target: &str, updates: bool) -> Result<Output> {
        let w: Box<dyn Write> = if target == "-" {
            Box::new(BufWriter::new(io::stdout()))
        } else {
            let f = std::fs::File::create(target)
                .with_context(|| format!("{target}: cannot create the alerts file"))?;
            Box::new(BufWriter::new(f))
        };
        Ok(Output {
            w,
            what: if target == "-" {
                "standard output".into()
            } else {
                target.into()
            },
            updates,
            finals: BTreeMap::new(),
            by_kind: BTreeMap::new(),
        })
    }

    fn take(&mut self, raised: &mut Vec<Alert>) -> Result<()> {
        for a in raised.drain(..) {
            debug_assert!(a.validate().is_ok(), "{:?}", a.validate());
            if self.updates {
                if !self.finals.contains_key(&a.id) {
                    *self.by_kind.entry(a.kind).or_insert(0) += 1;
                    self.finals.insert(a.id.clone(), a.clone());
                }
                write_line(&mut self.w, &a).with_context(|| self.what.clone())?;
            } else {
                self.finals.insert(a.id.clone(), a);
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<BTreeMap<AlertKind, u64>> {
        if !self.updates {
            let mut all: Vec<&Alert> = self.finals.values().collect();
            all.sort_by(|a, b| (a.first_seen, &a.id).cmp(&(b.first_seen, &b.id)));
            for a in all {
                *self.by_kind.entry(a.kind).or_insert(0) += 1;
                write_line(&mut self.w, a).with_context(|| self.what.clone())?;
            }
        }
        self.w.flush().with_context(|| self.what.clone())?;
        Ok(self.by_kind)
    }
}

fn write_line(w: &mut dyn Write, a: &Alert) -> io::Result<()> {
    serde_json::to_writer(&mut *w, a).map_err(io::Error::other)?;
    w.write_all(b"\n")
}
