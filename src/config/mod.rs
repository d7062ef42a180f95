//! The configuration file: one TOML document that sets every limit and option of apitap.
//!
//! [`Config`] is the whole file; each `[section]` is the config struct of the stage it sets
//! (`[decode]` is [`DecodeConfig`], `[http]` is [`HttpConfig`], ...), so a stage's limits are
//! documented once, on its own struct, and the documented default file `deploy/apitap.toml`
//! (printed by `apitap config default`) is tested to parse into exactly [`Config::default`] and
//! to document every key.
//!
//! Invariants:
//! - Every option has a default: an empty file is a valid file.
//! - A file is accepted whole or not at all. Unknown keys, wrong types and out-of-range values
//!   are rejected with the file, the `[section] key`, the value and what to do, and every bad
//!   value is reported at once, not one per attempt.
//! - Secrets (`[secrets]`) can come from the environment instead of the file, and never appear
//!   in a `Debug` print, an error message or a log line.
//! - This module does no I/O except reading the file it is given; environment lookups are
//!   passed in, so tests do not depend on the process environment.

mod validate;

use crate::alert::SinksConfig;
use crate::detect::DetectConfig;
use crate::engine::EngineConfig;
use crate::flow::reassembly::StreamConfig;
use crate::flow::table::FlowConfig;
use crate::http::HttpConfig;
use crate::identity::IdentityConfig;
use crate::inventory::template::RouteConfig;
use crate::wire::DecodeConfig;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// The documented default configuration file, shipped as `deploy/apitap.toml`.
pub const DEFAULT_FILE: &str = include_str!("../../deploy/apitap.toml");

/// Environment variable that overrides `[secrets] pseudonym_key`.
pub const ENV_PSEUDONYM_KEY: &str = "APITAP_PSEUDONYM_KEY";
/// Environment variable that overrides `[secrets] webhook_secret`.
pub const ENV_WEBHOOK_SECRET: &str = "APITAP_WEBHOOK_SECRET";

/// Keys (`section.key`) whose new value a running daemon applies on SIGHUP. A change to any
/// other key is reported as needing a restart: the stage that reads it has already sized its
/// tables, opened its socket or dropped the privileges it would need.
pub const LIVE_KEYS: &[&str] = &[
    "daemon.log_level",
    "output.flush_interval_ms",
    "metrics.max_route_series",
    "metrics.route_refresh_secs",
    "detect.spec",
];

/// The whole configuration file.
// Not `Eq`: `[alert]` and `[detect]` hold floats.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub capture: CaptureConfig,
    pub daemon: DaemonConfig,
    pub metrics: MetricsConfig,
    pub output: OutputConfig,
    pub alert: SinksConfig,
    pub secrets: Secrets,
    pub decode: DecodeConfig,
    pub flow: FlowConfig,
    pub stream: StreamConfig,
    pub http: HttpConfig,
    pub identity: IdentityConfig,
    pub routes: RouteConfig,
    pub detect: DetectConfig,
}

/// Live capture (`[capture]`): how `apitap run --interface` opens the interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// Interface captured when `apitap run` is given neither `--interface` nor `--pcap`.
    /// Empty: one of them must be given.
    pub interface: String,
    /// Receive frames not addressed to this host; needed on a span port or a tap.
    pub promiscuous: bool,
    /// Bytes kept per frame, 64 to 262144. The default keeps whole frames, including the
    /// super-frames that segmentation offload produces on the capturing host.
    pub snaplen_bytes: u32,
    /// BPF filter expression (tcpdump syntax), checked when the file is loaded. Empty: every
    /// packet. Applies to live capture only.
    pub filter: String,
    /// Kernel capture buffer, 64 KiB to 2047 MiB. It absorbs bursts while the sensor catches
    /// up; when it is full the kernel drops packets (`apitap_capture_kernel_drops_total`).
    pub buffer_bytes: u32,
    /// Hand each packet over as it arrives instead of when a kernel buffer block fills or
    /// `read_timeout_ms` passes. Costs CPU and, on Linux, retires a buffer block per
    /// millisecond, so the buffer absorbs much shorter stalls: keep it off on busy links.
    pub immediate: bool,
    /// How long a read waits for packets, 1 to 10000 ms. It bounds how long a partly filled
    /// batch waits on a quiet link and how long shutdown waits for the capture thread.
    pub read_timeout_ms: u32,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            interface: String::new(),
            promiscuous: true,
            snaplen_bytes: 262_144,
            filter: String::new(),
            buffer_bytes: 32 * 1024 * 1024,
            immediate: false,
            read_timeout_ms: 250,
        }
    }
}

