//! `apitap run` and `apitap config` as an operator uses them: the real binary, real signals,
//! real HTTP scrapes of `/metrics`.
//!
//! Each daemon listens on `127.0.0.1:0`; the test reads the chosen port from the start-up log.
//! Replays are made deterministic with `--hold`: the daemon drains, sets
//! `apitap_daemon_pipeline_drained 1`, and keeps serving until signalled. Tests that need root
//! (live capture on `lo`, switching user) print `skipped: needs root` and return otherwise.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_apitap");

fn bundled(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("captures")
        .join(name)
}

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("apitap-daemon-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Transactions `apitap flows` finds in a capture: what the daemon must count too.
fn flows_count(pcap: &Path) -> usize {
    let o = Command::new(BIN)
        .args(["flows", "-q"])
        .arg(pcap)
        .output()
        .expect("run apitap flows");
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stdout).lines().count()
}

/// A running `apitap run` with its stderr collected line by line.
struct Daemon {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// The thread collecting stderr: it ends at end of file, once the child has exited.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    fn start(args: &[&str]) -> Daemon {
        Daemon::start_with_env(args, &[])
    }

    fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut child = Command::new(BIN)
            .arg("run")
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn apitap run");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log lock").push(line);
            }
        });
        Daemon {
            child,
            log,
            reader: Some(reader),
        }
    }

    fn log_text(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    /// Waits until a log line contains `what`; returns that line.
    fn wait_log(&mut self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = self
                .log
                .lock()
                .expect("log lock")
                .iter()
                .find(|l| l.contains(what))
            {
                return l.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "apitap exited ({status}) before logging {what:?}:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {what:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The metrics port, from the start-up log line.
    fn port(&mut self) -> u16 {
        let line = self.wait_log("listen=");
        let addr = line.split("listen=").nth(1).expect("address").trim();
        addr.rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: sending a signal to our own child.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                // Every line the daemon wrote is in the log once the reader has seen the end
                // of the pipe (the daemon starts no processes that could hold it open).
                if let Some(r) = self.reader.take() {
                    let until = Instant::now() + Duration::from_secs(10);
                    while !r.is_finished() && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    assert!(r.is_finished(), "stderr still open after exit");
                    let _ = r.join();
                }
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("apitap did not exit:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One plain HTTP/1.1 GET; returns status and body.
fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics server");
    // The socket is bound (and logged) before the daemon loads its model and starts serving:
    // a loaded machine may take a while to answer the first request.
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read answer");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of one sample (`name` or `name{labels}`) in a scrape.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Scrapes until `series` has value `want`; returns that scrape. Fails after a minute (a
/// loaded machine replays slowly; a value that never comes is a failure, not a later puzzle).
fn wait_metric(port: u16, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = get(port, "/metrics");
        if sample(&body, series) == Some(want) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {want}; last scrape:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `apitap run --pcap PCAP --config CFG` with `extra` flags (`--hold`, `--realtime`).
fn replay(pcap: &Path, cfg: &Path, extra: &[&str]) -> Daemon {
    let mut args = vec![
        "--pcap",
        pcap.to_str().expect("path"),
        "--config",
        cfg.to_str().expect("path"),
    ];
    args.extend_from_slice(extra);
    Daemon::start(&args)
}

/// Writes `text` as `dir/apitap.toml`. Without a `[detect]` section of its own, the model
/// directory goes under `dir` too: the default, /var/lib/apitap/model, is the host's.
fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("apitap.toml");
    let mut text = text.to_owned();
    if !text.lines().any(|l| l.trim() == "[detect]") {
        text.push_str(&format!(
            "\n[detect]\nmodel_dir = {:?}\n",
            dir.join("model").display().to_string()
        ));
    }
    std::fs::write(&p, text).expect("write config");
    p
}

const LISTEN: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

#[test]
fn config_default_prints_the_shipped_file_and_check_judges_files() {
    let o = Command::new(BIN)
        .args(["config", "default"])
        .output()
        .expect("run");
    assert!(o.status.success());
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/apitap.toml"))
            .expect("deploy/apitap.toml");
    assert_eq!(String::from_utf8_lossy(&o.stdout), shipped);

    let dir = temp_dir("check");
    let good = write_config(&dir, &shipped);
    let o = Command::new(BIN)
        .args(["config", "check"])
        .arg(&good)
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[capture]\nsnaplen_bytes = 0\n").expect("write");
    let o = Command::new(BIN)
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("bad.toml: [capture] snaplen_bytes = 0: must be between 64 and 262144"),
        "{e}"
    );
    // The same file refuses to start the daemon, before anything is opened.
    let o = Command::new(BIN)
        .args(["run", "--pcap"])
        .arg(bundled("api-basic.pcap"))
        .arg("--config")
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("snaplen_bytes = 0"));
}

#[test]
fn flows_takes_its_engine_limits_from_the_config() {
    let dir = temp_dir("flows");
    let pcap = bundled("api-basic.pcap");
    // One flow at a time: every new connection evicts the previous one, so transactions still
    // come out, but the eviction counter in the summary shows the limit was applied.
    let cfg = write_config(&dir, "[flow]\nmax_flows = 1\n");
    let o = Command::new(BIN)
        .args(["flows"])
        .arg(&pcap)
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("flows_evicted_cap="));
}

#[test]
fn replay_drains_and_metrics_report_every_transaction() {
    let pcap = bundled("api-basic.pcap");
    let want = flows_count(&pcap);
    assert!(want > 100);
    let dir = temp_dir("replay");
    let cfg = write_config(&dir, &format!("{LISTEN}[daemon]\nworkers = 3\n"));
    let mut d = replay(&pcap, &cfg, &["--hold"]);
    let port = d.port();
    let scrape = wait_metric(port, "apitap_daemon_pipeline_drained", 1.0);
    assert_eq!(
        sample(&scrape, "apitap_daemon_pipeline_drained"),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        sample(&scrape, "apitap_http_transactions_total"),
        Some(want as f64)
    );
    assert_eq!(sample(&scrape, "apitap_daemon_workers"), Some(3.0));
    assert_eq!(
        sample(
            &scrape,
            "apitap_daemon_channel_drops_total{channel=\"packets\"}"
        ),
        Some(0.0),
        "a replay is lossless"
    );
    assert!(sample(&scrape, "apitap_capture_packets_total").unwrap_or(0.0) > 0.0);
    assert_eq!(get(port, "/healthz").0, 200);
    assert_eq!(
        get(port, "/readyz").0,
        503,
        "a drained replay is not capturing"
    );
    d.signal(libc::SIGINT);
    assert_eq!(d.wait_exit().code(), Some(0), "{}", d.log_text());
}

#[test]
fn replay_without_hold_exits_by_itself_and_logs_every_transaction() {
    let pcap = bundled("api-pipelined.pcap");
    let want = flows_count(&pcap);
    let dir = temp_dir("exit");
    let log = dir.join("tx.jsonl");
    let cfg = write_config(
        &dir,
        &format!(
            "[metrics]\nlisten = \"\"\n[output]\ntransaction_log = {:?}\n",
            log.display().to_string()
        ),
    );
    let mut d = replay(&pcap, &cfg, &[]);
    assert_eq!(d.wait_exit().code(), Some(0), "{}", d.log_text());
    let text = std::fs::read_to_string(&log).expect("transaction log");
    assert_eq!(text.lines().count(), want);
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("one JSON object per line");
    }
}

#[test]
fn sigterm_during_a_realtime_replay_drains_and_exits_zero() {
    let pcap = bundled("api-basic.pcap");
    let all = flows_count(&pcap);
    let dir = temp_dir("drain");
    let log = dir.join("tx.jsonl");
    let cfg = write_config(
        &dir,
        &format!(
            "{LISTEN}[output]\ntransaction_log = {:?}\n",
            log.display().to_string()
        ),
    );
    let mut d = replay(&pcap, &cfg, &["--realtime"]);
    let port = d.port();
    // The capture spans 7.5 s of packet time; stop it as soon as a transaction is through,
    // whatever the machine's load made of the start-up.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = get(port, "/metrics");
        if sample(&body, "apitap_http_transactions_total").unwrap_or(0.0) >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no transaction:\n{body}");
        std::thread::sleep(Duration::from_millis(20));
    }
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit().code(), Some(0), "{}", d.log_text());
    let text = std::fs::read_to_string(&log).expect("transaction log");
    let n = text.lines().count();
    assert!(
        n > 0 && n < all,
        "{n} of {all} transactions before the stop"
    );
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("flushed whole lines only");
    }
    let logs = d.log_text();
    assert!(logs.contains("Stopping: draining the pipeline."), "{logs}");
    assert!(logs.contains("Pipeline drained."), "{logs}");
}

