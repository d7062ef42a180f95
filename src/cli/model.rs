//! `apitap learn`, `apitap model merge|show` and `apitap inventory`: build, combine, inspect
//! and report learned models.

use crate::capture::OfflineSource;
use crate::detect::learned::{TrainedModel, Trainer};
use crate::engine::Engine;
use crate::identity::IdentityExtractor;
use crate::inventory::report;
use crate::inventory::spec::Spec;
use crate::inventory::template::RouteLearner;
use crate::model::learn::{LearnConfig, Learner};
use crate::model::Model;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The environment variable that carries the pseudonym key (at least 16 bytes).
pub const PSEUDONYM_KEY_ENV: &str = "APITAP_PSEUDONYM_KEY";
/// The key file created beside a model when no key is given.
pub const KEY_FILE: &str = "pseudonym.key";

#[derive(clap::Args, Debug)]
pub struct LearnArgs {
    /// pcap or pcapng files; several are merged in timestamp order.
    #[arg(required = true)]
    pub pcaps: Vec<PathBuf>,
    /// Model directory; an existing model there is extended.
    #[arg(long)]
    pub model: PathBuf,
    /// OpenAPI spec whose path templates take precedence over learned ones.
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// Name of this sensor, recorded in the model.
    #[arg(long, default_value = "sensor")]
    pub sensor: String,
    /// Configuration file: engine limits, `[identity]` claims and trusted proxies, `[routes]`
    /// templating options, `[secrets] pseudonym_key`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum ModelCommand {
    /// Merge the models of several sensors.
    Merge {
        #[arg(required = true, num_args = 2..)]
        models: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Summarise a model.
    Show { model: PathBuf },
}

#[derive(clap::Args, Debug)]
pub struct InventoryArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, value_enum, default_value = "table")]
    pub format: InventoryFormat,
    /// Write an OpenAPI 3.1 document reconstructed from traffic to this file.
    #[arg(long)]
    pub openapi: Option<PathBuf>,
    /// Compare with this OpenAPI spec (3.0/3.1, YAML or JSON) and print the drift.
    #[arg(long)]
    pub spec: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InventoryFormat {
    Table,
    Json,
}

/// The pseudonym key: the configured one (`[secrets] pseudonym_key`, which
/// `APITAP_PSEUDONYM_KEY` overrides), else `<model>/pseudonym.key`, created with 32 random bytes
/// (mode 0600) on first use. Returns the key and its public fingerprint.
pub fn pseudonym_key(model_dir: &Path, configured: &[u8]) -> Result<(Vec<u8>, String)> {
    let key = match configured {
        k if !k.is_empty() => k.to_vec(),
        _ => {
            let path = model_dir.join(KEY_FILE);
            if path.exists() {
                std::fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?
            } else {
                std::fs::create_dir_all(model_dir)
                    .with_context(|| format!("{}: cannot create", model_dir.display()))?;
                let mut key = vec![0u8; 32];
                std::fs::File::open("/dev/urandom")
                    .and_then(|mut f| f.read_exact(&mut key))
                    .context("/dev/urandom: cannot read random bytes for the pseudonym key")?;
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                opts.open(&path)
                    .and_then(|mut f| f.write_all(&key))
                    .with_context(|| format!("{}: cannot write", path.display()))?;
                key
            }
        }
    };
    let id: String = Sha256::digest([b"apitap-key-id:".as_slice(), &key].concat())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((key, id))
}

