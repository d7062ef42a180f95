//! End-to-end tests of the sinks on 127.0.0.1: a real HTTP receiver (hyper) that checks the
//! webhook signature and records alert ids, taken down and brought back mid-run; pipeline
//! restarts over a spool with alerts left in it; the spool bound; a torn spool tail; JSON Lines
//! rotation; and, when the binary is installed, a real Alertmanager.

use std::collections::{BTreeSet, HashSet};
use std::convert::Infallible;
use std::fs;
use std::io::Write;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::config::{
    AlertmanagerSinkConfig, FileSinkConfig, FsyncPolicy, SinksConfig, SpoolConfig,
    WebhookSinkConfig,
};
use super::sink::file::RotatingFile;
use super::sink::stdout::LineWriter;
use super::sink::{run_line_sink, webhook, SinkCounters, SinkCountersSnapshot};
use super::tests::sample;
use super::{Alert, AlertPipeline, SubmitError};
use crate::common::Timestamp;

const SECRET: &str = "test-webhook-secret";
const WAIT: Duration = Duration::from_secs(30);

fn tempdir(tag: &str) -> PathBuf {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "apitap-sinks-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn base() -> Timestamp {
    Timestamp::from_secs_nanos(1_700_000_000, 0)
}

fn alerts(n: usize) -> Vec<Alert> {
    (0..n).map(|i| sample(i, base())).collect()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A port nothing listens on (bound, read, released).
fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What the test receiver saw, shared across its restarts.
#[derive(Default)]
struct Seen {
    /// Every alert id in every accepted body, duplicates included, in arrival order.
    ids: Vec<String>,
    requests: u64,
    bad_signatures: u64,
    /// Answer this many more requests with 500 *after* recording them, as a receiver that
    /// processed a batch but failed before answering would: the sender must re-send.
    fail_next: u32,
    /// Refuse with 400 any batch containing one of these ids, as a receiver whose schema
    /// check fails on one alert would.
    poison: HashSet<String>,
}

type Shared = Arc<Mutex<Seen>>;

async fn handle(req: Request<Incoming>, seen: Shared) -> Result<Response<Full<Bytes>>, Infallible> {
    let sig = req
        .headers()
        .get(webhook::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let ts = req
        .headers()
        .get(webhook::TIMESTAMP_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut s = seen.lock().unwrap();
    s.requests += 1;
    let signed_ok = sig.as_deref().is_some_and(|sig| {
        webhook::verify(SECRET.as_bytes(), sig, &body, now, 300)
            && ts
                .as_deref()
                .is_some_and(|t| sig.starts_with(&format!("t={t},")))
    });
    if !signed_ok {
        s.bad_signatures += 1;
        return Ok(status(StatusCode::UNAUTHORIZED));
    }
    let Ok(batch) = serde_json::from_slice::<Vec<Alert>>(&body) else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    if batch.iter().any(|a| s.poison.contains(&a.id)) {
        return Ok(status(StatusCode::BAD_REQUEST));
    }
    s.ids.extend(batch.into_iter().map(|a| a.id));
    if s.fail_next > 0 {
        s.fail_next -= 1;
        return Ok(status(StatusCode::INTERNAL_SERVER_ERROR));
    }
    Ok(status(StatusCode::OK))
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = code;
    r
}

/// A webhook receiver on its own thread and runtime; `stop` closes the listener and every
/// connection, as a crashed receiver would.
struct Receiver {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(port: u16, seen: Shared) -> Receiver {
        Receiver::start_with(port, seen, None)
    }

    /// With `tls`, the receiver speaks HTTPS only.
    fn start_with(port: u16, seen: Shared, tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let tls = tls.map(tokio_rustls::TlsAcceptor::from);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                // The port was just released by an earlier run of this receiver; retry briefly.
                let mut tries = 0;
                let listener = loop {
                    match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                        Ok(l) => break l,
                        Err(e) => {
                            tries += 1;
                            assert!(tries < 200, "cannot bind 127.0.0.1:{port}: {e}");
                            tokio::time::sleep(Duration::from_millis(25)).await;
                        }
                    }
                };
                ready_tx
                    .send(listener.local_addr().unwrap().port())
                    .unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let seen = seen.clone();
                            let tls = tls.clone();
                            tokio::spawn(async move {
                                let service = service_fn(move |req| handle(req, seen.clone()));
                                let conn = http1::Builder::new();
                                let _ = match tls {
                                    Some(acceptor) => match acceptor.accept(stream).await {
                                        Ok(s) => conn.serve_connection(TokioIo::new(s), service).await,
                                        Err(_) => return,
                                    },
                                    None => conn.serve_connection(TokioIo::new(stream), service).await,
                                };
                            });
                        }
                    }
                }
            });
            // Dropping the runtime here cancels the connection tasks and closes their sockets.
        });
        let port = ready_rx.recv().unwrap();
        Receiver {
            port,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn webhook_config(spool_dir: &Path, port: u16) -> SinksConfig {
    SinksConfig {
        spool_dir: spool_dir.to_path_buf(),
        shutdown_grace_secs: 1,
        spool: SpoolConfig {
            fsync: FsyncPolicy::Always,
            ..SpoolConfig::default()
        },
        webhook: vec![WebhookSinkConfig {
            name: "test".into(),
            url: format!("http://127.0.0.1:{port}/hook"),
            secret: Some(SECRET.into()),
            timeout_secs: 2,
            connect_timeout_secs: 1,
            max_batch_alerts: 8,
            batch_timeout_secs: 0.02,
            retry_initial_backoff_secs: 0.02,
            retry_max_backoff_secs: 0.2,
            ..WebhookSinkConfig::default()
        }],
        ..SinksConfig::default()
    }
}

fn counters(p: &AlertPipeline) -> SinkCountersSnapshot {
    p.sinks()[0].counters.snapshot()
}

fn ids(alerts: &[Alert]) -> BTreeSet<String> {
    alerts.iter().map(|a| a.id.clone()).collect()
}

fn received(seen: &Shared) -> BTreeSet<String> {
    seen.lock().unwrap().ids.iter().cloned().collect()
}

fn submit_all(p: &AlertPipeline, alerts: &[Alert]) {
    for a in alerts {
        let s = p.submit(a.clone()).unwrap();
        assert_eq!((s.queued, s.dropped), (1, 0));
    }
}

/// The delivery contract end to end: a receiver outage, a receiver that fails after processing
/// (forcing duplicates), a pipeline shutdown with alerts still spooled, and a new pipeline over
/// the same spool. Every id arrives at least once; deduplicated, exactly the submitted set.
#[test]
fn webhook_delivers_every_alert_across_outages_and_restarts() {
    let dir = tempdir("webhook");
    let seen = Shared::default();
    let all = alerts(150);
    let receiver = Receiver::start(0, seen.clone());
    let port = receiver.port;
    let cfg = webhook_config(&dir, port);

    let p = AlertPipeline::new(&cfg).unwrap();
    submit_all(&p, &all[..50]);
    wait_for("first 50 alerts", || received(&seen) == ids(&all[..50]));

    // Receiver down: alerts pile up in the spool and attempts fail.
    receiver.stop();
    submit_all(&p, &all[50..100]);
    wait_for("failed attempts", || counters(&p).failures >= 2);
    assert!(counters(&p).spool_pending > 0);

    // Back up, but the first two batches are processed and then answered with 500.
    seen.lock().unwrap().fail_next = 2;
    let receiver = Receiver::start(port, seen.clone());
    wait_for("alerts sent during the outage", || {
        received(&seen) == ids(&all[..100]) && counters(&p).spool_pending == 0
    });
    assert!(counters(&p).retries > 0);

    // Down again, then shut the pipeline down with alerts still spooled.
    receiver.stop();
    submit_all(&p, &all[100..150]);
    wait_for("last 50 alerts spooled", || {
        counters(&p).spool_pending == 50
    });
    let report = p.shutdown();
    assert_eq!(report.unfinished, 0);
    let (_, name, c) = &report.sinks[0];
    assert_eq!(name, "test");
    assert_eq!(c.spool_pending, 50, "left in the spool for the next start");
    assert_eq!(c.delivered, 100);

    // A new pipeline over the same spool directory delivers them. It starts with all 50
    // pending; the receiver comes up after that count is read, or the first delivery could
    // get in before it.
    let p = AlertPipeline::new(&cfg).unwrap();
    assert_eq!(counters(&p).spool_pending, 50);
    let receiver = Receiver::start(port, seen.clone());
    wait_for("spooled alerts after restart", || {
        counters(&p).spool_pending == 0
    });
    let c = p.shutdown().sinks[0].2;
    receiver.stop();
    assert_eq!(c.delivered, 50);

    let s = seen.lock().unwrap();
    assert_eq!(
        s.bad_signatures, 0,
        "every request carried a valid signature"
    );
    let unique: BTreeSet<String> = s.ids.iter().cloned().collect();
    assert_eq!(
        unique,
        ids(&all),
        "deduplicated by id: exactly the submitted set"
    );
    assert!(
        s.ids.len() > all.len(),
        "the 500-after-processing batches were re-sent"
    );
    let _ = fs::remove_dir_all(&dir);
}

/// A receiver refusing one alert's content (400) costs only that alert: batches are halved
/// until it is alone, it is dropped and counted as rejected, and everything else is delivered.
#[test]
fn refused_alert_is_isolated_and_dropped_alone() {
    let dir = tempdir("poison");
    let seen = Shared::default();
    let all = alerts(40);
    seen.lock().unwrap().poison.insert(all[13].id.clone());
    let port = free_port();
    let cfg = webhook_config(&dir, port);
    let p = AlertPipeline::new(&cfg).unwrap();
    submit_all(&p, &all);
    wait_for("all spooled", || counters(&p).spool_pending == 40);
    // Start the receiver only now, so batches are full and the poison shares one.
    let receiver = Receiver::start(port, seen.clone());
    wait_for("delivery", || counters(&p).spool_pending == 0);
    let c = p.shutdown().sinks[0].2;
    receiver.stop();
    assert_eq!((c.delivered, c.rejected), (39, 1), "{c:?}");
    let mut expected = ids(&all);
    expected.remove(&all[13].id);
    assert_eq!(received(&seen), expected);
    let _ = fs::remove_dir_all(&dir);
}

/// With the receiver down, a small spool fills; the oldest alerts are dropped and counted, and
/// once the receiver is up exactly the newest ones arrive.
#[test]
fn full_spool_drops_oldest_alerts_and_counts_them() {
    let dir = tempdir("bound");
    let port = free_port();
    let mut cfg = webhook_config(&dir, port);
    cfg.spool = SpoolConfig {
        max_spool_bytes: 64 * 1024,
        segment_bytes: 4096,
        max_record_bytes: 2048,
        fsync: FsyncPolicy::Never,
        fsync_interval_secs: 1,
    };
    let all = alerts(400);
    let p = AlertPipeline::new(&cfg).unwrap();
    submit_all(&p, &all);
    wait_for("all alerts taken in", || {
        let c = counters(&p);
        c.spool_pending + c.spool_drops == 400
    });
    let c = counters(&p);
    assert!(c.spool_drops > 0, "{c:?}");
    assert!(c.spool_bytes <= 64 * 1024, "{c:?}");

    let seen = Shared::default();
    let receiver = Receiver::start(port, seen.clone());
    wait_for("kept alerts", || counters(&p).spool_pending == 0);
    let c = p.shutdown().sinks[0].2;
    receiver.stop();
    let dropped = c.spool_drops as usize;
    assert_eq!(
        received(&seen),
        ids(&all[dropped..]),
        "the oldest {dropped} were dropped"
    );
    assert_eq!(c.delivered as usize, 400 - dropped);
    let _ = fs::remove_dir_all(&dir);
}

/// A crash mid-append leaves a torn record at the spool's tail: the next start counts it,
/// skips it and delivers everything before it.
#[test]
fn torn_spool_tail_is_skipped_on_restart() {
    let dir = tempdir("torn");
    let port = free_port();
    let cfg = webhook_config(&dir, port);
    let all = alerts(20);
    let p = AlertPipeline::new(&cfg).unwrap();
    submit_all(&p, &all);
    wait_for("alerts spooled", || counters(&p).spool_pending == 20);
    drop(p);

    let spool_dir = dir.join("webhook-test");
    let mut segments: Vec<PathBuf> = fs::read_dir(&spool_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    let last = segments.last().unwrap();
    let mut f = fs::OpenOptions::new().append(true).open(last).unwrap();
    // A header promising 500 bytes, followed by only 10: what a crash mid-write leaves.
    f.write_all(&[0xFF, 0xFE, b'A', b'S', 0xF4, 0x01, 0, 0, 1, 2, 3, 4])
        .unwrap();
    f.write_all(b"{\"id\":\"to").unwrap();
    drop(f);

    let seen = Shared::default();
    let receiver = Receiver::start(port, seen.clone());
    let p = AlertPipeline::new(&cfg).unwrap();
    assert_eq!(counters(&p).spool_corrupt_records, 1);
    wait_for("spooled alerts", || received(&seen) == ids(&all));
    let c = p.shutdown().sinks[0].2;
    receiver.stop();
    assert_eq!(c.delivered, 20);
    assert_eq!(c.spool_pending, 0);
    let _ = fs::remove_dir_all(&dir);
}

/// JSON Lines rotation: at most `max_files` files, none over `max_file_bytes`, lines whole,
/// and together they hold exactly the newest alerts in submission order.
#[test]
fn jsonl_file_rotates_by_size_and_keeps_the_newest() {
    let dir = tempdir("jsonl");
    let path = dir.join("alerts.jsonl");
    let cfg = SinksConfig {
        file: Some(FileSinkConfig {
            path: path.clone(),
            max_file_bytes: 4096,
            max_files: 3,
        }),
        ..SinksConfig::default()
    };
    let all = alerts(60);
    let p = AlertPipeline::new(&cfg).unwrap();
    submit_all(&p, &all);
    let report = p.shutdown();
    let c = report.sinks[0].2;
    assert_eq!(c.delivered, 60);
    assert_eq!(c.failures, 0);

    let files = [
        RotatingFile::rotated_path(&path, 2),
        RotatingFile::rotated_path(&path, 1),
        path.clone(),
    ];
    assert!(!RotatingFile::rotated_path(&path, 3).exists());
    let mut lines = Vec::new();
    for f in &files {
        let text = fs::read_to_string(f).unwrap();
        assert!(
            text.len() as u64 <= 4096,
            "{} has {} bytes",
            f.display(),
            text.len()
        );
        assert!(text.ends_with('\n'));
        lines.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Alert>(l).unwrap()),
        );
    }
    assert!(lines.len() < 60, "old files were deleted");
    assert_eq!(lines, all[60 - lines.len()..].to_vec());
    let per_file = lines.len() as u64 / 3;
    assert!(c.rotations >= 60 / (per_file + 1) - 1, "{c:?}");
    let _ = fs::remove_dir_all(&dir);
}