/// Log verbosity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// The sensor process (`[daemon]`): threads, queues and privileges of `apitap run`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// User to switch to once the capture is open (its primary group too, and no supplementary
    /// groups). Empty: keep the current user. Needs root; skipped with a log line otherwise.
    pub user: String,
    /// Packet worker threads, each with its own flow table, 0 to 256. 0: one per CPU core.
    pub workers: usize,
    /// Also hash TCP ports, not only the address pair, when choosing a packet's worker. Spreads
    /// load where few address pairs carry most traffic (a proxy in front of the servers), but a
    /// connection whose packets are sometimes IP-fragmented (fragments carry no ports) then
    /// reaches two workers, and an attacker can fragment on purpose to hide a request. Off:
    /// every packet between two addresses goes to the same worker whatever its form.
    pub shard_by_ports: bool,
    /// Packet batches queued per worker, 1 to 65536. When a worker's queue is full, live
    /// capture drops the newest batch (`apitap_daemon_channel_drops_total{channel="packets"}`)
    /// and pcap replay waits.
    pub max_queued_batches: usize,
    /// Size of one packet batch buffer, from `[capture] snaplen_bytes` to 64 MiB. Buffers are
    /// allocated once and recycled; the packet memory of the daemon is
    /// `workers * (max_queued_batches + 2) * batch_bytes`.
    pub batch_bytes: usize,
    /// Packets per batch, 1 to 65536. A batch is sent when it is full, when the next packet
    /// would not fit, or `batch_timeout_ms` after its first packet.
    pub max_batch_packets: usize,
    /// Longest time a partly filled batch waits before it is sent, 1 to 10000 ms (live capture;
    /// on a quiet link, checked after every `[capture] read_timeout_ms`).
    pub batch_timeout_ms: u64,
    /// Transactions queued from the workers to the analysis stage, 1 to 1000000. When full,
    /// live capture drops the newest
    /// (`apitap_daemon_channel_drops_total{channel="transactions"}`) and pcap replay waits.
    pub max_queued_transactions: usize,
    /// How often each worker publishes its counters to the metrics, 100 to 60000 ms.
    pub stats_interval_ms: u64,
    /// Log verbosity: `error`, `warn`, `info`, `debug` or `trace`. Logs go to stderr.
    pub log_level: LogLevel,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            user: String::new(),
            workers: 0,
            shard_by_ports: false,
            max_queued_batches: 16,
            batch_bytes: 512 * 1024,
            max_batch_packets: 256,
            batch_timeout_ms: 100,
            max_queued_transactions: 8192,
            stats_interval_ms: 1000,
            log_level: LogLevel::Info,
        }
    }
}

/// The metrics server and the metric catalogue (`[metrics]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the HTTP server for `/metrics`, `/healthz` and `/readyz`, as `ip:port`.
    /// Empty: no server. Port 0 picks a free port (logged at start).
    pub listen: String,
    /// Connections served at once, 1 to 1024; further connections wait in the accept queue.
    pub max_connections: usize,
    /// Longest time one connection may take to send its request and read the answer,
    /// 1 to 300 s; then it is closed.
    pub request_timeout_secs: u64,
    /// Endpoints (route templates such as `GET /users/{id}`) with their own `route` label,
    /// 0 to 1000. The busiest ones get it; all others are counted under `route="other"`, so
    /// the number of series stays bounded whatever the traffic.
    pub max_route_series: usize,
    /// Endpoints whose traffic is estimated to pick the busiest (space-saving counters),
    /// from `max_route_series` to 100000. More gives a better choice under churn.
    pub max_tracked_routes: usize,
    /// How often, in packet time, the set of labelled endpoints is chosen again, 1 to 86400 s.
    /// Estimates are halved at each choice, so the set follows changes in traffic.
    pub route_refresh_secs: u64,
    /// Transactions over which `apitap_http_capture_quality_ratio` (the share of complete
    /// transactions) is computed, 1 to 1000000.
    pub quality_window_transactions: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "127.0.0.1:9187".into(),
            max_connections: 16,
            request_timeout_secs: 10,
            max_route_series: 50,
            max_tracked_routes: 500,
            route_refresh_secs: 60,
            quality_window_transactions: 1000,
        }
    }
}

