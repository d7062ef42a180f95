//! Settings of the alert sinks, as they appear in the configuration file.
//!
//! Invariant: these structs are the documentation. Every field has a doc comment and a default,
//! unknown keys are refused, and [`SinksConfig::validate`] turns every out-of-range value into a
//! `key: value: reason` message before any sink starts, so a running pipeline never meets a
//! setting it cannot honour. Keys in messages are relative to the sinks table (`webhook[0].url`);
//! the config loader prefixes its section name.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// All alert sinks. Any combination may be enabled at once; each gets every alert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinksConfig {
    /// Alerts each sink holds in memory between the detector and the sink's task. When a sink's
    /// queue is full the newest alert is dropped for that sink and counted in `queue_drops`
    /// (the detector never waits).
    pub max_queued_alerts: usize,
    /// On shutdown, seconds network sinks get to deliver what is still spooled. What is left
    /// stays in the spool and is sent on the next start.
    pub shutdown_grace_secs: u64,
    /// Directory under which each network sink keeps its spool, in `<type>-<name>/`.
    pub spool_dir: PathBuf,
    /// Limits and durability of the spools (the same for every network sink).
    pub spool: SpoolConfig,
    /// Write alerts as JSON Lines to a file, with size-based rotation.
    pub file: Option<FileSinkConfig>,
    /// Write alerts as JSON Lines to standard output.
    pub stdout: bool,
    /// Generic HTTPS webhooks receiving JSON array batches, signed with HMAC-SHA256.
    pub webhook: Vec<WebhookSinkConfig>,
    /// Prometheus Alertmanager instances, through its v2 API.
    pub alertmanager: Vec<AlertmanagerSinkConfig>,
}

impl Default for SinksConfig {
    fn default() -> Self {
        SinksConfig {
            max_queued_alerts: 4096,
            shutdown_grace_secs: 5,
            spool_dir: PathBuf::from("/var/lib/apitap/spool"),
            spool: SpoolConfig::default(),
            file: None,
            stdout: false,
            webhook: Vec::new(),
            alertmanager: Vec::new(),
        }
    }
}

/// When the spool asks the kernel to put appended records on stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// After every burst of appended alerts, before delivery is attempted: nothing accepted is
    /// lost to a power cut. Costs one fsync per burst, which alert rates easily afford.
    Always,
    /// At most every `fsync_interval_secs`: a power cut may lose that much.
    Interval,
    /// Leave it to the kernel's writeback: survives a crash of apitap, not of the machine.
    Never,
}

/// The durable spool in front of each network sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolConfig {
    /// Bytes of spool files on disk per sink. When an append would pass it, the oldest
    /// undelivered alerts are dropped a whole segment at a time and counted in `spool_drops`.
    pub max_spool_bytes: u64,
    /// Bytes per spool segment file. Smaller segments drop less at a time when the spool is
    /// full; must be at most half of `max_spool_bytes`.
    pub segment_bytes: u64,
    /// Bytes of one encoded alert. Larger alerts are refused and counted in `oversize_drops`;
    /// also the bound on what the spool reader allocates for one record.
    pub max_record_bytes: u64,
    /// When appended records are fsynced.
    pub fsync: FsyncPolicy,
    /// Seconds between fsyncs with `fsync = "interval"`.
    pub fsync_interval_secs: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            max_spool_bytes: 256 * 1024 * 1024,
            segment_bytes: 8 * 1024 * 1024,
            max_record_bytes: 1024 * 1024,
            fsync: FsyncPolicy::Always,
            fsync_interval_secs: 1,
        }
    }
}

/// JSON Lines file with size-based rotation (`alerts.jsonl`, `alerts.jsonl.1`, …).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileSinkConfig {
    /// File to append to; created if missing. Rotated files get `.1`, `.2`, … (`.1` newest).
    pub path: PathBuf,
    /// Bytes after which the file is rotated. A single alert line longer than this gets a
    /// file of its own rather than being split or dropped.
    pub max_file_bytes: u64,
    /// Files kept, the active one included; the oldest rotated file is deleted beyond this.
    pub max_files: u32,
}