/// The stdout sink's line writer: whole lines, one alert each, parseable back.
#[test]
fn line_writer_writes_one_json_object_per_line() {
    let all = alerts(5);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let counters = Arc::new(SinkCounters::default());
    for a in &all {
        counters.queue_depth.fetch_add(1, Ordering::Relaxed);
        tx.try_send(Arc::new(a.clone())).unwrap();
    }
    drop(tx);
    let mut out = Vec::new();
    run_line_sink(LineWriter(&mut out), rx, counters.clone(), "stdout");
    let text = String::from_utf8(out).unwrap();
    let back: Vec<Alert> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(back, all);
    let c = counters.snapshot();
    assert_eq!((c.delivered, c.queue_depth), (5, 0));
}

#[test]
fn invalid_alerts_are_refused_and_counted() {
    let dir = tempdir("invalid");
    let cfg = SinksConfig {
        file: Some(FileSinkConfig {
            path: dir.join("a.jsonl"),
            ..FileSinkConfig::default()
        }),
        ..SinksConfig::default()
    };
    let p = AlertPipeline::new(&cfg).unwrap();
    let mut a = sample(1, base());
    a.count = 0;
    assert!(matches!(p.submit(a), Err(SubmitError::Invalid(_))));
    assert_eq!(p.counters().invalid.load(Ordering::Relaxed), 1);
    assert_eq!(p.counters().submitted.load(Ordering::Relaxed), 0);
    drop(p);
    assert_eq!(fs::read_to_string(dir.join("a.jsonl")).unwrap(), "");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn bad_settings_stop_the_pipeline_from_starting() {
    let mut cfg = webhook_config(Path::new("/tmp"), 1);
    cfg.webhook[0].url = "not a url".into();
    let err = AlertPipeline::new(&cfg).err().unwrap().to_string();
    assert!(err.contains("webhook[0].url: \"not a url\""), "{err}");
}

/// TLS test fixtures: a CA and a server certificate for IP 127.0.0.1, valid 2000 to 2100.
fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/alert/testdata")
        .join(name)
}