#[test]
fn sighup_with_a_bad_file_keeps_running_on_the_old_config() {
    let pcap = bundled("api-basic.pcap");
    let dir = temp_dir("sighup");
    let cfg = write_config(&dir, LISTEN);
    let mut d = replay(&pcap, &cfg, &["--hold"]);
    let port = d.port();
    d.wait_log("Replay drained");

    std::fs::write(&cfg, format!("{LISTEN}[flow]\nmax_flows = 0\n")).expect("write");
    d.signal(libc::SIGHUP);
    let line = d.wait_log("Config reload failed; keeping the running config.");
    assert!(
        line.contains("[flow] max_flows = 0: must be between 1 and"),
        "{line}"
    );
    let scrape = wait_metric(
        port,
        "apitap_daemon_config_reloads_total{result=\"error\"}",
        1.0,
    );
    assert_eq!(
        sample(
            &scrape,
            "apitap_daemon_config_reloads_total{result=\"error\"}"
        ),
        Some(1.0)
    );
    assert!(
        d.child.try_wait().expect("try_wait").is_none(),
        "still running"
    );
    assert_eq!(get(port, "/healthz").0, 200);

    // A valid file: the live key applies, the other is reported as needing a restart.
    std::fs::write(
        &cfg,
        format!("{LISTEN}[daemon]\nlog_level = \"debug\"\n[flow]\nmax_flows = 5\n"),
    )
    .expect("write");
    d.signal(libc::SIGHUP);
    let applied = d.wait_log("Config reloaded.");
    assert!(applied.contains("daemon.log_level"), "{applied}");
    let restart = d.wait_log("need a restart");
    assert!(restart.contains("flow.max_flows"), "{restart}");
    let scrape = wait_metric(
        port,
        "apitap_daemon_config_reloads_total{result=\"ok\"}",
        1.0,
    );
    assert_eq!(
        sample(&scrape, "apitap_daemon_config_reloads_total{result=\"ok\"}"),
        Some(1.0)
    );

    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit().code(), Some(0), "{}", d.log_text());
}