impl Default for FileSinkConfig {
    fn default() -> Self {
        FileSinkConfig {
            path: PathBuf::new(),
            max_file_bytes: 100 * 1024 * 1024,
            max_files: 5,
        }
    }
}

/// A generic webhook: `POST` of a JSON array of alerts.
///
/// With a `secret`, each request carries `X-Apitap-Timestamp: <unix seconds>` and
/// `X-Apitap-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`; receivers
/// should recompute it over the raw body and refuse stale timestamps to stop replays.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// Short name for metrics labels and the spool directory: `[a-z0-9_-]`, 1 to 64 characters.
    pub name: String,
    /// `http://` or `https://` URL receiving the batches.
    pub url: String,
    /// HMAC-SHA256 key for `X-Apitap-Signature`. Without it requests are unsigned.
    pub secret: Option<String>,
    /// PEM file of extra CA certificates trusted for this URL, besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Seconds one request may take, connection included, before it counts as failed.
    pub timeout_secs: u64,
    /// Seconds to establish the TCP and TLS connection.
    pub connect_timeout_secs: u64,
    /// Alerts per request at most.
    pub max_batch_alerts: usize,
    /// Body bytes per request at most (a single larger alert is still sent alone).
    pub max_batch_bytes: u64,
    /// Seconds a first alert waits for others to share its request.
    pub batch_timeout_secs: f64,
    /// Seconds before the first retry; doubled after each further failure, with jitter.
    pub retry_initial_backoff_secs: f64,
    /// Upper bound of the retry delay in seconds. Retries go on as long as alerts are spooled.
    pub retry_max_backoff_secs: f64,
}

impl Default for WebhookSinkConfig {
    fn default() -> Self {
        let d = DeliveryDefaults::DEFAULT;
        WebhookSinkConfig {
            name: String::new(),
            url: String::new(),
            secret: None,
            ca_file: None,
            timeout_secs: d.timeout_secs,
            connect_timeout_secs: d.connect_timeout_secs,
            max_batch_alerts: d.max_batch_alerts,
            max_batch_bytes: d.max_batch_bytes,
            batch_timeout_secs: d.batch_timeout_secs,
            retry_initial_backoff_secs: d.retry_initial_backoff_secs,
            retry_max_backoff_secs: d.retry_max_backoff_secs,
        }
    }
}

/// Prometheus Alertmanager, through `POST <url>/api/v2/alerts`.
///
/// Labels: `alertname` (`apitap_<kind>`), `kind`, `severity`, `route`, `owasp` (when the kind
/// has one), `host`, `method` and `alert_id`. The id label keeps alerts about different clients
/// of one route apart and makes re-sent alerts land on the same Alertmanager alert.
/// Annotations: `summary` and `evidence` (compact JSON). `startsAt` is `first_seen`, `endsAt` is
/// `last_seen + resolve_timeout_secs`, so alerts resolve by themselves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertmanagerSinkConfig {
    /// Short name for metrics labels and the spool directory: `[a-z0-9_-]`, 1 to 64 characters.
    pub name: String,
    /// Base URL of Alertmanager, e.g. `http://127.0.0.1:9093` (no `/api/v2` suffix).
    pub url: String,
    /// Seconds after `last_seen` at which Alertmanager considers the alert resolved.
    pub resolve_timeout_secs: u64,
    /// `generatorURL` of each alert; `{id}` is replaced by the alert id. Omitted when unset.
    pub generator_url: Option<String>,
    /// PEM file of extra CA certificates trusted for this URL, besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Seconds one request may take, connection included, before it counts as failed.
    pub timeout_secs: u64,
    /// Seconds to establish the TCP and TLS connection.
    pub connect_timeout_secs: u64,
    /// Alerts per request at most.
    pub max_batch_alerts: usize,
    /// Body bytes per request at most (a single larger alert is still sent alone).
    pub max_batch_bytes: u64,
    /// Seconds a first alert waits for others to share its request.
    pub batch_timeout_secs: f64,
    /// Seconds before the first retry; doubled after each further failure, with jitter.
    pub retry_initial_backoff_secs: f64,
    /// Upper bound of the retry delay in seconds. Retries go on as long as alerts are spooled.
    pub retry_max_backoff_secs: f64,
}

