//! Prometheus Alertmanager sink: `POST <url>/api/v2/alerts` with postable alerts.
//!
//! Mapping (see also `AlertmanagerSinkConfig`): labels `alertname` = `apitap_<kind>`, `kind`,
//! `severity`, `route`, `owasp` (absent when the kind has no category), `host`, `method`,
//! `alert_id`; annotations `summary`, `evidence` (compact JSON), `client`, `confidence`;
//! `startsAt` = `first_seen`, `endsAt` = `last_seen + resolve_timeout_secs`, `generatorURL`
//! from the configured template.
//!
//! Invariant: the label set is a function of the alert id's inputs only, so a re-sent alert
//! (at-least-once delivery) updates the same Alertmanager alert instead of creating another.
//! Times are capture time: alerts from an old capture replay arrive already resolved.

use serde_json::{json, Map, Value};

use super::network::Format;
use crate::alert::time;
use crate::alert::Alert;
use crate::common::Duration;

pub(crate) struct Alertmanager {
    url: reqwest::Url,
    resolve_timeout: Duration,
    generator_url: Option<String>,
}

impl Alertmanager {
    pub(crate) fn new(
        base_url: &str,
        resolve_timeout_secs: u64,
        generator_url: Option<String>,
    ) -> Result<Alertmanager, String> {
        let url = format!("{}/api/v2/alerts", base_url.trim_end_matches('/'));
        Ok(Alertmanager {
            url: reqwest::Url::parse(&url).map_err(|e| e.to_string())?,
            resolve_timeout: Duration::from_secs(resolve_timeout_secs),
            generator_url,
        })
    }

    /// The postable alert for `alert`.
    pub(crate) fn to_postable(&self, alert: &Alert) -> Value {
        let mut labels = Map::new();
        let mut label = |k: &str, v: &str| {
            labels.insert(k.to_string(), Value::String(v.to_string()));
        };
        label("alertname", &format!("apitap_{}", alert.kind.name()));
        label("kind", alert.kind.name());
        label("severity", alert.severity.name());
        label("route", &alert.endpoint.route);
        if let Some(o) = alert.owasp {
            label("owasp", o.name());
        }
        label("host", &alert.endpoint.host);
        label("method", &alert.endpoint.method);
        label("alert_id", &alert.id);
        let ip = alert
            .client
            .ip
            .map_or_else(|| "any client".to_owned(), |ip| ip.to_string());
        let client = match &alert.client.identity {
            Some(identity) => format!("{ip} ({identity})"),
            None => ip,
        };
        let mut v = json!({
            "labels": labels,
            "annotations": {
                "summary": alert.summary,
                "evidence": Value::Object(alert.evidence.clone()).to_string(),
                "client": client,
                "confidence": format!("{:.2}", alert.confidence),
            },
            "startsAt": time::format(alert.first_seen),
            "endsAt": time::format(alert.last_seen.add(self.resolve_timeout)),
        });
        if let (Some(template), Some(obj)) = (&self.generator_url, v.as_object_mut()) {
            obj.insert(
                "generatorURL".into(),
                Value::String(template.replace("{id}", &alert.id)),
            );
        }
        v
    }
}

impl Format for Alertmanager {
    fn encode(&self, alert: &Alert) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&self.to_postable(alert))
    }

    fn request(&self, client: &reqwest::Client, body: Vec<u8>) -> reqwest::RequestBuilder {
        client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
    }
}
