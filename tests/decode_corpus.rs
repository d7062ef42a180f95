//! Conformance smoke test: decode every capture of the shared third-party corpus.
//!
//! Set `APITAP_CORPUS` to the corpus root (for example `/work/shared/corpus`). Every `*.pcap`,
//! `*.pcapng` and `*.cap` below it is opened and every packet decoded; the test fails on a
//! panic, and when a capture known to hold HTTP (through VLANs, NFLOG, 802.11, IPv6 atomic
//! fragments and tunnels) yields no TCP segment carrying an HTTP start line. Per-file counts
//! are printed (`cargo test --test decode_corpus -- --nocapture`).

use apitap::capture::OfflineSource;
use apitap::wire::{DecodeConfig, Decoded, Decoder};
use std::path::{Path, PathBuf};

/// Captures that hold HTTP behind the link types and encapsulations the decoder must open,
/// relative to the corpus root.
const KNOWN_HTTP: &[&str] = &[
    "arkime/gre-erspan-vxlan.pcap",
    "arkime/twovlan.pcap",
    "arkime/nflog.pcap",
    "arkime/v6-http.pcap",
    "arkime/80211http.pcap",
    "arkime/http-simple-get.pcap",
    "zeek/traces/tunnels/vxlan-encapsulated-http.pcap",
    "zeek/traces/nflog-http.pcap",
    "zeek/traces/http-vlan-0.pcap",
    "zeek/traces/ipv6-http-atomic-frag.pcap",
    "wireshark/http.cap",
    "suricata-verify/bug-4810/pppoe-session-http.pcap",
];

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
            continue;
        }
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if matches!(ext, "pcap" | "pcapng" | "cap") {
            out.push(path);
        }
    }
}

#[derive(Default)]
struct FileCounts {
    packets: u64,
    tcp: u64,
    tcp_with_payload: u64,
    http_start_lines: u64,
}

/// Does this segment begin like an HTTP/1.x request or response?
fn looks_like_http(payload: &[u8]) -> bool {
    const STARTS: &[&[u8]] = &[b"GET ", b"POST ", b"PUT ", b"HEAD ", b"HTTP/1."];
    STARTS.iter().any(|s| payload.starts_with(s))
}

#[test]
fn decode_corpus() {
    let Some(root) = std::env::var_os("APITAP_CORPUS") else {
        println!("skipped: APITAP_CORPUS is not set");
        return;
    };
    let root = PathBuf::from(root);
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    assert!(!files.is_empty(), "no captures under {}", root.display());

    let mut failures = Vec::new();
    let mut unopened = 0;
    let mut totals = FileCounts::default();
    for path in &files {
        let rel = path
            .strip_prefix(&root)
            .unwrap_or(path)
            .display()
            .to_string();
        let mut src = match OfflineSource::open(std::slice::from_ref(path)) {
            Ok(s) => s,
            Err(e) => {
                println!("{rel}: not opened: {e}");
                unopened += 1;
                if KNOWN_HTTP.contains(&rel.as_str()) {
                    failures.push(format!("{rel}: not opened: {e}"));
                }
                continue;
            }
        };
        let mut dec = Decoder::new(DecodeConfig::default());
        let mut c = FileCounts::default();
        while let Some(pkt) = src.next_packet() {
            c.packets += 1;
            if let Decoded::Tcp(seg) = dec.decode(&pkt) {
                c.tcp += 1;
                if !seg.payload.is_empty() {
                    c.tcp_with_payload += 1;
                }
                if looks_like_http(seg.payload) {
                    c.http_start_lines += 1;
                }
            }
        }
        let s = dec.stats();
        println!(
            "{rel}: linktype {} packets {} tcp {} with_payload {} http_starts {} udp {} other_l4 {} \
             non_ip {} errors {} truncated {} reassembled {} tunnels {} unknown_linktype {}{}",
            src.linktype(),
            c.packets,
            c.tcp,
            c.tcp_with_payload,
            c.http_start_lines,
            s.udp,
            s.other_l4,
            s.non_ip,
            s.errors(),
            s.truncated,
            s.reassembled,
            s.tunnel_gre
                + s.tunnel_erspan
                + s.tunnel_vxlan
                + s.tunnel_geneve
                + s.tunnel_teredo
                + s.tunnel_ipip,
            s.unknown_linktype,
            if src.stats().warnings.is_empty() {
                ""
            } else {
                " (file ends early)"
            },
        );
        assert_eq!(s.packets, c.packets);
        if KNOWN_HTTP.contains(&rel.as_str()) && c.http_start_lines == 0 {
            failures.push(format!(
                "{rel}: expected HTTP in TCP segments, got {} segments ({} with payload)",
                c.tcp, c.tcp_with_payload
            ));
        }
        totals.packets += c.packets;
        totals.tcp += c.tcp;
        totals.tcp_with_payload += c.tcp_with_payload;
        totals.http_start_lines += c.http_start_lines;
    }
    for known in KNOWN_HTTP {
        if !root.join(known).is_file() {
            failures.push(format!("{known}: missing from the corpus"));
        }
    }
    println!(
        "total: {} files ({} not opened), {} packets, {} TCP segments, {} with payload, {} HTTP start lines",
        files.len(),
        unopened,
        totals.packets,
        totals.tcp,
        totals.tcp_with_payload,
        totals.http_start_lines
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