pub fn learn(args: LearnArgs) -> Result<()> {
    let cfg = super::load_config(args.config.as_deref())?;
    let (key, key_id) = pseudonym_key(&args.model, cfg.secrets.pseudonym_key.expose().as_bytes())?;
    let identity = IdentityExtractor::new(&cfg.identity, &key)
        .map_err(|e| anyhow::anyhow!("{PSEUDONYM_KEY_ENV}: {e}"))?;
    let mut routes = RouteLearner::new(cfg.routes.clone());
    if let Some(spec) = &args.spec {
        let spec = Spec::load(spec)?;
        routes = routes.with_spec_paths(spec.paths());
    }
    let model = if Model::file(&args.model).exists() {
        let mut m = Model::load(&args.model)?;
        if m.pseudonym_key_id != key_id {
            bail!(
                "{}: learned with pseudonym key {}, but the key now is {}; use the same {PSEUDONYM_KEY_ENV}",
                Model::file(&args.model).display(),
                m.pseudonym_key_id,
                key_id
            );
        }
        if !m.sensors.contains(&args.sensor) {
            m.sensors.push(args.sensor.clone());
            m.sensors.sort();
        }
        m
    } else {
        Model::new(&args.sensor, &key_id, routes)
    };
    // The learned detectors' samples travel with the model: extending one extends both.
    let previous = TrainedModel::load(&args.model)?;
    let mut trainer = Trainer::new(&cfg.detect, previous);
    let mut learner = Learner::new(model, identity, LearnConfig::default());
    let mut source = OfflineSource::open(&args.pcaps)?;
    let mut engine = Engine::new(cfg.engine());
    let mut batch = Vec::new();
    let mut learn = |learner: &mut Learner, t: &crate::transaction::Transaction| {
        if let Some(p) = learner.prepare(t, true) {
            trainer.observe(t, &p, learner.endpoint(&p.key));
            learner.learn(t, &p);
        }
    };
    while let Some(pkt) = source.next_packet() {
        engine.process(&pkt, &mut batch);
        for t in batch.drain(..) {
            learn(&mut learner, &t);
        }
    }
    engine.finish(&mut batch);
    for t in batch.drain(..) {
        learn(&mut learner, &t);
    }
    let model = learner.finish();
    let trained = trainer.finish(&model);
    model.save(&args.model)?;
    trained.save(&args.model)?;
    eprintln!(
        "apitap: learned models: {} endpoint shape models, caller-window model {}: {}",
        trained.shapes.len(),
        if trained.callers.is_some() {
            "fitted"
        } else {
            "not fitted (too few windows)"
        },
        TrainedModel::file(&args.model).display()
    );
    eprintln!(
        "apitap: learned {} transactions ({} in this model) into {} endpoints: {}",
        engine.transactions,
        model.counters.learned,
        model.endpoints.len(),
        Model::file(&args.model).display()
    );
    Ok(())
}

pub fn model(cmd: ModelCommand) -> Result<()> {
    match cmd {
        ModelCommand::Merge { models, out } => {
            let cfg = LearnConfig::default();
            let mut merged: Option<Model> = None;
            for dir in &models {
                let m = Model::load(dir)?;
                match &mut merged {
                    None => merged = Some(m),
                    Some(acc) => acc
                        .merge(&m, &cfg)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?,
                }
            }
            let merged = merged.context("no models given")?;
            merged.save(&out)?;
            // The key travels with the merged model when the inputs carried one.
            if let Some(first) = models.first() {
                let key = first.join(KEY_FILE);
                if key.exists() && !out.join(KEY_FILE).exists() {
                    std::fs::copy(&key, out.join(KEY_FILE))
                        .with_context(|| format!("{}: cannot copy the key", key.display()))?;
                }
            }
            eprintln!(
                "apitap: merged {} models ({} endpoints) into {}",
                models.len(),
                merged.endpoints.len(),
                Model::file(&out).display()
            );
            Ok(())
        }
        ModelCommand::Show { model } => {
            let m = Model::load(&model)?;
            let mut o = std::io::stdout().lock();
            writeln!(o, "model:        {}", Model::file(&model).display())?;
            writeln!(o, "sensors:      {}", m.sensors.join(", "))?;
            writeln!(o, "key id:       {}", m.pseudonym_key_id)?;
            writeln!(
                o,
                "traffic:      {:.3} .. {:.3} ({:.1} h)",
                m.first_seen.as_secs_f64(),
                m.last_seen.as_secs_f64(),
                m.last_seen.saturating_since(m.first_seen).as_secs_f64() / 3600.0
            )?;
            writeln!(
                o,
                "listened:     {} whole clock hours in {} spans ({} gaps joined to stay within the span cap)",
                m.coverage.whole_hours(),
                m.coverage.spans().len(),
                m.coverage.gaps_joined()
            )?;
            let c = &m.counters;
            writeln!(
                o,
                "transactions: {} seen, {} learned, {} without request, {} partial, {} over the endpoint cap",
                c.transactions, c.learned, c.without_request, c.partial, c.endpoints_over_cap
            )?;
            writeln!(o, "endpoints:    {}", m.endpoints.len())?;
            writeln!(
                o,
                "callers:      {} ({} anonymous transactions; over the memory budget: {} of new callers, {} of new endpoints)",
                m.callers.len(),
                c.anonymous,
                c.callers_over_budget,
                c.endpoints_over_budget
            )?;
            writeln!(o, "templates:")?;
            let mut t = m.routes.templates();
            t.sort_by(|a, b| (&a.host, &a.path, &a.method).cmp(&(&b.host, &b.path, &b.method)));
            for s in t {
                writeln!(
                    o,
                    "  {:<7} {}{}  ({} hits, {})",
                    s.method,
                    s.host,
                    s.path,
                    s.hits,
                    s.reason.name()
                )?;
            }
            for (name, n) in m.routes.counters().iter() {
                if n > 0 {
                    writeln!(o, "  route counter {name} = {n}")?;
                }
            }
            Ok(())
        }
    }
}