#[test]
fn secrets_from_the_environment_never_reach_the_log() {
    let pcap = bundled("api-basic.pcap");
    let dir = temp_dir("secret");
    let cfg = write_config(
        &dir,
        "[metrics]\nlisten = \"\"\n[daemon]\nlog_level = \"trace\"\n",
    );
    let secret = "env-pseudonym-key-0123456789abcdef";
    let o = Command::new(BIN)
        .args(["run", "--pcap"])
        .arg(&pcap)
        .arg("--config")
        .arg(&cfg)
        .env("APITAP_PSEUDONYM_KEY", secret)
        .env("APITAP_WEBHOOK_SECRET", "hook-secret-value")
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !e.contains(secret) && !e.contains("hook-secret-value"),
        "{e}"
    );
    // A short key is refused by name, still without showing it.
    let o = Command::new(BIN)
        .args(["run", "--pcap"])
        .arg(&pcap)
        .env("APITAP_PSEUDONYM_KEY", "tiny-key")
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("[secrets] pseudonym_key = <secret of 8 bytes>"),
        "{e}"
    );
    assert!(!e.contains("tiny-key"), "{e}");
}

#[test]
fn root_switches_to_the_configured_user_after_opening_the_capture() {
    if !is_root() {
        println!("skipped: needs root");
        return;
    }
    let pcap = bundled("api-basic.pcap");
    let want = flows_count(&pcap);
    let dir = temp_dir("user");
    let cfg = write_config(&dir, &format!("{LISTEN}[daemon]\nuser = \"nobody\"\n"));
    // The model directory belongs to the daemon's user, as the deploy files arrange: detection
    // loads and saves it after the switch.
    let model = dir.join("model");
    std::fs::create_dir_all(&model).expect("model dir");
    let chown = Command::new("chown")
        .arg("nobody")
        .arg(&model)
        .status()
        .expect("run chown");
    assert!(chown.success());
    let mut d = replay(&pcap, &cfg, &["--hold"]);
    let port = d.port();
    let line = d.wait_log("Dropped privileges.");
    assert!(line.contains("user=nobody"), "{line}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.child.id())).expect("status");
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    assert!(
        !uid.split_whitespace().skip(1).any(|u| u == "0"),
        "still root: {uid}"
    );
    let scrape = wait_metric(port, "apitap_daemon_pipeline_drained", 1.0);
    assert_eq!(
        sample(&scrape, "apitap_http_transactions_total"),
        Some(want as f64)
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit().code(), Some(0), "{}", d.log_text());
    let saved = std::fs::metadata(model.join("model.json")).expect("model saved at shutdown");
    assert_ne!(
        std::os::unix::fs::MetadataExt::uid(&saved),
        0,
        "saved as the unprivileged user"
    );
}

/// `[alert]` with a rotating file, stdout, and a webhook at `port`, spooled under `dir`.
fn alert_config(dir: &Path, port: u16) -> String {
    format!(
        "{LISTEN}[alert]\nspool_dir = {spool:?}\nshutdown_grace_secs = 1\nstdout = true\n\
         [alert.file]\npath = {file:?}\n\
         [[alert.webhook]]\nname = \"siem\"\nurl = \"http://127.0.0.1:{port}/hook\"\n",
        spool = dir.join("spool").display().to_string(),
        file = dir.join("alerts.jsonl").display().to_string(),
    )
}

#[test]
fn alert_sinks_start_with_the_daemon_export_metrics_and_stop_last() {
    let pcap = bundled("api-basic.pcap");
    let dir = temp_dir("sinks");
    // The webhook's receiver: listening, so the sink has somewhere to go. Detection starts
    // with an empty model in its learning period, so nothing is posted; delivery itself is
    // tested through the handle in src/daemon (analysis.rs, pipeline.rs), by the sink tests
    // and by the detection tests below.
    let receiver = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
    let hook_port = receiver.local_addr().expect("addr").port();
    let cfg = write_config(&dir, &alert_config(&dir, hook_port));
    let secret = "webhook-signing-key-from-the-environment";
    let mut d = Daemon::start_with_env(
        &[
            "--pcap",
            pcap.to_str().expect("path"),
            "--config",
            cfg.to_str().expect("path"),
            "--hold",
        ],
        &[("APITAP_WEBHOOK_SECRET", secret)],
    );
    let port = d.port();
    let started = d.wait_log("Alert sinks started.");
    assert!(started.contains("file, stdout, webhook-siem"), "{started}");
    let scrape = wait_metric(port, "apitap_daemon_pipeline_drained", 1.0);
    for series in [
        "apitap_alert_submitted_total",
        "apitap_alert_invalid_total",
        "apitap_sink_deliveries_total{sink=\"file\"}",
        "apitap_sink_deliveries_total{sink=\"stdout\"}",
        "apitap_sink_deliveries_total{sink=\"webhook-siem\"}",
        "apitap_sink_failures_total{sink=\"webhook-siem\"}",
        "apitap_sink_queue_drops_total{sink=\"webhook-siem\"}",
        "apitap_sink_spool_drops_total{sink=\"webhook-siem\"}",
        "apitap_sink_rejected_total{sink=\"webhook-siem\"}",
        "apitap_sink_queue_depth_alerts{sink=\"webhook-siem\"}",
        "apitap_sink_spool_pending_alerts{sink=\"webhook-siem\"}",
    ] {
        assert_eq!(sample(&scrape, series), Some(0.0), "{series}:\n{scrape}");
    }
    assert!(
        sample(&scrape, "apitap_sink_spool_bytes{sink=\"webhook-siem\"}").is_some(),
        "{scrape}"
    );
    assert!(
        dir.join("spool").join("webhook-siem").is_dir(),
        "the webhook's spool is opened at start"
    );
    assert!(
        dir.join("alerts.jsonl").exists(),
        "the alert file is opened at start"
    );

    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit().code(), Some(0), "{}", d.log_text());
    let log = d.log_text();
    // The sinks stop after the pipeline drained, each with its final counters.
    let drained = log.find("Pipeline drained.").expect("drained line");
    let stopped = log.find("Alert sink stopped.").expect("sink report");
    assert!(drained < stopped, "{log}");
    assert_eq!(log.matches("Alert sink stopped.").count(), 3, "{log}");
    assert!(!log.contains(secret), "{log}");
    drop(receiver);
}

