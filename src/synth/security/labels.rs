//! Ground-truth labels of the attack capture: one JSON Lines record per incident.
//!
//! Invariants: `kind` is an [`AlertKind`] name; `start <= end`, both RFC 3339 capture time;
//! `client_ip` is `None` only for incidents without one client (distributed stuffing, error
//! spike, endpoint volume spike); `route` is the spec's template, `None` for incidents that span
//! routes.

use crate::alert::AlertKind;
use crate::common::Timestamp;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// One labelled incident.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Label {
    /// `<kind>-<n>`, unique in the file.
    pub id: String,
    pub kind: AlertKind,
    /// First request of the incident.
    #[serde(with = "crate::alert::time::rfc3339")]
    pub start: Timestamp,
    /// Last request of the incident.
    #[serde(with = "crate::alert::time::rfc3339")]
    pub end: Timestamp,
    /// The client's true address (after the load balancer's X-Forwarded-For).
    pub client_ip: Option<IpAddr>,
    pub host: String,
    pub method: Option<String>,
    /// Route template as the spec names it (`/api/v1/accounts/{accountId}`).
    pub route: Option<String>,
    /// How the incident is shaped, for a human reading a missed detection.
    pub description: String,
}

/// Reads a labels file's text; the error names the line.
pub fn parse_lines(text: &str) -> Result<Vec<Label>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}
