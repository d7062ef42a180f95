//! `recon_scan`: one client probing many distinct nonexistent paths.
//!
//! Per client (pseudonym, else address) the detector keeps the distinct request paths (query
//! string excluded) answered 404 in a sliding window of capture time; 400, 405 and 501 count
//! too on routes the model does not know (fewer than `unknown_route_max_calls` learned calls),
//! since scanners probing a real route with the wrong method get those. Paths matching the
//! known scanner list (`/.env`, `/.git/config`, `/wp-login.php`, ...) weigh
//! `scanner_path_weight` each. The client alerts when the weighted count reaches
//! `min_score`; every further probe in the window is a finding (the lifecycle folds them).
//! An ordinary user's occasional 404 (a stale bookmark, a deleted object) stays far below.
//!
//! Invariants: per-client state is at most `max_paths_per_client` path hashes and 10 clipped
//! sample paths, in a table of at most `max_clients`; the scanner list is compiled once.

use super::{client_hash, clip, key_hash, Inserted, RecentSet, Table};
use crate::alert::{AlertKind, Severity};
use crate::detect::config::Problems;
use crate::detect::{Context, Detector, Finding};
use aho_corasick::AhoCorasick;
use serde::{Deserialize, Serialize};

/// Sample paths kept per client for the evidence, each clipped to [`SAMPLE_PATH_BYTES`].
const SAMPLE_PATHS: usize = 10;
const SAMPLE_PATH_BYTES: usize = 80;

/// Settings of `recon_scan` (`[detect.behaviour.recon]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconConfig {
    /// Run the detector.
    pub enabled: bool,
    /// Sliding window, in seconds of capture time, over which distinct paths are counted.
    pub window_secs: u64,
    /// Weighted distinct not-found paths in the window that alert.
    pub min_score: u64,
    /// Weight of a path on the scanner list (an ordinary path weighs 1).
    pub scanner_path_weight: u64,
    /// Path fragments that only scanners ask for, matched case-insensitively anywhere in the
    /// path.
    pub scanner_paths: Vec<String>,
    /// A route with fewer learned calls than this is unknown: its 400/405/501 answers count.
    pub unknown_route_max_calls: u64,
    /// Clients tracked at once (`clients_turned_away` beyond).
    pub max_clients: usize,
    /// Distinct paths tracked per client; more are counted (`paths_over_cap`), not kept.
    pub max_paths_per_client: usize,
}

impl Default for ReconConfig {
    fn default() -> Self {
        ReconConfig {
            enabled: true,
            window_secs: 300,
            min_score: 20,
            scanner_path_weight: 4,
            scanner_paths: [
                "/.env",
                "/.git/",
                "/.svn/",
                "/.hg/",
                "/.ds_store",
                "/.aws/",
                "/.ssh/",
                "/.htaccess",
                "/.htpasswd",
                "/wp-login.php",
                "/wp-admin",
                "/wp-content",
                "/wp-includes",
                "/xmlrpc.php",
                "/phpmyadmin",
                "/pma/",
                "/phpinfo",
                "/actuator",
                "/server-status",
                "/cgi-bin/",
                "/etc/passwd",
                "/web.config",
                "/config.php",
                "/.well-known/security.txt.bak",
                "/console",
                "/solr/",
                "/jmx-console",
                "/manager/html",
                "/boaform",
                "/vendor/phpunit",
            ]
            .map(String::from)
            .to_vec(),
            unknown_route_max_calls: 10,
            max_clients: 50_000,
            max_paths_per_client: 128,
        }
    }
}

impl ReconConfig {
    pub(crate) fn check(&self, p: &mut Problems) {
        let k = |s: &str| format!("behaviour.recon.{s}");
        p.range(&k("window_secs"), self.window_secs, 1, 86_400);
        p.range(&k("min_score"), self.min_score, 2, 100_000);
        p.range(&k("scanner_path_weight"), self.scanner_path_weight, 1, 1000);
        p.range(&k("max_clients"), self.max_clients, 1, 100_000_000);
        // A client holding every tracked path must be able to reach the score.
        p.range(
            &k("max_paths_per_client"),
            self.max_paths_per_client as u64,
            self.min_score.max(2),
            100_000,
        );
        if self.scanner_paths.iter().any(String::is_empty) {
            p.fail(
                &k("scanner_paths"),
                "[\"\"]",
                "an empty pattern matches every path",
            );
        }
    }
}

/// What `recon_scan` did and turned away.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReconCounters {
    /// Not-found answers counted.
    pub not_found: u64,
    /// Of those, on the scanner list.
    pub scanner_paths: u64,
    pub findings: u64,
    pub clients_turned_away: u64,
    /// Distinct paths not kept because a client held `max_paths_per_client`.
    pub paths_over_cap: u64,
}

/// One client's probes; the flag marks scanner-list paths.
#[derive(Debug, Default)]
struct Probes {
    paths: RecentSet,
    sample: Vec<String>,
}