/// Outputs of the analysis stage (`[output]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputConfig {
    /// JSON Lines file receiving every transaction (the `apitap flows` record), appended to.
    /// Empty: none. It holds request targets and header values as sent: protect it.
    pub transaction_log: String,
    /// Longest time a logged transaction stays in the write buffer, 10 to 60000 ms.
    pub flush_interval_ms: u64,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            transaction_log: String::new(),
            flush_interval_ms: 1000,
        }
    }
}

/// A secret value: never printed by `Debug`, never part of an error message.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the code that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How a value is shown in messages: its length only.
    fn redacted(&self) -> String {
        format!("<secret of {} bytes>", self.0.len())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Secrets (`[secrets]`). Each can be set from the environment instead, which wins over the
/// file: keep them out of files that are shared or checked in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Secrets {
    /// Key of the pseudonyms that replace credentials and user names (`APITAP_PSEUDONYM_KEY`).
    /// At least 16 bytes, the same on every sensor whose identities should correlate. Empty:
    /// identities are not extracted.
    pub pseudonym_key: Secret,
    /// Key signing webhook alert deliveries (`APITAP_WEBHOOK_SECRET`). Empty: unsigned.
    pub webhook_secret: Secret,
}

/// One bad value: where it is and why it is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The `[section]` without brackets, empty for the top level.
    pub section: String,
    pub key: String,
    /// The value as written (secrets redacted), or empty when the key itself is the problem.
    pub value: String,
    /// What is wrong and what to do.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut place = Vec::with_capacity(2);
        if !self.section.is_empty() {
            place.push(format!("[{}]", self.section));
        }
        if !self.key.is_empty() {
            place.push(self.key.clone());
        }
        f.write_str(&place.join(" "))?;
        if !self.value.is_empty() {
            write!(f, " = {}", self.value)?;
        }
        if !place.is_empty() || !self.value.is_empty() {
            f.write_str(": ")?;
        }
        f.write_str(&self.reason)
    }
}

/// Why a configuration file was refused. Every message starts with the file name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {reason}", file.display())]
    Read { file: PathBuf, reason: String },
    /// The file is not TOML, or names an unknown key, or a value has the wrong type.
    #[error("{}:{line}:{column}: {problem}", file.display())]
    Parse {
        file: PathBuf,
        line: usize,
        column: usize,
        problem: Box<Problem>,
    },
    /// Values are out of range or inconsistent; all of them are listed.
    #[error("{}", list(file, problems))]
    Invalid {
        file: PathBuf,
        problems: Vec<Problem>,
    },
}