#[test]
fn alert_config_errors_name_the_section() {
    let pcap = bundled("api-basic.pcap");
    let dir = temp_dir("sinks-bad");
    // (config text, what stderr must say)
    let cases = [
        (
            "[[alert.webhook]]\nname = \"siem\"\nurl = \"ftp://siem.example/\"\n".to_owned(),
            "apitap.toml: [alert] webhook[0].url = \"ftp://siem.example/\": must be an http:// \
             or https:// URL with a host",
        ),
        (
            "[alert]\nmax_queued_alerts = 0\n".to_owned(),
            "apitap.toml: [alert] max_queued_alerts = 0: must be between 1 and 1000000",
        ),
        (
            "[[alert.webhook]]\nname = \"siem\"\nurl = \"https://siem.example/\"\n\
             secret = \"in-the-file\"\n"
                .to_owned(),
            "[alert] webhook[0].secret = <secret of 11 bytes>: is not read here: set [secrets] \
             webhook_secret or APITAP_WEBHOOK_SECRET instead",
        ),
        // Valid, but the spool cannot be created (its parent is a file): the daemon refuses
        // to start rather than accept alerts it could not keep.
        (
            format!(
                "[alert]\nspool_dir = {:?}\n[[alert.webhook]]\nname = \"siem\"\n\
                 url = \"http://127.0.0.1:9/\"\n",
                dir.join("apitap.toml").join("spool").display().to_string()
            ),
            "[alert] webhook siem: spool ",
        ),
    ];
    for (text, want) in cases {
        let cfg = write_config(&dir, &format!("[metrics]\nlisten = \"\"\n{text}"));
        let o = Command::new(BIN)
            .args(["run", "--pcap"])
            .arg(&pcap)
            .arg("--config")
            .arg(&cfg)
            .output()
            .expect("run");
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{text}: {e}");
        assert!(e.contains(want), "{text}: {e:?} lacks {want:?}");
        assert!(!e.contains("in-the-file"), "{e}");
    }
}

/// A tiny HTTP server: answers each connection's request with a small JSON body, then closes.
fn serve_http(listener: TcpListener, connections: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let Ok(mut s) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let body = b"{\"ok\":true}";
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(body);
        }
    })
}

