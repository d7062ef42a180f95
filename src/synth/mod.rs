//! Deterministic synthetic traffic: pcap captures of an invented REST/JSON API together with a
//! ground-truth JSON Lines file of every transaction, for golden tests, conformance checks and
//! benchmarks.
//!
//! Layers, bottom up: `rng` (seeded SplitMix64), `pcap_writer` (streaming pcap output), `frame`
//! (Ethernet/VLAN/IP/TCP and tunnel serialisation), `tcp` (one conversation with capture
//! impairments), `api` (the shop API scenario). [`generate`] interleaves many conversations by
//! timestamp into one pcap.
//!
//! Invariants: nothing here reads a clock or the OS, so the same [`GenOptions`] give
//! byte-identical output. Memory is bounded by `max_concurrent_connections` finished
//! conversations (each bounded by the scenario's body sizes), never by the capture size, so
//! `target_bytes` can ask for gigabytes. Packet timestamps in the output never go backwards.

pub mod api;
pub mod frame;
#[cfg(test)]
mod oracle;
pub mod pcap_writer;
pub mod rng;
pub mod security;
pub mod tcp;

pub use api::{Scenario, TruthRecord};

use crate::common::{Duration, Timestamp};
use api::ApiModel;
use pcap_writer::{PcapWriter, LINKTYPE_ETHERNET};
use rng::Rng;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use tcp::Packet;

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenOptions {
    pub scenario: Scenario,
    /// Seed for every random choice; the same seed gives the same bytes.
    pub seed: u64,
    /// Keep opening connections until the pcap holds at least this many bytes (benchmarks).
    /// When set, `max_connections` is ignored.
    pub target_bytes: Option<u64>,
    /// Connections to generate without a byte target; `None` takes the scenario's default.
    pub max_connections: Option<u32>,
    /// Distinct users the clients act as; `None` takes the scenario's default.
    pub max_users: Option<u32>,
    /// Connections open at the same time, interleaved in the capture (default 16, at least 1).
    /// Bounds memory: each open connection is held whole until its last packet is written.
    pub max_concurrent_connections: u32,
    /// Capture start, seconds since the Unix epoch (default 2026-01-05 09:00:00 UTC).
    pub start_secs: u64,
}

impl GenOptions {
    pub fn new(scenario: Scenario, seed: u64) -> GenOptions {
        GenOptions {
            scenario,
            seed,
            target_bytes: None,
            max_connections: None,
            max_users: None,
            max_concurrent_connections: if scenario == Scenario::Bench { 64 } else { 16 },
            start_secs: 1_767_603_600,
        }
    }
}

/// What [`generate`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenSummary {
    pub packets: u64,
    /// Bytes of the pcap file, headers included.
    pub bytes: u64,
    pub transactions: u64,
    pub connections: u64,
}

/// A connection whose packets are being merged into the output.
struct Open {
    packets: std::vec::IntoIter<Packet>,
    head: Option<Packet>,
}

