//! The `apitap` binary on bad input: unusable input gets one line naming the file and a
//! non-zero exit; damaged parts of usable input are counted, reported and skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn apitap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_apitap"))
        .args(args)
        .output()
        .expect("run apitap")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("apitap-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn bundled(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("captures")
        .join(name)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn missing_file_is_one_line_naming_it() {
    let o = apitap(&["flows", "/nonexistent/nothing.pcap"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("/nonexistent/nothing.pcap"), "{e}");
    assert!(o.stdout.is_empty());
}

#[test]
fn non_pcap_file_is_one_line_naming_it() {
    let p = tmp("notes.pcap");
    std::fs::write(&p, b"this is a text file, not a capture\n").unwrap();
    let o = apitap(&["flows", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("notes.pcap"), "{e}");
}

#[test]
fn truncated_capture_keeps_what_was_read_and_names_the_file() {
    let full = std::fs::read(bundled("api-basic.pcap")).unwrap();
    let p = tmp("cut.pcap");
    // Cut in the middle of a packet record, two thirds in.
    std::fs::write(&p, &full[..full.len() * 2 / 3 + 7]).unwrap();
    let o = apitap(&["flows", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows = String::from_utf8_lossy(&o.stdout).lines().count();
    assert!(
        rows > 150,
        "only {rows} transactions from two thirds of the capture"
    );
    let e = stderr(&o);
    assert!(e.contains("cut.pcap"), "the warning names the file: {e}");
}

#[test]
fn garbage_frames_are_counted_and_skipped() {
    // A valid pcap header (Ethernet) followed by records of random bytes, then a real capture's
    // packets: garbage must not stop the real traffic from being parsed.
    let real = std::fs::read(bundled("api-basic.pcap")).unwrap();
    let mut data = real[..24].to_vec();
    let mut x: u32 = 0x1234_5678;
    for i in 0..200u32 {
        let len = 20 + (i % 90);
        data.extend_from_slice(&1_767_603_000u32.to_le_bytes());
        data.extend_from_slice(&0u32.to_le_bytes());
        data.extend_from_slice(&len.to_le_bytes());
        data.extend_from_slice(&len.to_le_bytes());
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            data.push(x as u8);
        }
    }
    data.extend_from_slice(&real[24..]);
    let p = tmp("garbage.pcap");
    std::fs::write(&p, &data).unwrap();
    let o = apitap(&["flows", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows = String::from_utf8_lossy(&o.stdout).lines().count();
    let clean = apitap(&[
        "flows",
        "--quiet",
        bundled("api-basic.pcap").to_str().unwrap(),
    ]);
    let clean_rows = String::from_utf8_lossy(&clean.stdout).lines().count();
    assert_eq!(rows, clean_rows, "garbage frames changed the transactions");
}

/// Splits a classic pcap into two files, alternating records: reading both must give exactly
/// the transactions of the original, which needs a true timestamp merge.
#[test]
fn several_files_are_merged_in_time_order() {
    let full = std::fs::read(bundled("api-impaired.pcap")).unwrap();
    let (header, mut rest) = full.split_at(24);
    let mut parts = [header.to_vec(), header.to_vec()];
    let mut n = 0;
    while rest.len() >= 16 {
        let caplen = u32::from_le_bytes(rest[8..12].try_into().unwrap()) as usize;
        let (rec, tail) = rest.split_at(16 + caplen);
        parts[n % 2].extend_from_slice(rec);
        rest = tail;
        n += 1;
    }
    let (a, b) = (tmp("even.pcap"), tmp("odd.pcap"));
    std::fs::write(&a, &parts[0]).unwrap();
    std::fs::write(&b, &parts[1]).unwrap();
    let merged = apitap(&["flows", "--quiet", b.to_str().unwrap(), a.to_str().unwrap()]);
    let whole = apitap(&[
        "flows",
        "--quiet",
        bundled("api-impaired.pcap").to_str().unwrap(),
    ]);
    assert_eq!(merged.status.code(), Some(0));
    assert!(!whole.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&merged.stdout),
        String::from_utf8_lossy(&whole.stdout)
    );
}

#[test]
fn summary_reports_counts_and_rates() {
    let o = apitap(&["flows", bundled("api-impaired.pcap").to_str().unwrap()]);
    let e = stderr(&o);
    let first = e
        .lines()
        .find(|l| l.contains(" packets, "))
        .expect("summary line");
    for word in [
        "packets",
        "bytes",
        "flows",
        "transactions",
        "gaps",
        "Gbps",
        "packets/s",
    ] {
        assert!(first.contains(word), "summary lacks {word}: {first}");
    }
    assert!(
        e.contains("anomalies:"),
        "impaired capture reports anomalies by name: {e}"
    );
}

#[test]
fn table_format_has_a_header_and_one_row_per_transaction() {
    let p = bundled("api-pipelined.pcap");
    let json = apitap(&["flows", "--quiet", p.to_str().unwrap()]);
    let table = apitap(&["flows", "--quiet", "--format", "table", p.to_str().unwrap()]);
    let rows = String::from_utf8_lossy(&json.stdout).lines().count();
    let lines: Vec<String> = String::from_utf8_lossy(&table.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), rows + 1);
    assert!(lines[0].starts_with("ts"));
}

#[test]
fn jsonl_records_have_exactly_the_documented_fields() {
    let p = bundled("api-basic.pcap");
    let o = apitap(&["flows", "--quiet", p.to_str().unwrap()]);
    let first = String::from_utf8_lossy(&o.stdout)
        .lines()
        .next()
        .unwrap()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    for f in [
        "ts",
        "flow",
        "orig_h",
        "orig_p",
        "resp_h",
        "resp_p",
        "trans_depth",
        "method",
        "host",
        "uri",
        "version",
        "user_agent",
        "request_body_len",
        "response_body_len",
        "status_code",
        "status_msg",
        "request_content_type",
        "response_content_type",
        "duration",
        "flags",
    ] {
        assert!(v.get(f).is_some(), "missing field {f} in {first}");
    }
    assert!(v["ts"].is_f64());
    assert!(v["flags"].is_array());
}