/// The `recon_scan` detector; see the module documentation.
pub struct Recon {
    cfg: ReconConfig,
    scanner: Option<AhoCorasick>,
    clients: Table<u64, Probes>,
    counters: ReconCounters,
}

impl Recon {
    /// Compiles the scanner list; a list the matcher cannot build is a configuration error.
    pub fn new(cfg: &ReconConfig) -> Result<Recon, String> {
        let scanner = if cfg.scanner_paths.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build(&cfg.scanner_paths)
                    .map_err(|e| format!("[detect.behaviour.recon] scanner_paths: {e}"))?,
            )
        };
        Ok(Recon {
            cfg: cfg.clone(),
            scanner,
            clients: Table::default(),
            counters: ReconCounters::default(),
        })
    }

    pub fn counters(&self) -> ReconCounters {
        let mut c = self.counters.clone();
        c.clients_turned_away = self.clients.turned_away();
        c
    }

    /// Whether this answer is a miss worth counting.
    fn is_miss(&self, cx: &Context<'_>) -> bool {
        match cx.status() {
            404 => true,
            400 | 405 | 501 => cx
                .profile
                .is_none_or(|p| p.calls < self.cfg.unknown_route_max_calls),
            _ => false,
        }
    }
}

/// The request target without query string or fragment.
fn path_of(uri: &str) -> &str {
    let end = uri.find(['?', '#']).unwrap_or(uri.len());
    uri.get(..end).unwrap_or(uri)
}

impl Detector for Recon {
    fn name(&self) -> &'static str {
        "recon_scan"
    }

    fn counter_values(&self) -> serde_json::Value {
        serde_json::to_value(self.counters()).unwrap_or_default()
    }

    fn observe(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        if !self.cfg.enabled || !self.is_miss(cx) {
            return;
        }
        self.counters.not_found = self.counters.not_found.saturating_add(1);
        let path = path_of(&cx.req.uri);
        let scanner = self
            .scanner
            .as_ref()
            .is_some_and(|m| m.is_match(path.as_bytes()));
        if scanner {
            self.counters.scanner_paths = self.counters.scanner_paths.saturating_add(1);
        }
        let cfg = &self.cfg;
        let Some(probes) =
            self.clients
                .entry(client_hash(cx), cx.ts, cfg.max_clients, cfg.window_secs)
        else {
            return;
        };
        probes.paths.expire(cx.ts, cfg.window_secs);
        if probes.paths.is_empty() {
            probes.sample.clear();
        }
        let path_key = key_hash(&[cx.key.host.as_bytes(), path.as_bytes()]);
        match probes
            .paths
            .insert(path_key, cx.ts, scanner, cfg.max_paths_per_client)
        {
            Inserted::New if probes.sample.len() < SAMPLE_PATHS => {
                probes.sample.push(clip(path, SAMPLE_PATH_BYTES));
            }
            Inserted::Full => {
                self.counters.paths_over_cap = self.counters.paths_over_cap.saturating_add(1);
            }
            _ => {}
        }
        let distinct = probes.paths.len() as u64;
        let known_scanner = probes.paths.flagged() as u64;
        let score = (distinct - known_scanner)
            .saturating_add(known_scanner.saturating_mul(cfg.scanner_path_weight));
        if score < cfg.min_score {
            return;
        }
        let who = cx.client_key();
        let summary = format!(
            "{who} got not-found answers for {distinct} distinct paths in {} s, {known_scanner} of them on the scanner list (score {score}, threshold {})",
            cfg.window_secs, cfg.min_score
        );
        let sample = probes.sample.clone();
        self.counters.findings = self.counters.findings.saturating_add(1);
        out.push(
            Finding::new(AlertKind::ReconScan, cx)
                .client_scope()
                .severity(if known_scanner > 0 {
                    Severity::High
                } else {
                    Severity::Medium
                })
                .confidence(if known_scanner > 0 { 0.95 } else { 0.8 })
                .summary(summary)
                .with("distinct_paths", distinct)
                .with("scanner_paths", known_scanner)
                .with("score", score)
                .with("threshold", cfg.min_score)
                .with("scanner_path_weight", cfg.scanner_path_weight)
                .with("window_secs", cfg.window_secs)
                .with("sample_paths", sample),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_drop_query_and_fragment() {
        assert_eq!(path_of("/a/b?x=1#f"), "/a/b");
        assert_eq!(path_of("/a#f?x"), "/a");
        assert_eq!(path_of("/a"), "/a");
    }

    #[test]
    fn empty_scanner_patterns_and_unreachable_scores_are_refused() {
        let mut c = ReconConfig::default();
        c.scanner_paths.push(String::new());
        c.max_paths_per_client = 5;
        let mut p = Problems::default();
        c.check(&mut p);
        let keys: Vec<&str> = p.0.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "behaviour.recon.max_paths_per_client",
                "behaviour.recon.scanner_paths"
            ]
        );
    }
}