/// Writes the scenario's capture to `pcap` and, when given, one [`TruthRecord`] per line to
/// `truth`, in connection order then transaction order.
pub fn generate(
    opts: &GenOptions,
    pcap: impl Write,
    truth: Option<impl Write>,
) -> io::Result<GenSummary> {
    let mut out = PcapWriter::new(
        BufWriter::with_capacity(1 << 20, pcap),
        LINKTYPE_ETHERNET,
        0,
    )?;
    let mut truth = truth.map(|t| BufWriter::with_capacity(1 << 16, t));
    let users = opts
        .max_users
        .unwrap_or_else(|| opts.scenario.default_users());
    let mut model = ApiModel::new(opts.scenario, opts.seed, users);
    let mut arrivals = Rng::new(opts.seed).fork(0x6172_7269_7661_6c73);
    let max_conns = u64::from(
        opts.max_connections
            .unwrap_or_else(|| opts.scenario.default_connections()),
    );
    let concurrency = opts.max_concurrent_connections.max(1) as usize;
    let mut summary = GenSummary::default();
    let mut open: Vec<Option<Open>> = Vec::with_capacity(concurrency);
    // (next packet time, connection serial, slot): the serial breaks ties deterministically.
    let mut heap: BinaryHeap<Reverse<(Timestamp, u64, usize)>> = BinaryHeap::new();
    let mut next_start = Timestamp::from_secs_nanos(opts.start_secs as i64, 0);
    let mut last_written = next_start;
    let mut line = Vec::with_capacity(512);
    loop {
        let want_more = match opts.target_bytes {
            Some(t) => out.bytes() < t,
            None => summary.connections < max_conns,
        };
        if want_more && heap.len() < concurrency {
            // A new connection never opens before the last written packet, which keeps the
            // merged output in time order.
            let start = next_start.max(last_written);
            next_start = start.add(Duration::from_nanos(arrivals.range(50_000, 3_000_000)));
            let serial = summary.connections;
            let conn = model.connection(serial, start);
            summary.connections += 1;
            summary.transactions += conn.truth.len() as u64;
            if let Some(t) = truth.as_mut() {
                for rec in &conn.truth {
                    line.clear();
                    serde_json::to_writer(&mut line, rec).map_err(io::Error::other)?;
                    line.push(b'\n');
                    t.write_all(&line)?;
                }
            }
            let mut packets = conn.capture.packets.into_iter();
            if let Some(first) = packets.next() {
                let slot = match open.iter().position(|o| o.is_none()) {
                    Some(i) => i,
                    None => {
                        open.push(None);
                        open.len() - 1
                    }
                };
                heap.push(Reverse((first.ts, serial, slot)));
                if let Some(o) = open.get_mut(slot) {
                    *o = Some(Open {
                        packets,
                        head: Some(first),
                    });
                }
            }
            continue;
        }
        let Some(Reverse((_, serial, slot))) = heap.pop() else {
            break;
        };
        let Some(Some(o)) = open.get_mut(slot) else {
            continue;
        };
        if let Some(p) = o.head.take() {
            out.write_packet_with_orig_len(p.ts, &p.data, p.orig_len)?;
            last_written = last_written.max(p.ts);
        }
        match o.packets.next() {
            Some(p) => {
                heap.push(Reverse((p.ts, serial, slot)));
                o.head = Some(p);
            }
            None => {
                if let Some(s) = open.get_mut(slot) {
                    *s = None;
                }
            }
        }
    }
    out.flush()?;
    if let Some(t) = truth.as_mut() {
        t.flush()?;
    }
    summary.packets = out.packets();
    summary.bytes = out.bytes();
    Ok(summary)
}

/// The captures shipped in `captures/`: file stem, scenario, seed.
pub const BUNDLED: [(&str, Scenario, u64); 5] = [
    ("api-basic", Scenario::Basic, 1),
    ("api-pipelined", Scenario::Pipelined, 2),
    ("api-vlan-ipv6", Scenario::VlanIpv6, 3),
    ("api-impaired", Scenario::Impaired, 4),
    ("api-tunnels", Scenario::Tunnels, 5),
];