fn list(file: &Path, problems: &[Problem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {p}", file.display()))
        .collect();
    lines.join("\n")
}

impl Config {
    /// Reads, parses and validates a file, with secrets overridden from `env` (pass
    /// `|k| std::env::var(k).ok()` for the process environment).
    pub fn load(path: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            file: path.to_owned(),
            reason: e.to_string(),
        })?;
        let mut cfg = Config::parse(&text, path)?;
        cfg.apply_env(env);
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// The defaults with secrets from `env`, validated (`apitap run` without `--config`).
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut cfg = Config::default();
        cfg.apply_env(env);
        cfg.validate(Path::new("(defaults)"))?;
        Ok(cfg)
    }

    /// Parses TOML text without validating ranges; `file` only names the source in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| parse_error(text, file, &e))
    }

    /// Replaces secrets by the environment variables that are set and not empty.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) {
        let get = |k: &str| env(k).filter(|v| !v.is_empty()).map(Secret);
        if let Some(v) = get(ENV_PSEUDONYM_KEY) {
            self.secrets.pseudonym_key = v;
        }
        if let Some(v) = get(ENV_WEBHOOK_SECRET) {
            self.secrets.webhook_secret = v;
        }
    }

    /// Checks every value; lists all that are bad.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let problems = validate::check(self);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                file: file.to_owned(),
                problems,
            })
        }
    }

    /// The settings of one packet worker's engine.
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            decode: self.decode,
            flow: self.flow.clone(),
            stream: self.stream.clone(),
            http: self.http.clone(),
        }
    }

    /// The alert sinks to start: `[alert]` with `[secrets] webhook_secret` (file or
    /// environment) as the signing key of every webhook.
    ///
    /// The key lives only in [`Secrets`] while the configuration is held, printed or compared;
    /// `[alert] webhook.secret` is refused by validation for that reason. The value returned
    /// here carries it in plain text for the sinks: hand it to
    /// [`crate::alert::AlertPipeline::new`] and never print it.
    pub fn alert_sinks(&self) -> SinksConfig {
        let mut sinks = self.alert.clone();
        let key = &self.secrets.webhook_secret;
        if !key.is_empty() {
            for w in &mut sinks.webhook {
                w.secret = Some(key.expose().to_owned());
            }
        }
        sinks
    }

    /// Takes from `new` the values of [`LIVE_KEYS`], which a running daemon can apply.
    /// Returns the changed keys that were taken and those that need a restart (still at their
    /// running values here), each sorted.
    pub fn apply_live(&mut self, new: &Config) -> (Vec<String>, Vec<String>) {
        let changed = self.changed_keys(new);
        self.daemon.log_level = new.daemon.log_level;
        self.output.flush_interval_ms = new.output.flush_interval_ms;
        self.metrics.max_route_series = new.metrics.max_route_series;
        self.metrics.route_refresh_secs = new.metrics.route_refresh_secs;
        self.detect.spec = new.detect.spec.clone();
        changed
            .into_iter()
            .partition(|k| LIVE_KEYS.contains(&k.as_str()))
    }

    /// Every `section.key` whose value differs between `self` and `new`, sorted.
    pub fn changed_keys(&self, new: &Config) -> Vec<String> {
        let (Ok(a), Ok(b)) = (toml::Value::try_from(self), toml::Value::try_from(new)) else {
            // Serializing plain structs cannot fail; if it ever did, claim everything changed
            // rather than nothing.
            return vec!["*".into()];
        };
        let mut out = Vec::new();
        let (Some(a), Some(b)) = (a.as_table(), b.as_table()) else {
            return vec!["*".into()];
        };
        for (section, av) in a {
            let bv = b.get(section);
            match (av.as_table(), bv.and_then(|v| v.as_table())) {
                (Some(at), Some(bt)) => {
                    // Keys of both sides: an optional table (`[alert] file`) that is unset is
                    // absent from its side.
                    let keys: std::collections::BTreeSet<&String> =
                        at.keys().chain(bt.keys()).collect();
                    for key in keys {
                        if at.get(key) != bt.get(key) {
                            out.push(format!("{section}.{key}"));
                        }
                    }
                }
                _ if bv != Some(av) => out.push(section.clone()),
                _ => {}
            }
        }
        out.sort();
        out
    }
}

/// Turns a TOML error into one naming the line, column, `[section] key` and reason.
fn parse_error(text: &str, file: &Path, e: &toml::de::Error) -> ConfigError {
    let at = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
    let before = text.get(..at).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before
        .get(line_start..)
        .map(|s| s.chars().count())
        .unwrap_or(0)
        + 1;
    // The section is the last table header above the error, `[x]` or `[[x]]` (an entry of an
    // array of tables such as `[[alert.webhook]]`).
    let section = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_start_matches('['))
        .and_then(|l| l.get(..l.find(']')?))
        .unwrap_or("")
        .trim()
        .to_owned();
    // The key is whatever precedes `=` on the error's line.
    let line_text = text
        .get(line_start..)
        .and_then(|s| s.lines().next())
        .unwrap_or("");
    let key = match line_text.split_once('=') {
        Some((k, _)) if !line_text.trim_start().starts_with('[') => k.trim().to_owned(),
        _ => String::new(),
    };
    let reason = e.message().trim().replace('\n', " ");
    ConfigError::Parse {
        file: file.to_owned(),
        line,
        column,
        problem: Box::new(Problem {
            section,
            key,
            value: String::new(),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests;