pub fn inventory(args: InventoryArgs) -> Result<()> {
    let m = Model::load(&args.model)?;
    let rows = report::endpoint_rows(&m);
    let mut o = std::io::stdout().lock();
    if let Some(path) = &args.openapi {
        let doc = report::openapi(&m, "Observed API");
        let text = serde_json::to_string_pretty(&doc)?;
        std::fs::write(path, text).with_context(|| format!("{}: cannot write", path.display()))?;
        eprintln!(
            "apitap: wrote OpenAPI 3.1 document with {} operations to {}",
            rows.len(),
            path.display()
        );
    }
    if let Some(spec_path) = &args.spec {
        let spec = Spec::load(spec_path)?;
        let d = report::drift(&m, &spec);
        match args.format {
            InventoryFormat::Json => {
                serde_json::to_writer_pretty(&mut o, &d)?;
                writeln!(o)?;
            }
            InventoryFormat::Table => {
                for (title, items) in [
                    ("shadow endpoints (seen, not in spec)", &d.shadow),
                    ("deprecated endpoints still called", &d.deprecated_called),
                    ("spec endpoints never seen", &d.never_seen),
                    ("query parameters not in spec", &d.unknown_params),
                    ("request fields not in spec", &d.unknown_fields),
                ] {
                    writeln!(o, "{title}: {}", items.len())?;
                    for i in items {
                        writeln!(o, "  {i}")?;
                    }
                }
            }
        }
        return Ok(());
    }
    match args.format {
        InventoryFormat::Json => {
            serde_json::to_writer_pretty(&mut o, &rows)?;
            writeln!(o)?;
        }
        InventoryFormat::Table => {
            writeln!(
                o,
                "{:<7} {:<20} {:<44} {:>7} {:<24} {:<28} params / sensitive",
                "method", "host", "route", "calls", "auth", "status"
            )?;
            for r in rows {
                let route = match &r.graphql {
                    Some(g) => format!("{} ({g})", r.route),
                    None => r.route.clone(),
                };
                let status: Vec<String> =
                    r.status.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                let mut extra: Vec<String> =
                    r.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                extra.extend(r.sensitive.iter().map(|(k, v)| format!("!{k}x{v}")));
                writeln!(
                    o,
                    "{:<7} {:<20} {:<44} {:>7} {:<24} {:<28} {}",
                    r.method,
                    r.host,
                    route,
                    r.calls,
                    r.auth_schemes.join(","),
                    status.join(" "),
                    extra.join(" ")
                )?;
            }
        }
    }
    Ok(())
}