/// Writes every bundled capture and its truth file (`<name>.pcap`, `<name>.truth.jsonl`)
/// into `dir`, which must exist.
pub fn write_bundled_captures(dir: &Path) -> io::Result<()> {
    for (name, scenario, seed) in BUNDLED {
        let opts = GenOptions::new(scenario, seed);
        let pcap = std::fs::File::create(dir.join(format!("{name}.pcap")))?;
        let truth = std::fs::File::create(dir.join(format!("{name}.truth.jsonl")))?;
        generate(&opts, pcap, Some(truth))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::oracle::{self, Decoder};
    use super::*;
    use serde_json::Value;
    use std::collections::{BTreeSet, HashMap};

    fn run(opts: &GenOptions) -> (Vec<u8>, Vec<Value>, GenSummary) {
        let mut pcap = Vec::new();
        let mut truth = Vec::new();
        let sum = generate(opts, &mut pcap, Some(&mut truth)).unwrap();
        let lines = String::from_utf8(truth).unwrap();
        let recs = lines
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (pcap, recs, sum)
    }

    fn segments(pcap: &[u8]) -> Vec<oracle::Seg> {
        let (lt, recs) = pcap_writer::read_pcap(pcap).expect("a pcap");
        assert_eq!(lt, LINKTYPE_ETHERNET);
        assert!(
            recs.windows(2).all(|w| w[0].ts <= w[1].ts),
            "time never goes back"
        );
        let mut d = Decoder::default();
        recs.iter().filter_map(|r| d.frame(&r.data)).collect()
    }

    /// Parses every connection's HTTP back out of the packets and checks it against the truth
    /// file, field by field. Returns the truth records for feature checks.
    fn check_clean(scenario: Scenario, seed: u64) -> Vec<Value> {
        let opts = GenOptions::new(scenario, seed);
        let (pcap, truth, sum) = run(&opts);
        assert_eq!(sum.bytes, pcap.len() as u64);
        assert_eq!(sum.transactions, truth.len() as u64);
        let conns = oracle::connections(&segments(&pcap), &[80, 8080]);
        assert_eq!(conns.len() as u64, sum.connections);
        let mut parsed: HashMap<(String, String), Vec<Value>> = HashMap::new();
        for c in &conns {
            let (cl, sv) = (c.client.unwrap().to_string(), c.server.unwrap().to_string());
            let (q, a) = (c.prefix(0), c.prefix(1));
            assert_eq!(
                q.len(),
                c.bytes[0].len(),
                "{scenario:?}: no hole in a clean capture"
            );
            let reqs = oracle::parse_requests(&q);
            let methods: Vec<String> = reqs.iter().map(|r| r.method.clone()).collect();
            let resps = oracle::parse_responses(&a, &methods);
            assert_eq!(
                reqs.len(),
                resps.len(),
                "{scenario:?} {cl}: one response per request"
            );
            let list = parsed.entry((cl.clone(), sv.clone())).or_default();
            for (r, s) in reqs.iter().zip(&resps) {
                list.push(serde_json::json!({
                    "client": cl, "server": sv, "trans_depth": list.len() + 1,
                    "method": r.method, "host": r.host, "uri": r.uri,
                    "status_code": s.status, "interim": s.interim,
                    "request_body_len": r.body_len, "response_body_len": s.decoded_len,
                    "impaired": false,
                }));
            }
        }
        let mut want: HashMap<(String, String), Vec<Value>> = HashMap::new();
        for t in &truth {
            let key = (
                t["client"].as_str().unwrap().to_string(),
                t["server"].as_str().unwrap().to_string(),
            );
            let mut v = t.clone();
            let o = v.as_object_mut().unwrap();
            for k in ["route", "ts", "impairments"] {
                o.remove(k);
            }
            want.entry(key).or_default().push(v);
        }
        assert_eq!(parsed.len(), want.len());
        for (k, got) in &parsed {
            assert_eq!(Some(got), want.get(k), "{scenario:?} {k:?}");
        }
        truth
    }

    fn has(truth: &[Value], f: impl Fn(&Value) -> bool) -> bool {
        truth.iter().any(f)
    }

    #[test]
    fn basic_truth_matches_the_packets_and_covers_the_api() {
        let t = check_clean(Scenario::Basic, 1);
        let routes: BTreeSet<&str> = t.iter().map(|v| v["route"].as_str().unwrap()).collect();
        assert!(routes.len() >= 12, "{routes:?}");
        let statuses: BTreeSet<u64> = t
            .iter()
            .map(|v| v["status_code"].as_u64().unwrap())
            .collect();
        for s in [200, 201, 204, 401, 404] {
            assert!(statuses.contains(&s), "{s} in {statuses:?}");
        }
        let clients: BTreeSet<&str> = t.iter().map(|v| v["client"].as_str().unwrap()).collect();
        assert!(clients.len() > 50);
        assert!(
            has(&t, |v| v["trans_depth"].as_u64() >= Some(5)),
            "keep-alive"
        );
    }

    #[test]
    fn pipelined_truth_matches_and_has_interim_head_and_not_modified() {
        let t = check_clean(Scenario::Pipelined, 2);
        assert!(has(&t, |v| v["interim"] == serde_json::json!([100])));
        assert!(has(&t, |v| v["interim"] == serde_json::json!([103])));
        assert!(has(&t, |v| v["method"] == "HEAD" && v["response_body_len"] == 0));
        assert!(has(&t, |v| v["status_code"] == 304));
        assert!(has(&t, |v| v["status_code"] == 204));
    }

    #[test]
    fn vlan_ipv6_and_tunnel_truth_matches_the_packets() {
        let t = check_clean(Scenario::VlanIpv6, 3);
        assert!(has(&t, |v| v["client"].as_str().unwrap().starts_with('[')));
        assert!(has(&t, |v| !v["client"].as_str().unwrap().starts_with('[')));
        check_clean(Scenario::Tunnels, 5);
    }

    #[test]
    fn impaired_flag_says_exactly_which_transactions_lost_bytes() {
        let start = Timestamp::from_secs_nanos(1_767_603_600, 0);
        let mut bad = api::ApiModel::new(Scenario::Impaired, 4, 500);
        let mut good = api::ApiModel::new(Scenario::Impaired, 4, 500);
        good.impairments = false;
        let mut kinds = BTreeSet::new();
        let (mut impaired, mut intact) = (0, 0);
        for serial in 0..48 {
            let b = bad.connection(serial, start);
            let g = good.connection(serial, start);
            let strip = |v: &[TruthRecord]| -> Vec<TruthRecord> {
                v.iter()
                    .map(|t| TruthRecord {
                        impaired: false,
                        impairments: vec![],
                        ..t.clone()
                    })
                    .collect()
            };
            assert_eq!(
                strip(&b.truth),
                strip(&g.truth),
                "impairments change no transaction"
            );
            assert!(g
                .truth
                .iter()
                .all(|t| !t.impaired && t.impairments.is_empty()));
            let cfg = &b.config;
            let isn = [cfg.client_isn, cfg.server_isn];
            let mut pcap = pcap_writer::PcapWriter::new(Vec::new(), LINKTYPE_ETHERNET, 0).unwrap();
            for p in &b.capture.packets {
                pcap.write_packet_with_orig_len(p.ts, &p.data, p.orig_len)
                    .unwrap();
            }
            let seen =
                oracle::streams_for(&segments(&pcap.into_inner()), cfg.client, cfg.server, isn);
            let mut pcap = pcap_writer::PcapWriter::new(Vec::new(), LINKTYPE_ETHERNET, 0).unwrap();
            for p in &g.capture.packets {
                pcap.write_packet(p.ts, &p.data).unwrap();
            }
            let clean =
                oracle::streams_for(&segments(&pcap.into_inner()), cfg.client, cfg.server, isn);
            // First copy wins: every captured byte is the true byte.
            for d in 0..2 {
                for (o, b) in &seen[d] {
                    assert_eq!(
                        clean[d].get(o),
                        Some(b),
                        "serial {serial} dir {d} offset {o}"
                    );
                }
            }
            for (t, r) in b.truth.iter().zip(&b.ranges) {
                let whole = (0..2).all(|d| (r[d].0..r[d].1).all(|o| seen[d].contains_key(&o)));
                assert_eq!(
                    t.impaired, !whole,
                    "serial {serial} depth {}",
                    t.trans_depth
                );
                if t.impaired {
                    impaired += 1;
                    assert!(!t.impairments.is_empty());
                } else {
                    intact += 1;
                }
                kinds.extend(t.impairments.iter().copied());
            }
            assert!(b.config.client_isn > u32::MAX - 2_000, "wraparound ISN");
        }
        assert!(
            impaired > 10 && intact > 10,
            "{impaired} impaired, {intact} intact"
        );
        let all: BTreeSet<&str> = tcp::Impairment::ALL.iter().map(|i| i.name()).collect();
        assert_eq!(kinds, all);
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let mut o = GenOptions::new(Scenario::Impaired, 9);
        o.max_connections = Some(20);
        let a = run(&o);
        let b = run(&o);
        assert_eq!(a.0, b.0);
        assert_eq!(a.1, b.1);
        o.seed = 10;
        assert_ne!(run(&o).0, a.0);
    }

    #[test]
    fn byte_target_streams_at_least_that_much() {
        struct Count(u64);
        impl Write for Count {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0 += b.len() as u64;
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut o = GenOptions::new(Scenario::Bench, 1);
        o.target_bytes = Some(3_000_000);
        let mut c = Count(0);
        let s = generate(&o, &mut c, None::<io::Sink>).unwrap();
        assert!(s.bytes >= 3_000_000 && s.bytes < 4_000_000, "{s:?}");
        assert_eq!(s.bytes, c.0);
        assert!(s.transactions > s.connections && s.connections > 10);
    }
}