#[test]
fn live_capture_on_loopback_counts_every_request() {
    if !is_root() {
        println!("skipped: needs root");
        return;
    }
    const REQUESTS: usize = 25;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind test server");
    let port = listener.local_addr().expect("addr").port();
    let server = serve_http(listener, REQUESTS);
    let dir = temp_dir("live");
    let cfg = write_config(
        &dir,
        &format!(
            "{LISTEN}[capture]\nfilter = \"tcp port {port}\"\nread_timeout_ms = 50\n\
             promiscuous = false\nsnaplen_bytes = 65535\nbuffer_bytes = 16777216\n\
             [daemon]\nworkers = 2\nbatch_timeout_ms = 20\nmax_queued_batches = 1024\n"
        ),
    );
    let mut d = Daemon::start(&["--interface", "lo", "--config", cfg.to_str().expect("path")]);
    let metrics_port = d.port();
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(metrics_port, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "never ready:\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 0..REQUESTS {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to test server");
        write!(
            s,
            "GET /api/items/{i} HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n"
        )
        .expect("send request");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("read response");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    server.join().expect("server thread");
    let scrape = wait_metric(
        metrics_port,
        "apitap_http_transactions_total",
        REQUESTS as f64,
    );
    assert_eq!(
        sample(&scrape, "apitap_http_transactions_total"),
        Some(REQUESTS as f64),
        "{}\n{scrape}",
        d.log_text()
    );
    assert_eq!(
        sample(
            &scrape,
            "apitap_daemon_channel_drops_total{channel=\"packets\"}"
        ),
        Some(0.0)
    );
    // Workers publish their counters every stats interval; wait for that too.
    let scrape = wait_metric(metrics_port, "apitap_flow_created_total", REQUESTS as f64);
    assert_eq!(
        sample(&scrape, "apitap_flow_created_total"),
        Some(REQUESTS as f64)
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit().code(), Some(0), "{}", d.log_text());
}

/// Sends one request on its own connection and returns the status line.
fn request(port: u16, target: &str, token: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to test server");
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: test.local\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read response");
    answer.lines().next().unwrap_or_default().to_owned()
}

/// End to end on loopback: a real server and client, `apitap run --interface lo` with an empty
/// model and a six-second learning period. Benign calls are learned and raise nothing; attack
/// calls after the period raise alerts that reach the file sink and the alert counters.
#[test]
fn live_capture_on_loopback_learns_then_alerts_on_attacks() {
    if !is_root() {
        println!("skipped: needs root");
        return;
    }
    const BENIGN: usize = 30;
    const ATTACKS: [&str; 3] = [
        "/api/items/search?q=1%27%20OR%201%3D1--",
        "/api/items/search?q=%3Cscript%3Ealert(1)%3C/script%3E",
        "/api/items/download?file=../../../../etc/passwd",
    ];
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind test server");
    let port = listener.local_addr().expect("addr").port();
    let server = serve_http(listener, BENIGN + ATTACKS.len());
    let dir = temp_dir("live-detect");
    let alerts = dir.join("alerts.jsonl");
    let cfg = write_config(
        &dir,
        &format!(
            "{LISTEN}[capture]\nfilter = \"tcp port {port}\"\nread_timeout_ms = 50\n\
             promiscuous = false\n[daemon]\nbatch_timeout_ms = 20\n\
             [alert]\nspool_dir = {spool:?}\n[alert.file]\npath = {file:?}\n\
             [detect]\nmodel_dir = {model:?}\nlearning_period_secs = 6\n",
            spool = dir.join("spool").display().to_string(),
            file = alerts.display().to_string(),
            model = dir.join("model").display().to_string(),
        ),
    );
    let mut d = Daemon::start(&["--interface", "lo", "--config", cfg.to_str().expect("path")]);
    let metrics_port = d.port();
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(metrics_port, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "never ready:\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The learning period runs from the first transaction: every benign call must fall in it,
    // on a loaded machine too, and every attack after it.
    let t0 = Instant::now();
    for i in 0..BENIGN {
        let status = request(
            port,
            &format!("/api/items/{}", i % 7),
            &format!("user-{}", i % 5),
        );
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the benign calls took {:?}, too close to the 6 s learning period",
        t0.elapsed()
    );
    // Past the learning period (counted in capture time from the first transaction).
    std::thread::sleep(
        (t0 + Duration::from_millis(6500)).saturating_duration_since(Instant::now()),
    );
    for target in ATTACKS {
        request(port, target, "mallory");
    }
    server.join().expect("server thread");
    let total = BENIGN + ATTACKS.len();
    let scrape = wait_metric(
        metrics_port,
        "apitap_detect_transactions_total",
        total as f64,
    );
    assert_eq!(
        sample(&scrape, "apitap_detect_learning"),
        Some(0.0),
        "the learning period is over:\n{scrape}"
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit().code(), Some(0), "{}", d.log_text());
    let records = alert_records(&alerts);
    let injection: Vec<_> = records
        .iter()
        .filter(|a| a.kind == apitap::alert::AlertKind::Injection)
        .collect();
    assert!(
        !injection.is_empty(),
        "no injection alert: {records:#?}\n{}",
        d.log_text()
    );
    for a in &records {
        a.validate().expect("valid record");
        // Client-scoped alerts name the attacker; endpoint-scoped ones name no client.
        let local: std::net::IpAddr = "127.0.0.1".parse().expect("address");
        assert!(a.client.ip.is_none_or(|ip| ip == local), "{a:?}");
    }
    let kinds: Vec<&str> = records.iter().map(|a| a.kind.name()).collect();
    println!("alerts raised on loopback: {kinds:?}");
    // Every alert comes from the attack calls: the benign ones were learned, not judged.
    let learned: Vec<String> = (0..7).map(|i| format!("/api/items/{i}")).collect();
    assert!(
        records.iter().all(|a| !learned.contains(&a.endpoint.route)),
        "{records:#?}"
    );
    let log = d.log_text();
    assert!(!log.contains("mallory"), "a token reached the log");
}

/// The sample values of a Prometheus query answer (`data.result[].value[1]`), as numbers.
fn prometheus_values(body: &str) -> Vec<f64> {
    let v: serde_json::Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(_) => return Vec::new(),
    };
    v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["value"][1].as_str()?.parse().ok())
        .collect()
}