impl Default for AlertmanagerSinkConfig {
    fn default() -> Self {
        let d = DeliveryDefaults::DEFAULT;
        AlertmanagerSinkConfig {
            name: String::new(),
            url: String::new(),
            resolve_timeout_secs: 300,
            generator_url: None,
            ca_file: None,
            timeout_secs: d.timeout_secs,
            connect_timeout_secs: d.connect_timeout_secs,
            max_batch_alerts: d.max_batch_alerts,
            max_batch_bytes: d.max_batch_bytes,
            batch_timeout_secs: d.batch_timeout_secs,
            retry_initial_backoff_secs: d.retry_initial_backoff_secs,
            retry_max_backoff_secs: d.retry_max_backoff_secs,
        }
    }
}

/// Delivery settings shared by the network sinks, gathered for the sink code.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryDefaults {
    pub timeout_secs: u64,
    pub connect_timeout_secs: u64,
    pub max_batch_alerts: usize,
    pub max_batch_bytes: u64,
    pub batch_timeout_secs: f64,
    pub retry_initial_backoff_secs: f64,
    pub retry_max_backoff_secs: f64,
}

impl DeliveryDefaults {
    const DEFAULT: DeliveryDefaults = DeliveryDefaults {
        timeout_secs: 10,
        connect_timeout_secs: 5,
        max_batch_alerts: 100,
        max_batch_bytes: 1024 * 1024,
        batch_timeout_secs: 1.0,
        retry_initial_backoff_secs: 0.5,
        retry_max_backoff_secs: 60.0,
    };
}

impl WebhookSinkConfig {
    pub(crate) fn delivery(&self) -> DeliveryDefaults {
        DeliveryDefaults {
            timeout_secs: self.timeout_secs,
            connect_timeout_secs: self.connect_timeout_secs,
            max_batch_alerts: self.max_batch_alerts,
            max_batch_bytes: self.max_batch_bytes,
            batch_timeout_secs: self.batch_timeout_secs,
            retry_initial_backoff_secs: self.retry_initial_backoff_secs,
            retry_max_backoff_secs: self.retry_max_backoff_secs,
        }
    }
}

impl AlertmanagerSinkConfig {
    pub(crate) fn delivery(&self) -> DeliveryDefaults {
        DeliveryDefaults {
            timeout_secs: self.timeout_secs,
            connect_timeout_secs: self.connect_timeout_secs,
            max_batch_alerts: self.max_batch_alerts,
            max_batch_bytes: self.max_batch_bytes,
            batch_timeout_secs: self.batch_timeout_secs,
            retry_initial_backoff_secs: self.retry_initial_backoff_secs,
            retry_max_backoff_secs: self.retry_max_backoff_secs,
        }
    }
}

/// One refused setting: `key: value: reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub value: String,
    pub reason: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.key, self.value, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Collects errors so the operator sees every bad setting at once, not one per restart.
struct Checker(Vec<ConfigError>);

impl Checker {
    fn check(
        &mut self,
        ok: bool,
        key: impl Into<String>,
        value: impl fmt::Debug,
        reason: &'static str,
    ) {
        if !ok {
            self.0.push(ConfigError {
                key: key.into(),
                value: format!("{value:?}"),
                reason,
            });
        }
    }

    fn name(&mut self, key: String, name: &str, seen: &mut HashSet<String>) {
        let well_formed = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        self.check(
            well_formed,
            key.clone(),
            name,
            "must be 1 to 64 characters of a-z, 0-9, '_' or '-'",
        );
        self.check(
            seen.insert(name.to_string()),
            key,
            name,
            "must be unique among sinks of the same type",
        );
    }

    fn url(&mut self, key: String, url: &str) {
        let ok = reqwest::Url::parse(url)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
        self.check(
            ok,
            key,
            url,
            "must be an http:// or https:// URL with a host",
        );
    }

