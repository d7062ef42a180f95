//! The daemon's HTTP server: `/metrics`, `/healthz`, `/readyz`.
//!
//! It runs on the main thread's single-threaded tokio runtime, apart from the packet path, so
//! a slow scraper can never delay capture. It binds to loopback by default.
//!
//! - `GET /metrics`: the Prometheus text exposition (format 0.0.4); the alert sinks' counters
//!   are copied in first, so a scrape sees them as of that moment.
//! - `GET /healthz`: 200 while the process serves requests at all.
//! - `GET /readyz`: 200 while packets are being captured; 503 while starting, draining, or
//!   after a replay ended (`--hold`).
//!
//! Invariants: at most `max_connections` connections are served at once (the rest wait in the
//! kernel's accept queue), and each is closed after `request_timeout_secs`, so idle or slow
//! clients cannot pile up. Answers never include request data.

use crate::telemetry::metrics::AlertPublisher;
use crate::telemetry::Metrics;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// What the handlers read.
pub struct State {
    pub metrics: Metrics,
    /// True while packets are being captured: the capture thread clears it as reading ends.
    pub ready: Arc<AtomicBool>,
    /// The alert sinks' counters, copied into `metrics` before each scrape is rendered.
    pub alerts: Option<AlertPublisher>,
}

const TEXT: &str = "text/plain; charset=utf-8";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

fn answer(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// The answer to one request.
pub fn respond(state: &State, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = answer(StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET and HEAD\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/metrics" => {
            if let Some(a) = &state.alerts {
                a.publish(&state.metrics);
            }
            answer(StatusCode::OK, PROMETHEUS, state.metrics.render())
        }
        "/healthz" => answer(StatusCode::OK, TEXT, "ok\n"),
        "/readyz" if state.ready.load(Ordering::Acquire) => answer(StatusCode::OK, TEXT, "ready\n"),
        "/readyz" => answer(StatusCode::SERVICE_UNAVAILABLE, TEXT, "not capturing\n"),
        _ => answer(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: try /metrics, /healthz or /readyz\n",
        ),
    }
}

/// Serves until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    max_connections: usize,
    timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.changed() => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "Metrics server accept failed.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let r = respond(&state, req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            // The timeout covers the whole connection, keep-alive included.
            let _ = tokio::time::timeout(timeout, conn).await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_status_codes() {
        let state = State {
            metrics: Metrics::new(),
            ready: Arc::new(AtomicBool::new(false)),
            alerts: None,
        };
        let cases = [
            (Method::GET, "/metrics", StatusCode::OK),
            (Method::HEAD, "/healthz", StatusCode::OK),
            (Method::GET, "/readyz", StatusCode::SERVICE_UNAVAILABLE),
            (Method::GET, "/", StatusCode::NOT_FOUND),
            (Method::POST, "/metrics", StatusCode::METHOD_NOT_ALLOWED),
        ];
        for (m, p, want) in cases {
            assert_eq!(respond(&state, &m, p).status(), want, "{m} {p}");
        }
        state.ready.store(true, Ordering::Relaxed);
        assert_eq!(
            respond(&state, &Method::GET, "/readyz").status(),
            StatusCode::OK
        );
        let r = respond(&state, &Method::GET, "/metrics");
        assert_eq!(r.headers()[CONTENT_TYPE], PROMETHEUS);
    }
}