/// A real Prometheus (Debian's `prometheus`) scrapes the daemon with the shipped
/// `deploy/prometheus/prometheus.yml` (target and interval adjusted) and loads the shipped rules;
/// its query API then reports `up == 1` and a non-zero transaction counter.
#[test]
fn real_prometheus_scrapes_the_daemon() {
    let Some(prom) = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
    else {
        println!("skipped: prometheus not installed (Debian package `prometheus`)");
        return;
    };
    let pcap = bundled("api-basic.pcap");
    let want = flows_count(&pcap) as f64;
    let dir = temp_dir("prometheus");
    let cfg = write_config(&dir, LISTEN);
    let mut d = replay(&pcap, &cfg, &["--hold"]);
    let port = d.port();
    wait_metric(port, "apitap_daemon_pipeline_drained", 1.0);

    // The shipped scrape config, pointed at this daemon and scraping every second.
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus");
    let shipped = std::fs::read_to_string(deploy.join("prometheus.yml")).expect("prometheus.yml");
    let mut doc: serde_json::Value = serde_norway::from_str(&shipped).expect("yaml");
    doc["global"]["scrape_interval"] = "1s".into();
    doc["global"]["evaluation_interval"] = "1s".into();
    doc["rule_files"] = serde_json::json!([deploy.join("apitap-rules.yml").display().to_string()]);
    doc.as_object_mut().expect("object").remove("alerting");
    let job = doc["scrape_configs"]
        .as_array_mut()
        .expect("scrape_configs")
        .iter_mut()
        .find(|j| j["job_name"] == "apitap")
        .expect("an apitap job");
    job["scrape_interval"] = "1s".into();
    job["scrape_timeout"] = "1s".into();
    job["static_configs"] = serde_json::json!([{ "targets": [format!("127.0.0.1:{port}")] }]);
    let prom_cfg = dir.join("prometheus.yml");
    std::fs::write(&prom_cfg, serde_norway::to_string(&doc).expect("yaml")).expect("write");
    let web = TcpListener::bind("127.0.0.1:0").expect("free port");
    let web_port = web.local_addr().expect("addr").port();
    drop(web);
    // Killed however the test ends: a failed query must not leave Prometheus running.
    struct Killed(Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let p = Command::new(prom)
        .arg(format!("--config.file={}", prom_cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{web_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("prometheus.log")).expect("log"),
        ))
        .spawn()
        .expect("start prometheus");
    let p = Killed(p);
    let query = |q: &str| {
        TcpStream::connect(("127.0.0.1", web_port))
            .ok()
            .map(|_| get(web_port, &format!("/api/v1/query?query={q}")).1)
            .map(|b| prometheus_values(&b))
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut up, mut tx) = (Vec::new(), Vec::new());
    while Instant::now() < deadline {
        up = query("up");
        tx = query("apitap_http_transactions_total");
        if up == [1.0] && tx.first().is_some_and(|v| *v > 0.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(p);
    let log = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
    assert_eq!(up, vec![1.0], "up via Prometheus; its log:\n{log}");
    assert_eq!(
        tx,
        vec![want],
        "transactions via Prometheus; its log:\n{log}"
    );
    d.signal(libc::SIGINT);
    assert_eq!(d.wait_exit().code(), Some(0), "{}", d.log_text());
}

// ---------------------------------------------------------------------------------------------
// Detection in the daemon.

/// The pseudonym key of the detection tests (the same for learn, detect and run).
const DETECT_KEY: &str = "daemon-detect-test-key-0123456789";

/// Identity and cleartext settings of the generated bank API (as in tests/detection.rs).
const BANK: &str = "[identity]\ntrusted_proxies = [\"10.0.0.0/24\"]\n\
                    [detect.signatures]\ntls_terminated_servers = [\"10.1.0.0/24\"]\n";

/// Runs `apitap <args>` in `dir` with the test key; panics with its stderr on failure.
fn apitap_in(dir: &Path, args: &[&str]) -> String {
    let o = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("APITAP_PSEUDONYM_KEY", DETECT_KEY)
        .output()
        .expect("run apitap");
    assert!(
        o.status.success(),
        "apitap {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Twelve minutes of benign bank traffic learned into `model/`, and three minutes of attack
/// traffic with its labels: made once per test run, shared by the detection tests.
fn security_fixture() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = temp_dir("security");
        std::fs::write(dir.join("learn.toml"), BANK).expect("write config");
        apitap_in(
            &dir,
            &[
                "generate",
                "--scenario",
                "security-train",
                "--hours",
                "0.2",
                "--out",
                "train.pcap",
            ],
        );
        apitap_in(
            &dir,
            &[
                "generate",
                "--scenario",
                "security-attack",
                "--hours",
                "0.05",
                "--labels",
                "labels.jsonl",
                "--out",
                "attack.pcap",
            ],
        );
        apitap_in(
            &dir,
            &[
                "learn",
                "--config",
                "learn.toml",
                "--model",
                "model",
                "train.pcap",
            ],
        );
        dir
    })
}

/// Copies the learned model directory to `to`, so a test's daemon adapts its own copy.
fn copy_model(to: &Path) {
    std::fs::create_dir_all(to).expect("model dir");
    for entry in std::fs::read_dir(security_fixture().join("model")).expect("model") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy model file");
    }
}

/// Every alert record of a JSON Lines file, each validated against the alert contract.
fn alert_records(path: &Path) -> Vec<apitap::alert::Alert> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let a: apitap::alert::Alert = serde_json::from_str(l).expect("an alert record a line");
            a.validate().expect("a valid alert record");
            a
        })
        .collect()
}

