//! Checksums of a model folder: `.mmaudio-checksums.json`.
//!
//! The file records, for each file of the folder (by path relative to the folder):
//! - the sums of its current content, keyed by size and modification time, so that repeated
//!   `fetch-weights`/`check-weights` runs do not hash gigabytes again;
//! - the reference it was verified against when it was downloaded (official MD5, the SHA-256
//!   the Hugging Face Hub reports for LFS files, or the Git blob SHA-1 of small files), so that
//!   `check-weights` can re-verify files that have no published checksum without network.
//!
//! The file is a cache plus a record: deleting it loses nothing that cannot be recomputed
//! except the Hub references, which `fetch-weights` fetches again.

use crate::error::{Error, Result};
use md5::Md5;
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Name of the checksum record inside a model folder.
pub const CHECKSUMS_FILE: &str = ".mmaudio-checksums.json";

/// Sums of a file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sums {
    pub size: u64,
    pub md5: String,
    pub sha256: String,
}

/// How a file was verified when it was downloaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    /// Size and SHA-256 of the verified content.
    pub size: u64,
    pub sha256: String,
    /// What the content was compared with, e.g. `official MD5 af93…` or
    /// `Hugging Face LFS SHA-256`.
    pub against: String,
    /// Where it was downloaded from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Seconds since the Unix epoch.
    #[serde(default)]
    pub at_unix: u64,
}

/// One file's entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Cache of the content sums, valid while size and mtime are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached: Option<CachedSums>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<Verified>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedSums {
    pub mtime_ns: u64,
    #[serde(flatten)]
    pub sums: Sums,
}

/// The whole record of a folder.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChecksumStore {
    #[serde(default = "one")]
    pub format: u32,
    #[serde(default)]
    pub files: BTreeMap<String, FileRecord>,
    /// Set when an existing record could not be parsed (it is then ignored and rewritten).
    #[serde(skip)]
    pub load_warning: Option<String>,
}

fn one() -> u32 {
    1
}

