//! Command-line front end: parses flags into validated settings and runs the commands.
//!
//! Only this layer (with `capture`) touches files, the terminal and the wall clock; the engine
//! below it is pure.

pub mod detect;
pub mod model;
pub mod output;

use crate::capture::OfflineSource;
use crate::config::Config;
use crate::engine::{Engine, EngineStats};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use output::{FlowWriter, Format};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(name = "apitap", version, about = "Passive API security sensor", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the HTTP transactions found in capture files.
    Flows(FlowsArgs),
    /// Write a synthetic API traffic capture (and its ground truth) with apitap's generator.
    Generate(GenerateArgs),
    /// Learn (or extend) a model of the API from capture files.
    Learn(model::LearnArgs),
    /// Detect attacks in capture files against a learned model; alerts as JSON Lines.
    Detect(detect::DetectArgs),
    /// Merge or summarise learned models.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// List the endpoints of a model, export OpenAPI, or diff against a spec.
    Inventory(model::InventoryArgs),
    /// Print the documented default configuration file, or check one.
    Config(ConfigArgs),
    /// Run the sensor: capture, parse, serve metrics, until stopped (or a replay ends).
    Run(RunArgs),
}

#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("input").args(["interface", "pcap"]))]
pub struct RunArgs {
    /// Interface to capture (`eth0`, `any`, `lo`); default: `[capture] interface`.
    #[arg(long, short, value_name = "IFACE")]
    pub interface: Option<String>,
    /// Replay capture files instead (several are merged in timestamp order).
    #[arg(long, num_args = 1.., value_name = "FILE")]
    pub pcap: Vec<PathBuf>,
    /// Configuration file; reloaded on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Replay at capture pace (sleeping by packet-time deltas) instead of at full speed.
    #[arg(long)]
    pub realtime: bool,
    /// BPF filter for live capture; overrides `[capture] filter`.
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// After a replay has drained, keep serving metrics until SIGTERM or SIGINT.
    #[arg(long)]
    pub hold: bool,
}

#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub action: ConfigAction,
}