/// A daemon detecting against a learned model raises what `apitap detect` raises on the same
/// capture (every record, opening and closing, through the file sink), reports it in the
/// metrics, and saves the adapted model at shutdown.
#[test]
fn the_daemon_detects_against_a_learned_model_and_saves_it_at_shutdown() {
    let fx = security_fixture();
    let dir = temp_dir("detect");
    let model = dir.join("model");
    copy_model(&model);
    let before = apitap::model::Model::load(&model).expect("learned model");
    let alerts = dir.join("alerts.jsonl");
    // One worker: transactions reach detection in capture order, as in `apitap detect`. The
    // learned model spans 12 minutes, more than the 10-minute learning period: it detects at
    // once.
    let cfg = write_config(
        &dir,
        &format!(
            "{LISTEN}[daemon]\nworkers = 1\n[alert.file]\npath = {alerts:?}\n{BANK}\
             [detect]\nmodel_dir = {model:?}\nlearning_period_secs = 600\n",
            alerts = alerts.display().to_string(),
            model = model.display().to_string(),
        ),
    );
    let pcap = fx.join("attack.pcap");
    let mut d = Daemon::start_with_env(
        &[
            "--pcap",
            pcap.to_str().expect("path"),
            "--config",
            cfg.to_str().expect("path"),
            "--hold",
        ],
        &[("APITAP_PSEUDONYM_KEY", DETECT_KEY)],
    );
    let port = d.port();
    let started = d.wait_log("Detection started.");
    assert!(started.contains("learning=false"), "{started}");
    assert!(started.contains("learned_detectors=true"), "{started}");
    let scrape = wait_metric(port, "apitap_daemon_pipeline_drained", 1.0);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit().code(), Some(0), "{}", d.log_text());

    // The same records as offline detection, by id and content.
    let daemon = alert_records(&alerts);
    let offline = dir.join("offline.jsonl");
    apitap_in(
        &dir,
        &[
            "detect",
            "--config",
            cfg.to_str().expect("path"),
            "--model",
            fx.join("model").to_str().expect("path"),
            // The daemon adapts ([detect] adapt); offline detection does with --adapt.
            "--adapt",
            "--updates",
            "--alerts",
            offline.to_str().expect("path"),
            pcap.to_str().expect("path"),
        ],
    );
    let offline = alert_records(&offline);
    let key = |a: &apitap::alert::Alert| serde_json::to_string(a).expect("serialise");
    let mut got: Vec<String> = daemon.iter().map(key).collect();
    let mut want: Vec<String> = offline.iter().map(key).collect();
    got.sort();
    want.sort();
    assert!(!want.is_empty(), "the attack capture raises alerts offline");
    assert_eq!(got.len(), want.len(), "records: daemon vs apitap detect");
    assert!(
        got == want,
        "the daemon's records differ from apitap detect's"
    );
    let kinds: std::collections::BTreeSet<&str> = daemon.iter().map(|a| a.kind.name()).collect();
    assert!(kinds.len() >= 5, "{kinds:?}");

    // Metrics: every transaction went through detection, findings became alerts, the model
    // detects and was saved once, at shutdown.
    let value =
        |series: &str| sample(&scrape, series).unwrap_or_else(|| panic!("{series}:\n{scrape}"));
    assert_eq!(
        value("apitap_detect_transactions_total"),
        value("apitap_http_transactions_total")
    );
    assert!(value("apitap_detect_findings_total") >= kinds.len() as f64);
    assert!(
        value("apitap_detect_withheld_total") > 0.0,
        "attack traffic is not learned"
    );
    assert!(value("apitap_detect_learned_total") > 0.0);
    assert_eq!(value("apitap_detect_learning"), 0.0);
    assert_eq!(
        value("apitap_baseline_learning_state{state=\"detecting\"}"),
        1.0
    );
    assert_eq!(
        value("apitap_detect_incidents_open"),
        0.0,
        "closed at the end"
    );
    assert_eq!(value("apitap_detect_model_saves_total{result=\"ok\"}"), 1.0);
    assert_eq!(
        value("apitap_detect_model_saves_total{result=\"error\"}"),
        0.0
    );
    let raised: f64 = scrape
        .lines()
        .filter(|l| l.starts_with("apitap_detect_alerts_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(raised, daemon.len() as f64);

    // The saved model went on learning from the benign share of the attack capture.
    let after = apitap::model::Model::load(&model).expect("saved model");
    assert_eq!(after.pseudonym_key_id, before.pseudonym_key_id);
    assert_eq!(
        after.counters.learned,
        before.counters.learned + value("apitap_detect_learned_total") as u64
    );
    assert!(after.last_seen > before.last_seen);
    assert!(d.log_text().contains("Model saved."));
}

/// An empty model learns through its learning period: attack traffic raises nothing while it
/// runs, everything is learned into a new model, saved at shutdown with a new key beside it.
#[test]
fn an_empty_model_learns_through_its_learning_period_and_raises_nothing() {
    let fx = security_fixture();
    let dir = temp_dir("learning");
    let model = dir.join("model");
    let alerts = dir.join("alerts.jsonl");
    let cfg = write_config(
        &dir,
        &format!(
            "{LISTEN}[alert.file]\npath = {alerts:?}\n{BANK}[detect]\nmodel_dir = {model:?}\n",
            alerts = alerts.display().to_string(),
            model = model.display().to_string(),
        ),
    );
    let mut d = replay(&fx.join("attack.pcap"), &cfg, &["--hold"]);
    let port = d.port();
    let started = d.wait_log("Detection started.");
    assert!(started.contains("learning=true"), "{started}");
    let scrape = wait_metric(port, "apitap_daemon_pipeline_drained", 1.0);
    d.signal(libc::SIGINT);
    assert_eq!(d.wait_exit().code(), Some(0), "{}", d.log_text());

    let value =
        |series: &str| sample(&scrape, series).unwrap_or_else(|| panic!("{series}:\n{scrape}"));
    assert_eq!(value("apitap_detect_learning"), 1.0);
    assert_eq!(
        value("apitap_baseline_learning_state{state=\"learning\"}"),
        1.0
    );
    assert_eq!(value("apitap_detect_findings_total"), 0.0);
    assert_eq!(value("apitap_detect_withheld_total"), 0.0);
    let txs = value("apitap_detect_transactions_total");
    assert!(txs > 1000.0, "{txs}");
    assert_eq!(value("apitap_alert_submitted_total"), 0.0);
    assert!(alert_records(&alerts).is_empty());

    // Created from scratch: a key (private to the daemon's user) and a model of what it saw.
    let key = std::fs::metadata(model.join("pseudonym.key")).expect("key created");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );
    let saved = apitap::model::Model::load(&model).expect("model saved at shutdown");
    assert_eq!(
        saved.counters.learned,
        value("apitap_detect_learned_total") as u64
    );
    assert!(saved.endpoints.len() >= 12, "{}", saved.endpoints.len());
}

