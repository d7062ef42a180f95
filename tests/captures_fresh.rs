//! The bundled captures in `captures/` must be exactly what the generator writes today: this
//! regenerates them into a temporary directory and compares bytes. That checks determinism and
//! that nobody changed the generator without refreshing the captures.
//!
//! To refresh them after a deliberate change: `APITAP_UPDATE_CAPTURES=1 cargo test --test
//! captures_fresh`.

use apitap::synth::{write_bundled_captures, BUNDLED};
use std::path::PathBuf;

#[test]
fn bundled_captures_are_fresh_and_deterministic() {
    let committed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("captures");
    if std::env::var_os("APITAP_UPDATE_CAPTURES").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(&committed).unwrap();
        write_bundled_captures(&committed).unwrap();
        return;
    }
    let tmp = std::env::temp_dir().join(format!("apitap-captures-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    write_bundled_captures(&tmp).unwrap();
    let mut stale = Vec::new();
    for (name, _, _) in BUNDLED {
        for file in [format!("{name}.pcap"), format!("{name}.truth.jsonl")] {
            let fresh = std::fs::read(tmp.join(&file)).unwrap();
            let old = std::fs::read(committed.join(&file)).unwrap_or_default();
            if fresh != old {
                stale.push(file);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(
        stale.is_empty(),
        "captures/ is stale for {stale:?}; rerun with APITAP_UPDATE_CAPTURES=1 and commit"
    );
}