    fn delivery(&mut self, prefix: &str, d: &DeliveryDefaults) {
        self.check(
            (1..=3600).contains(&d.timeout_secs),
            format!("{prefix}.timeout_secs"),
            d.timeout_secs,
            "must be between 1 and 3600",
        );
        self.check(
            (1..=d.timeout_secs.max(1)).contains(&d.connect_timeout_secs),
            format!("{prefix}.connect_timeout_secs"),
            d.connect_timeout_secs,
            "must be between 1 and timeout_secs",
        );
        self.check(
            (1..=100_000).contains(&d.max_batch_alerts),
            format!("{prefix}.max_batch_alerts"),
            d.max_batch_alerts,
            "must be between 1 and 100000",
        );
        self.check(
            (1024..=64 * 1024 * 1024).contains(&d.max_batch_bytes),
            format!("{prefix}.max_batch_bytes"),
            d.max_batch_bytes,
            "must be between 1024 and 67108864",
        );
        self.check(
            d.batch_timeout_secs.is_finite() && (0.0..=300.0).contains(&d.batch_timeout_secs),
            format!("{prefix}.batch_timeout_secs"),
            d.batch_timeout_secs,
            "must be between 0 and 300",
        );
        self.check(
            d.retry_initial_backoff_secs.is_finite()
                && (0.001..=3600.0).contains(&d.retry_initial_backoff_secs),
            format!("{prefix}.retry_initial_backoff_secs"),
            d.retry_initial_backoff_secs,
            "must be between 0.001 and 3600",
        );
        self.check(
            d.retry_max_backoff_secs.is_finite()
                && d.retry_max_backoff_secs >= d.retry_initial_backoff_secs
                && d.retry_max_backoff_secs <= 86_400.0,
            format!("{prefix}.retry_max_backoff_secs"),
            d.retry_max_backoff_secs,
            "must be between retry_initial_backoff_secs and 86400",
        );
    }
}