/// Start-up refuses a model learned with another key, and a missing spec, naming the file.
#[test]
fn detection_start_errors_name_the_file() {
    let dir = temp_dir("detect-bad");
    let model = dir.join("model");
    std::fs::create_dir_all(&model).expect("model dir");
    // A model learned with the test key; the daemon is then given another one.
    apitap_in(
        &dir,
        &[
            "learn",
            "--model",
            model.to_str().expect("path"),
            bundled("api-basic.pcap").to_str().expect("path"),
        ],
    );
    let cases = [
        (
            format!("[detect]\nmodel_dir = {:?}\n", model.display().to_string()),
            vec![("APITAP_PSEUDONYM_KEY", "another-key-0123456789abcdef")],
            format!(
                "{}: learned with pseudonym key",
                model.join("model.json").display()
            ),
        ),
        (
            format!(
                "[detect]\nmodel_dir = {:?}\nspec = {:?}\n",
                model.display().to_string(),
                dir.join("nope.yaml").display().to_string()
            ),
            vec![("APITAP_PSEUDONYM_KEY", DETECT_KEY)],
            format!("{}: ", dir.join("nope.yaml").display()),
        ),
    ];
    for (text, env, want) in cases {
        let cfg = write_config(&dir, &format!("[metrics]\nlisten = \"\"\n{text}"));
        let o = Command::new(BIN)
            .args(["run", "--pcap"])
            .arg(bundled("api-basic.pcap"))
            .arg("--config")
            .arg(&cfg)
            .env_remove("APITAP_PSEUDONYM_KEY")
            .envs(env)
            .output()
            .expect("run");
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{text}: {e}");
        assert!(e.contains(&want), "{text}: {e:?} lacks {want:?}");
    }
}