fn server_tls() -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(testdata("server.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(testdata("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    Arc::new(cfg)
}

/// Over HTTPS the webhook trusts the configured CA file, and without it refuses the server
/// (the alerts stay spooled instead of going to an unverified peer).
#[test]
fn webhook_over_tls_verifies_the_server() {
    let dir = tempdir("tls");
    let seen = Shared::default();
    let receiver = Receiver::start_with(0, seen.clone(), Some(server_tls()));
    let mut cfg = webhook_config(&dir.join("trusted"), receiver.port);
    cfg.webhook[0].url = format!("https://127.0.0.1:{}/hook", receiver.port);
    cfg.webhook[0].ca_file = Some(testdata("ca.pem"));
    let all = alerts(10);
    let p = AlertPipeline::new(&cfg).unwrap();
    submit_all(&p, &all);
    wait_for("alerts over TLS", || received(&seen) == ids(&all));
    assert_eq!(p.shutdown().sinks[0].2.delivered, 10);

    cfg.spool_dir = dir.join("untrusted");
    cfg.webhook[0].ca_file = None;
    let p = AlertPipeline::new(&cfg).unwrap();
    submit_all(&p, &alerts(13)[10..]);
    wait_for("refused handshakes", || counters(&p).failures >= 2);
    let c = p.shutdown().sinks[0].2;
    receiver.stop();
    assert_eq!((c.delivered, c.spool_pending), (0, 3));
    assert_eq!(
        received(&seen),
        ids(&all),
        "nothing reached the unverified server"
    );
    let _ = fs::remove_dir_all(&dir);
}

/// https URLs build a rustls client with the ring provider; a bad CA file is a start error.
#[test]
fn https_webhook_starts_and_bad_ca_file_is_refused() {
    let dir = tempdir("https");
    let mut cfg = webhook_config(&dir, 1);
    cfg.webhook[0].url = "https://127.0.0.1:1/hook".into();
    let p = AlertPipeline::new(&cfg).unwrap();
    drop(p);
    fs::write(dir.join("ca.pem"), "not a certificate").unwrap();
    cfg.webhook[0].ca_file = Some(dir.join("ca.pem"));
    let err = AlertPipeline::new(&cfg).err().unwrap().to_string();
    assert!(err.starts_with("webhook test: "), "{err}");
    let _ = fs::remove_dir_all(&dir);
}

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

/// Kills the Alertmanager this test started, however the test ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Alerts through the v2 API sink into a real Alertmanager, read back with `GET /api/v2/alerts`.
#[test]
fn alertmanager_receives_alerts_with_the_documented_labels() {
    if !Path::new(ALERTMANAGER).exists() {
        println!("skipped: prometheus-alertmanager not installed");
        return;
    }
    let dir = tempdir("alertmanager");
    let config = dir.join("alertmanager.yml");
    fs::write(
        &config,
        "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
    )
    .unwrap();
    let port = free_port();
    let log = fs::File::create(dir.join("alertmanager.log")).unwrap();
    let _child = Child(
        std::process::Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let base_url = format!("http://127.0.0.1:{port}");
    wait_for("alertmanager ready", || {
        rt.block_on(async {
            http.get(format!("{base_url}/-/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
    });

    // Capture time close to now, so the alerts are still firing when read back.
    let now = Timestamp::from_nanos(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    let start = Timestamp::from_nanos(now.as_nanos() - 60_000_000_000);
    let sent: Vec<Alert> = (0..12).map(|i| sample(i, start)).collect();
    let cfg = SinksConfig {
        spool_dir: dir.join("spool"),
        shutdown_grace_secs: 5,
        alertmanager: vec![AlertmanagerSinkConfig {
            name: "am".into(),
            url: base_url.clone(),
            generator_url: Some("http://apitap.test/alerts/{id}".into()),
            batch_timeout_secs: 0.05,
            retry_initial_backoff_secs: 0.05,
            retry_max_backoff_secs: 0.5,
            ..AlertmanagerSinkConfig::default()
        }],
        ..SinksConfig::default()
    };
    let p = AlertPipeline::new(&cfg).unwrap();
    submit_all(&p, &sent);
    wait_for("alertmanager deliveries", || counters(&p).delivered == 12);
    let c = p.shutdown().sinks[0].2;
    assert_eq!((c.rejected, c.spool_pending), (0, 0), "{c:?}");

    let body = rt.block_on(async {
        http.get(format!("{base_url}/api/v2/alerts"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    });
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    let mut found = HashSet::new();
    for a in &sent {
        let got = listed
            .iter()
            .find(|v| v["labels"]["alert_id"] == a.id.as_str())
            .unwrap_or_else(|| panic!("alert {} not in Alertmanager: {listed:?}", a.id));
        let labels = &got["labels"];
        assert_eq!(
            labels["alertname"],
            format!("apitap_{}", a.kind.name()).as_str()
        );
        assert_eq!(labels["kind"], a.kind.name());
        assert_eq!(labels["severity"], a.severity.name());
        assert_eq!(labels["route"], a.endpoint.route.as_str());
        assert_eq!(labels["host"], a.endpoint.host.as_str());
        assert_eq!(labels["method"], a.endpoint.method.as_str());
        match a.owasp {
            Some(o) => assert_eq!(labels["owasp"], o.name()),
            None => assert!(labels.get("owasp").is_none(), "{labels}"),
        }
        assert_eq!(got["annotations"]["summary"], a.summary.as_str());
        let evidence: serde_json::Value =
            serde_json::from_str(got["annotations"]["evidence"].as_str().unwrap()).unwrap();
        assert_eq!(evidence, serde_json::Value::Object(a.evidence.clone()));
        assert_eq!(
            got["generatorURL"],
            format!("http://apitap.test/alerts/{}", a.id).as_str()
        );
        assert_eq!(got["status"]["state"], "active");
        found.insert(a.id.clone());
    }
    assert_eq!(found.len(), 12);
    let _ = fs::remove_dir_all(&dir);
}
