//! Renders transactions for `apitap flows`: JSON Lines (the documented record, one object per
//! transaction) or an aligned table for people.
//!
//! Invariant: field names and meanings of the JSON record are a public contract (Zeek http.log
//! semantics for the shared fields); add fields, never rename or remove them.

use crate::transaction::{Headers, Transaction};
use serde::Serialize;
use std::borrow::Cow;
use std::io::{self, Write};

/// The `apitap flows` JSON record.
#[derive(Serialize)]
pub struct FlowRecord<'a> {
    /// Epoch seconds of the first request packet.
    pub ts: f64,
    pub flow: &'a str,
    pub orig_h: String,
    pub orig_p: u16,
    pub resp_h: String,
    pub resp_p: u16,
    pub trans_depth: u32,
    pub method: Option<&'a str>,
    pub host: Option<Cow<'a, str>>,
    pub uri: Option<&'a str>,
    pub version: Option<&'static str>,
    pub user_agent: Option<Cow<'a, str>>,
    pub request_body_len: u64,
    pub response_body_len: u64,
    pub status_code: Option<u16>,
    pub status_msg: Option<&'a str>,
    pub request_content_type: Option<Cow<'a, str>>,
    pub response_content_type: Option<Cow<'a, str>>,
    /// Seconds from request start to response end.
    pub duration: f64,
    pub flags: &'a [&'static str],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Transfer-level body lengths (de-chunked, before content decoding).
    pub request_wire_len: u64,
    pub response_wire_len: u64,
}

/// A header value as text, trimmed; borrowed when it is valid UTF-8 (the common case), so a
/// record costs no allocation per header.
fn header_text<'a>(h: &'a Headers, name: &str) -> Option<Cow<'a, str>> {
    h.get(name).map(|v| match String::from_utf8_lossy(v) {
        Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
        Cow::Owned(s) => Cow::Owned(s.trim().to_string()),
    })
}

impl<'a> FlowRecord<'a> {
    pub fn new(t: &'a Transaction) -> FlowRecord<'a> {
        let req = t.request.as_ref();
        let resp = t.response.as_ref();
        FlowRecord {
            ts: round_micros(t.ts().as_secs_f64()),
            flow: &t.conn.flow_id,
            orig_h: t.conn.client.to_string(),
            orig_p: t.conn.client_port,
            resp_h: t.conn.server.to_string(),
            resp_p: t.conn.server_port,
            trans_depth: t.depth,
            method: req.map(|r| r.method.as_str()),
            host: req.and_then(|r| header_text(&r.headers, "host")),
            uri: req.map(|r| r.uri.as_str()),
            version: req
                .map(|r| r.version.as_str())
                .or_else(|| resp.map(|r| r.version.as_str())),
            user_agent: req.and_then(|r| header_text(&r.headers, "user-agent")),
            request_body_len: req.map(|r| r.body.len).unwrap_or(0),
            response_body_len: resp.map(|r| r.body.len).unwrap_or(0),
            status_code: resp.map(|r| r.status),
            status_msg: resp.map(|r| r.reason.as_str()),
            request_content_type: req.and_then(|r| header_text(&r.headers, "content-type")),
            response_content_type: resp.and_then(|r| header_text(&r.headers, "content-type")),
            duration: round_micros(t.duration().as_secs_f64()),
            flags: &t.flags,
            vlan: t.conn.vlan,
            request_wire_len: req.map(|r| r.body.wire_len).unwrap_or(0),
            response_wire_len: resp.map(|r| r.body.wire_len).unwrap_or(0),
        }
    }
}

fn round_micros(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Output formats of `apitap flows`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Jsonl,
    Table,
}

/// Writes transactions in one format, keeping what the table needs between rows.
pub struct FlowWriter<W: Write> {
    out: W,
    format: Format,
    rows: u64,
    /// One rendered record, reused: serialising into memory keeps I/O errors (a closed pipe)
    /// apart from serialisation errors.
    line: Vec<u8>,
}

impl<W: Write> FlowWriter<W> {
    pub fn new(out: W, format: Format) -> Self {
        FlowWriter {
            out,
            format,
            rows: 0,
            line: Vec::with_capacity(1024),
        }
    }

    pub fn write(&mut self, t: &Transaction) -> io::Result<()> {
        let rec = FlowRecord::new(t);
        match self.format {
            Format::Jsonl => {
                self.line.clear();
                serde_json::to_writer(&mut self.line, &rec).map_err(io::Error::other)?;
                self.line.push(b'\n');
                self.out.write_all(&self.line)?;
            }
            Format::Table => {
                if self.rows == 0 {
                    writeln!(
                        self.out,
                        "{:<17} {:<21} {:<21} {:<7} {:<24} {:<40} {:>6} {:>9} {:>9}  flags",
                        "ts",
                        "client",
                        "server",
                        "method",
                        "host",
                        "uri",
                        "status",
                        "req_len",
                        "resp_len"
                    )?;
                }
                writeln!(
                    self.out,
                    "{:<17.6} {:<21} {:<21} {:<7} {:<24} {:<40} {:>6} {:>9} {:>9}  {}",
                    rec.ts,
                    format!("{}:{}", rec.orig_h, rec.orig_p),
                    format!("{}:{}", rec.resp_h, rec.resp_p),
                    clip(rec.method.unwrap_or("-"), 7),
                    clip(rec.host.as_deref().unwrap_or("-"), 24),
                    clip(rec.uri.unwrap_or("-"), 40),
                    rec.status_code
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "-".into()),
                    rec.request_body_len,
                    rec.response_body_len,
                    rec.flags.join(",")
                )?;
            }
        }
        self.rows += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Shortens a cell to `width` characters, marking the cut with `~`.
fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(width.saturating_sub(1)).collect();
        c.push('~');
        c
    }
}