/// The key of a file: its path relative to the folder with `/` separators.
pub fn rel_key(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn mtime_ns(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ChecksumStore {
    pub fn path(root: &Path) -> PathBuf {
        root.join(CHECKSUMS_FILE)
    }

    /// Load the record of `root` (empty if absent; an unreadable record is ignored with a
    /// warning in `load_warning`, since it only caches and records).
    pub fn load(root: &Path) -> Self {
        let p = Self::path(root);
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Self::new(),
            Err(e) => {
                return Self {
                    load_warning: Some(format!("cannot read {}: {e}; ignoring it", p.display())),
                    ..Self::new()
                };
            }
        };
        match serde_json::from_str::<Self>(&text) {
            Ok(s) => s,
            Err(e) => Self {
                load_warning: Some(format!(
                    "{} is not valid ({e}); ignoring it (it will be rewritten)",
                    p.display()
                )),
                ..Self::new()
            },
        }
    }

    pub fn new() -> Self {
        Self {
            format: 1,
            ..Default::default()
        }
    }

    /// Write the record atomically.
    pub fn save(&self, root: &Path) -> Result<()> {
        let p = Self::path(root);
        let tmp = root.join(format!("{CHECKSUMS_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Io(e.into()))?;
        std::fs::write(&tmp, text + "\n")?;
        std::fs::rename(&tmp, &p)?;
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&FileRecord> {
        self.files.get(key)
    }

    /// Sums of `path` (inside `root`), from the cache if size and mtime are unchanged, else
    /// by hashing the file (then cached). `on_hash` is called before hashing a file (for
    /// messages) and `progress` receives the number of bytes hashed so far.
    pub fn sums(
        &mut self,
        root: &Path,
        path: &Path,
        on_hash: &mut dyn FnMut(&Path, u64),
        progress: &mut dyn FnMut(u64),
    ) -> Result<Sums> {
        let meta = std::fs::metadata(path)?;
        let key = rel_key(root, path);
        let mt = mtime_ns(&meta);
        if let Some(c) = self.files.get(&key).and_then(|r| r.cached.as_ref())
            && c.sums.size == meta.len()
            && c.mtime_ns == mt
            && mt != 0
        {
            return Ok(c.sums.clone());
        }
        on_hash(path, meta.len());
        let sums = hash_file(path, progress)?;
        self.files.entry(key).or_default().cached = Some(CachedSums {
            mtime_ns: mt,
            sums: sums.clone(),
        });
        Ok(sums)
    }

    /// Record sums just computed while writing `path` (avoids hashing it again).
    pub fn remember(&mut self, root: &Path, path: &Path, sums: &Sums) -> Result<()> {
        let meta = std::fs::metadata(path)?;
        self.files.entry(rel_key(root, path)).or_default().cached = Some(CachedSums {
            mtime_ns: mtime_ns(&meta),
            sums: sums.clone(),
        });
        Ok(())
    }

    pub fn set_verified(&mut self, root: &Path, path: &Path, v: Verified) {
        self.files.entry(rel_key(root, path)).or_default().verified = Some(v);
    }

    pub fn forget(&mut self, root: &Path, path: &Path) {
        self.files.remove(&rel_key(root, path));
    }
}

/// Incremental MD5 + SHA-256 of a byte stream.
#[derive(Clone, Default)]
pub struct Hasher {
    md5: Md5,
    sha256: Sha256,
    size: u64,
}

impl Hasher {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        self.md5.update(data);
        self.sha256.update(data);
        self.size += data.len() as u64;
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn finish(self) -> Sums {
        Sums {
            size: self.size,
            md5: hex(&self.md5.finalize()),
            sha256: hex(&self.sha256.finalize()),
        }
    }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Feed the first `limit` bytes of a file (all if `None`) into `h`.
pub fn hash_into(
    path: &Path,
    limit: Option<u64>,
    h: &mut Hasher,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let f = std::fs::File::open(path)?;
    let mut r: Box<dyn Read> = match limit {
        Some(n) => Box::new(f.take(n)),
        None => Box::new(f),
    };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        progress(h.size());
    }
    Ok(())
}

/// MD5 and SHA-256 of a whole file.
pub fn hash_file(path: &Path, progress: &mut dyn FnMut(u64)) -> Result<Sums> {
    let mut h = Hasher::new();
    hash_into(path, None, &mut h, progress)?;
    Ok(h.finish())
}

/// Git's blob id of a file (`sha1("blob <len>\0" + content)`): the ETag the Hugging Face Hub
/// reports for files not stored in LFS.
pub fn git_blob_sha1(path: &Path) -> Result<String> {
    let len = std::fs::metadata(path)?.len();
    let mut h = Sha1::new();
    h.update(format!("blob {len}\0").as_bytes());
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Whether `s` is `n` hex digits.
pub fn is_hex(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_cache() {
        let d = std::env::temp_dir().join(format!("mmaudio-cks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("a")).unwrap();
        let f = d.join("a/x.bin");
        std::fs::write(&f, b"hello world").unwrap();
        let mut st = ChecksumStore::load(&d);
        assert!(st.load_warning.is_none());
        let mut hashed = 0;
        let s = st
            .sums(&d, &f, &mut |_, _| hashed += 1, &mut |_| {})
            .unwrap();
        // reference values of "hello world"
        assert_eq!(s.md5, "5eb63bbbe01eeed093cb22bb8f5acdc3");
        assert_eq!(
            s.sha256,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!(s.size, 11);
        st.save(&d).unwrap();
        let mut st = ChecksumStore::load(&d);
        assert!(st.get("a/x.bin").is_some());
        let s2 = st
            .sums(&d, &f, &mut |_, _| hashed += 1, &mut |_| {})
            .unwrap();
        assert_eq!((s2, hashed), (s, 1), "second call must come from the cache");
        // `git hash-object` of "hello world" (no newline)
        assert_eq!(
            git_blob_sha1(&f).unwrap(),
            "95d09f2b10159347eece71399a7e2e907ea3df4f"
        );
        std::fs::write(ChecksumStore::path(&d), b"{ nope").unwrap();
        let st = ChecksumStore::load(&d);
        assert!(st.load_warning.unwrap().contains("not valid"));
        std::fs::remove_dir_all(&d).ok();
    }
}
