//! The on-disk envelope of a model: versioned, checksummed, written atomically.
//!
//! A model file is one header line of JSON — `{"format":"apitap-model","version":N,
//! "bytes":L,"sha256":"…"}` — then exactly `L` bytes of JSON body. Writing goes to a temporary
//! file in the same directory, which is fsynced, renamed over the old file, and the directory
//! fsynced: a crash leaves the old model or the new one, never half of one.
//!
//! Invariant: loading never panics and never returns a silently empty model. A missing, corrupt,
//! truncated or newer-version file is an error that names the file and says what to do.

use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The `format` value every model file carries.
pub const FORMAT: &str = "apitap-model";

/// Files larger than this are refused instead of read into memory.
pub const MAX_MODEL_BYTES: u64 = 4 << 30;

#[derive(Debug)]
pub struct StoreError {
    pub file: PathBuf,
    pub reason: String,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.reason)
    }
}

impl std::error::Error for StoreError {}

#[derive(Serialize, serde::Deserialize)]
struct Header {
    format: String,
    version: u32,
    bytes: u64,
    sha256: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `body` as format `version` to `path`, atomically.
pub fn save<T: Serialize>(path: &Path, version: u32, body: &T) -> Result<(), StoreError> {
    let fail = |reason: String| StoreError {
        file: path.to_path_buf(),
        reason,
    };
    let data = serde_json::to_vec(body).map_err(|e| fail(format!("cannot serialise: {e}")))?;
    let header = Header {
        format: FORMAT.to_string(),
        version,
        bytes: data.len() as u64,
        sha256: hex(&Sha256::digest(&data)),
    };
    let mut line = serde_json::to_vec(&header).map_err(|e| fail(e.to_string()))?;
    line.push(b'\n');
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&line)?;
        f.write_all(&data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename is durable only once the directory entry is.
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        fail(format!("cannot write: {e}"))
    })
}

/// Reads a file written by [`save`], accepting format versions up to `max_version`.
/// Returns the version found with the body.
pub fn load<T: DeserializeOwned>(path: &Path, max_version: u32) -> Result<(u32, T), StoreError> {
    let fail = |reason: String| StoreError {
        file: path.to_path_buf(),
        reason,
    };
    let mut f = File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len > MAX_MODEL_BYTES {
        return Err(fail(format!(
            "{len} bytes is larger than the {MAX_MODEL_BYTES}-byte limit"
        )));
    }
    let mut all = Vec::with_capacity(len as usize);
    f.read_to_end(&mut all)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if all.is_empty() {
        return Err(fail(
            "empty file (an interrupted first write?); rebuild it with `apitap learn`".into(),
        ));
    }
    let nl = all
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| fail("no header line: not an apitap model, or truncated".into()))?;
    let header: Header = serde_json::from_slice(&all[..nl])
        .map_err(|_| fail("the header line is not an apitap model header".into()))?;
    if header.format != FORMAT {
        return Err(fail(format!(
            "format {:?} is not {FORMAT:?}",
            header.format
        )));
    }
    if header.version > max_version {
        return Err(fail(format!(
            "model format version {} is newer than this apitap reads (up to {max_version}); upgrade apitap",
            header.version
        )));
    }
    let body = &all[nl + 1..];
    if body.len() as u64 != header.bytes {
        return Err(fail(format!(
            "truncated or padded: the header promises {} bytes of body, the file has {}",
            header.bytes,
            body.len()
        )));
    }
    if hex(&Sha256::digest(body)) != header.sha256 {
        return Err(fail(
            "corrupt: the body does not match its SHA-256 checksum".into(),
        ));
    }
    let value = serde_json::from_slice(body).map_err(|e| fail(format!("unreadable body: {e}")))?;
    Ok((header.version, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "apitap-store-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn sample() -> BTreeMap<String, Vec<u64>> {
        BTreeMap::from([("a".to_string(), vec![1, 2, 3]), ("b".to_string(), vec![])])
    }

    #[test]
    fn round_trip_and_overwrite() {
        let p = dir().join("model.json");
        save(&p, 1, &sample()).unwrap();
        let (v, back): (u32, BTreeMap<String, Vec<u64>>) = load(&p, 1).unwrap();
        assert_eq!((v, back), (1, sample()));
        let mut other = sample();
        other.insert("c".into(), vec![9]);
        save(&p, 1, &other).unwrap();
        let (_, back): (u32, BTreeMap<String, Vec<u64>>) = load(&p, 1).unwrap();
        assert_eq!(back, other);
        let leftovers: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left behind");
    }

    /// Every way a file can be damaged gives an error naming the file, never a panic or an
    /// empty model.
    #[test]
    fn damaged_files_are_clear_errors() {
        let d = dir();
        let p = d.join("m.json");
        save(&p, 2, &sample()).unwrap();
        let good = fs::read(&p).unwrap();
        let mut flipped = good.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x01;
        let newer =
            String::from_utf8(good.clone())
                .unwrap()
                .replacen("\"version\":2", "\"version\":9", 1);
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "empty file"),
            ("truncated", good[..good.len() - 5].to_vec(), "truncated"),
            (
                "header only",
                good[..good.iter().position(|b| *b == b'\n').unwrap()].to_vec(),
                "no header line",
            ),
            ("bit flip", flipped, "checksum"),
            ("newer", newer.into_bytes(), "newer than this apitap"),
            (
                "not a model",
                b"{\"hello\":1}\n{}".to_vec(),
                "not an apitap model header",
            ),
            (
                "binary",
                vec![0xff, 0x00, 0x13, b'\n', 0x01],
                "not an apitap model header",
            ),
        ];
        for (name, bytes, want) in cases {
            fs::write(&p, &bytes).unwrap();
            let e = load::<BTreeMap<String, Vec<u64>>>(&p, 2)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&p.display().to_string()), "{name}: {e}");
            assert!(e.contains(want), "{name}: {e} lacks {want}");
        }
        let e = load::<BTreeMap<String, Vec<u64>>>(&d.join("absent.json"), 2).unwrap_err();
        assert!(e.to_string().contains("cannot open"));
    }
}