#[derive(Subcommand, Debug)]
pub enum ConfigAction {
    /// Print the default configuration file, every option documented.
    Default,
    /// Check a configuration file (with the secrets from the environment, as at start): print
    /// every problem and exit non-zero if there is one.
    Check {
        /// The TOML file to check.
        file: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
pub struct FlowsArgs {
    /// pcap or pcapng files; several are merged in timestamp order.
    #[arg(required = true)]
    pub pcaps: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: Format,
    /// Do not print the summary on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// Configuration file; its decode, flow, stream and http limits apply.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Scenario to generate.
    #[arg(long, default_value = "basic")]
    pub scenario: String,
    /// Output pcap file.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Ground-truth JSON Lines file (one object per transaction).
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Seed of the deterministic generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Keep generating until the capture reaches this many megabytes (10^6 bytes).
    #[arg(long)]
    pub size_mb: Option<u64>,
    /// Write every bundled capture into this directory instead.
    #[arg(long, conflicts_with = "out")]
    pub bundled: Option<PathBuf>,
    /// Security scenarios: capture length in hours (default 4 for security-train, 1 otherwise).
    #[arg(long)]
    pub hours: Option<f64>,
    /// Security scenarios: write the incident labels (JSON Lines) to this file.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Security scenarios: write the API's OpenAPI 3.0 spec (YAML) to this file.
    #[arg(long)]
    pub spec_out: Option<PathBuf>,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Flows(a) => quiet_on_broken_pipe(flows(a)),
        Command::Generate(a) => generate(a),
        Command::Learn(a) => model::learn(a),
        Command::Detect(a) => quiet_on_broken_pipe(detect::detect(a)),
        Command::Model(c) => quiet_on_broken_pipe(model::model(c)),
        Command::Inventory(a) => quiet_on_broken_pipe(model::inventory(a)),
        Command::Config(a) => quiet_on_broken_pipe(config(a)),
        Command::Run(a) => run_daemon(a),
    }
}

/// The configuration of a command: the file given with `--config`, or the defaults; secrets
/// from the process environment either way.
pub fn load_config(path: Option<&Path>) -> Result<Config> {
    let env = |k: &str| std::env::var(k).ok();
    Ok(match path {
        Some(p) => Config::load(p, env)?,
        None => Config::from_env(env)?,
    })
}

fn run_daemon(args: RunArgs) -> Result<()> {
    use crate::daemon::settings::{RunFlags, RunSettings};
    let flags = RunFlags {
        interface: args.interface,
        pcaps: args.pcap,
        config: args.config,
        realtime: args.realtime,
        filter: args.filter,
        hold: args.hold,
    };
    let settings = RunSettings::resolve(flags, |k| std::env::var(k).ok(), RunSettings::cores())?;
    crate::daemon::run(settings)?;
    Ok(())
}

fn config(args: ConfigArgs) -> Result<()> {
    match args.action {
        ConfigAction::Default => {
            let mut out = io::stdout().lock();
            out.write_all(crate::config::DEFAULT_FILE.as_bytes())
                .and_then(|()| out.flush())
                .context("writing output")?;
        }
        ConfigAction::Check { file } => {
            load_config(Some(&file))?;
            eprintln!("apitap: {}: valid", file.display());
        }
    }
    Ok(())
}

/// Writing to a closed pipe (`apitap flows x.pcap | head`) ends the run quietly, like other
/// Unix filters; every other output error is reported.
fn quiet_on_broken_pipe(r: Result<()>) -> Result<()> {
    match r {
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<io::Error>()
                    .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            }) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn flows(args: FlowsArgs) -> Result<()> {
    let started = Instant::now();
    let cfg = load_config(args.config.as_deref())?;
    let mut source = OfflineSource::open(&args.pcaps)?;
    let mut engine = Engine::new(cfg.engine());
    let stdout = io::stdout().lock();
    let mut writer = FlowWriter::new(BufWriter::with_capacity(1 << 16, stdout), args.format);
    let mut batch = Vec::with_capacity(64);
    let mut packets = 0u64;
    let mut bytes = 0u64;
    while let Some(pkt) = source.next_packet() {
        packets += 1;
        bytes += pkt.orig_len as u64;
        engine.process(&pkt, &mut batch);
        for t in batch.drain(..) {
            writer.write(&t).context("writing output")?;
        }
    }
    engine.finish(&mut batch);
    for t in batch.drain(..) {
        writer.write(&t).context("writing output")?;
    }
    writer.flush().context("writing output")?;
    if !args.quiet {
        let elapsed = started.elapsed().as_secs_f64();
        print_summary(&engine.stats(), packets, bytes, elapsed);
    }
    Ok(())
}

fn print_summary(s: &EngineStats, packets: u64, bytes: u64, elapsed: f64) {
    let secs = elapsed.max(1e-9);
    let mut e = io::stderr().lock();
    let _ = writeln!(
        e,
        "apitap: {packets} packets, {bytes} bytes, {} flows, {} transactions, {} gaps ({} bytes) in {:.3} s: {:.3} Gbps, {:.0} packets/s, {:.0} transactions/s",
        s.flow.created,
        s.transactions,
        s.stream.gaps,
        s.stream.gap_bytes,
        elapsed,
        bytes as f64 * 8.0 / secs / 1e9,
        packets as f64 / secs,
        s.transactions as f64 / secs,
    );
    let anomalies = crate::telemetry::anomaly_counts(s);
    if !anomalies.is_empty() {
        let list: Vec<String> = anomalies.iter().map(|(n, c)| format!("{n}={c}")).collect();
        let _ = writeln!(e, "apitap: anomalies: {}", list.join(" "));
    }
    let skipped = crate::telemetry::skip_counts(s);
    if !skipped.is_empty() {
        let list: Vec<String> = skipped.iter().map(|(n, c)| format!("{n}={c}")).collect();
        let _ = writeln!(e, "apitap: skipped: {}", list.join(" "));
    }
}

fn generate(args: GenerateArgs) -> Result<()> {
    use crate::synth;
    if let Some(dir) = &args.bundled {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        synth::write_bundled_captures(dir)
            .with_context(|| format!("{}: writing captures", dir.display()))?;
        return Ok(());
    }
    if let Some(sc) = synth::security::SecurityScenario::from_name(&args.scenario) {
        return generate_security(sc, &args);
    }
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("{}: cannot create", args.out.display()))?;
    let truth = match &args.truth {
        Some(p) => Some(
            std::fs::File::create(p).with_context(|| format!("{}: cannot create", p.display()))?,
        ),
        None => None,
    };
    let scenario = synth::Scenario::from_name(&args.scenario).ok_or_else(|| {
        anyhow::anyhow!(
            "--scenario {}: unknown; one of: {}",
            args.scenario,
            synth::Scenario::ALL
                .iter()
                .map(|s| s.name())
                .chain(
                    synth::security::SecurityScenario::ALL
                        .iter()
                        .map(|s| s.name())
                )
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let mut opts = synth::GenOptions::new(scenario, args.seed);
    opts.target_bytes = args.size_mb.map(|m| m.saturating_mul(1_000_000));
    let summary = synth::generate(&opts, file, truth)
        .with_context(|| format!("{}: writing capture", args.out.display()))?;
    eprintln!(
        "apitap: wrote {} packets, {} bytes, {} transactions in {} connections to {}",
        summary.packets,
        summary.bytes,
        summary.transactions,
        summary.connections,
        args.out.display()
    );
    Ok(())
}

fn generate_security(
    scenario: crate::synth::security::SecurityScenario,
    args: &GenerateArgs,
) -> Result<()> {
    use crate::synth::security;
    if let Some(h) = args.hours {
        if !(h > 0.0 && h <= 24.0) {
            anyhow::bail!("--hours {h}: must be more than 0 and at most 24");
        }
    }
    if let Some(p) = &args.spec_out {
        std::fs::write(p, security::spec::SPEC_YAML)
            .with_context(|| format!("{}: cannot write", p.display()))?;
    }
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("{}: cannot create", args.out.display()))?;
    let labels = match &args.labels {
        Some(p) => Some(
            std::fs::File::create(p).with_context(|| format!("{}: cannot create", p.display()))?,
        ),
        None => None,
    };
    let mut opts = security::SecurityOptions::new(scenario, args.seed);
    opts.hours = args.hours;
    let s = security::generate(&opts, file, labels)
        .with_context(|| format!("{}: writing capture", args.out.display()))?;
    eprintln!(
        "apitap: wrote {} packets, {} bytes, {} transactions ({} by {} incidents) in {} connections to {}",
        s.packets,
        s.bytes,
        s.transactions,
        s.attack_transactions,
        s.incidents,
        s.connections,
        args.out.display()
    );
    Ok(())
}