impl SinksConfig {
    /// Every setting that cannot be honoured, as `key: value: reason`.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut c = Checker(Vec::new());
        c.check(
            (1..=1_000_000).contains(&self.max_queued_alerts),
            "max_queued_alerts",
            self.max_queued_alerts,
            "must be between 1 and 1000000",
        );
        c.check(
            self.shutdown_grace_secs <= 600,
            "shutdown_grace_secs",
            self.shutdown_grace_secs,
            "must be at most 600",
        );
        let networked = !self.webhook.is_empty() || !self.alertmanager.is_empty();
        if networked {
            c.check(
                !self.spool_dir.as_os_str().is_empty(),
                "spool_dir",
                &self.spool_dir,
                "must be set when a webhook or alertmanager sink is configured",
            );
        }
        let s = &self.spool;
        c.check(
            s.max_spool_bytes >= 64 * 1024,
            "spool.max_spool_bytes",
            s.max_spool_bytes,
            "must be at least 65536",
        );
        c.check(
            s.segment_bytes >= 4096 && s.segment_bytes <= s.max_spool_bytes / 2,
            "spool.segment_bytes",
            s.segment_bytes,
            "must be at least 4096 and at most half of max_spool_bytes",
        );
        c.check(
            s.max_record_bytes >= 1024 && s.max_record_bytes <= s.segment_bytes,
            "spool.max_record_bytes",
            s.max_record_bytes,
            "must be at least 1024 and at most segment_bytes",
        );
        c.check(
            s.max_record_bytes <= u64::from(u32::MAX) - 64,
            "spool.max_record_bytes",
            s.max_record_bytes,
            "must fit a 32-bit record length",
        );
        c.check(
            (1..=3600).contains(&s.fsync_interval_secs),
            "spool.fsync_interval_secs",
            s.fsync_interval_secs,
            "must be between 1 and 3600",
        );
        if let Some(f) = &self.file {
            c.check(
                !f.path.as_os_str().is_empty(),
                "file.path",
                &f.path,
                "must be set",
            );
            c.check(
                f.max_file_bytes >= 1024,
                "file.max_file_bytes",
                f.max_file_bytes,
                "must be at least 1024",
            );
            c.check(
                (1..=1000).contains(&f.max_files),
                "file.max_files",
                f.max_files,
                "must be between 1 and 1000",
            );
        }
        let mut names = HashSet::new();
        for (i, w) in self.webhook.iter().enumerate() {
            let p = format!("webhook[{i}]");
            c.name(format!("{p}.name"), &w.name, &mut names);
            c.url(format!("{p}.url"), &w.url);
            if let Some(secret) = &w.secret {
                // The secret itself is never echoed into an error message.
                c.check(
                    !secret.is_empty(),
                    format!("{p}.secret"),
                    "<redacted>",
                    "must not be empty; leave it out for unsigned requests",
                );
            }
            c.delivery(&p, &w.delivery());
        }
        let mut names = HashSet::new();
        for (i, a) in self.alertmanager.iter().enumerate() {
            let p = format!("alertmanager[{i}]");
            c.name(format!("{p}.name"), &a.name, &mut names);
            c.url(format!("{p}.url"), &a.url);
            c.check(
                (1..=30 * 86_400).contains(&a.resolve_timeout_secs),
                format!("{p}.resolve_timeout_secs"),
                a.resolve_timeout_secs,
                "must be between 1 and 2592000",
            );
            if let Some(g) = &a.generator_url {
                c.url(format!("{p}.generator_url"), &g.replace("{id}", "0"));
            }
            c.delivery(&p, &a.delivery());
        }
        if c.0.is_empty() {
            Ok(())
        } else {
            Err(c.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(SinksConfig::default().validate(), Ok(()));
        let cfg = SinksConfig {
            file: Some(FileSinkConfig {
                path: "/tmp/a.jsonl".into(),
                ..Default::default()
            }),
            webhook: vec![WebhookSinkConfig {
                name: "siem".into(),
                url: "https://siem.example/hook".into(),
                ..Default::default()
            }],
            alertmanager: vec![AlertmanagerSinkConfig {
                name: "am".into(),
                url: "http://127.0.0.1:9093".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(cfg.validate(), Ok(()));
    }

    /// One bad setting at a time; the message must name the key, show the value and say why.
    #[test]
    fn each_bad_setting_is_named() {
        let base = || SinksConfig {
            webhook: vec![WebhookSinkConfig {
                name: "siem".into(),
                url: "https://siem.example/hook".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        type Edit = fn(&mut SinksConfig);
        let cases: &[(Edit, &str)] = &[
            (|c| c.max_queued_alerts = 0, "max_queued_alerts: 0: must be between 1 and 1000000"),
            (
                |c| c.spool.segment_bytes = c.spool.max_spool_bytes,
                "spool.segment_bytes: 268435456: must be at least 4096 and at most half of max_spool_bytes",
            ),
            (
                |c| c.webhook[0].url = "ftp://x".into(),
                "webhook[0].url: \"ftp://x\": must be an http:// or https:// URL with a host",
            ),
            (
                |c| c.webhook[0].name = "Bad Name".into(),
                "webhook[0].name: \"Bad Name\": must be 1 to 64 characters of a-z, 0-9, '_' or '-'",
            ),
            (
                |c| c.webhook[0].batch_timeout_secs = f64::NAN,
                "webhook[0].batch_timeout_secs: NaN: must be between 0 and 300",
            ),
            (
                |c| c.webhook[0].secret = Some(String::new()),
                "webhook[0].secret: \"<redacted>\": must not be empty; leave it out for unsigned requests",
            ),
            (
                |c| c.webhook.push(c.webhook[0].clone()),
                "webhook[1].name: \"siem\": must be unique among sinks of the same type",
            ),
            (
                |c| {
                    c.file = Some(FileSinkConfig {
                        path: "/tmp/x".into(),
                        max_files: 0,
                        ..Default::default()
                    })
                },
                "file.max_files: 0: must be between 1 and 1000",
            ),
        ];
        for (edit, expected) in cases {
            let mut cfg = base();
            edit(&mut cfg);
            let errors = cfg.validate().expect_err(expected);
            let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            assert_eq!(messages, vec![expected.to_string()]);
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_str::<SinksConfig>(r#"{"stdout": true, "stdout_color": true}"#)
            .unwrap_err();
        assert!(err.to_string().contains("stdout_color"), "{err}");
        let cfg: SinksConfig =
            serde_json::from_str(r#"{"webhook": [{"name": "a", "url": "http://h/"}]}"#).unwrap();
        assert_eq!(cfg.webhook[0].timeout_secs, 10);
    }
}
