//! `mmaudio fetch-weights`: download the official files a variant needs into a model folder.
//!
//! Sources (see [`crate::model_dir::official_files`]): the flow networks from Hugging Face
//! (`hkchengrex/MMAudio`), the VAEs, the 16 kHz vocoder and Synchformer from the official
//! GitHub release v0.1, BigVGAN-v2 and CLIP from their Hugging Face repositories.
//!
//! Every file is downloaded to `<file>.part` next to its final place, resumed with an HTTP
//! `Range` request if a `.part` is already there, verified, and only then renamed to its final
//! name. Verification uses the official MD5 of `download_utils.py` where one exists, and the
//! SHA-256 the Hub reports for LFS files (`X-Linked-Etag`; `X-Linked-Size` for the size) or the
//! Git blob SHA-1 it reports for small files (`ETag`). What a file was verified against is
//! recorded in `.mmaudio-checksums.json` ([`crate::weights::checksums`]) so that a second run
//! makes no request at all and `check-weights` can re-verify offline.
//!
//! Endpoints can be redirected to mirrors or test servers: `MMAUDIO_HF_ENDPOINT` (else
//! `HF_ENDPOINT`, else `https://huggingface.co`) and `MMAUDIO_RELEASE_BASE_URL`. `HF_TOKEN` is
//! sent to the Hugging Face endpoint (only) if set.

use crate::config::Variant;
use crate::error::{Error, Result};
use crate::model_dir::{
    FileRole, ModelDir, OfficialFile, RELEASE_BASE_URL, Source, official_files,
    official_name_of_md5,
};
use crate::weights::checksums::{
    ChecksumStore, Hasher, Sums, Verified, git_blob_sha1, hash_into, is_hex, now_unix,
};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Environment variable overriding the Hugging Face endpoint.
pub const ENV_HF_ENDPOINT: &str = "MMAUDIO_HF_ENDPOINT";
/// Environment variable overriding the base URL of the GitHub release assets.
pub const ENV_RELEASE_BASE_URL: &str = "MMAUDIO_RELEASE_BASE_URL";
/// The Hugging Face endpoint variable `huggingface_hub`/`hf-hub` honour.
pub const ENV_HF_ENDPOINT_STD: &str = "HF_ENDPOINT";
pub const DEFAULT_HF_ENDPOINT: &str = "https://huggingface.co";
/// Lock file taken while a fetch writes into a folder.
pub const LOCK_FILE: &str = ".mmaudio-fetch.lock";

/// Base URLs of the two kinds of sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub hf: String,
    pub release: String,
}

impl Endpoints {
    pub fn official() -> Self {
        Self {
            hf: DEFAULT_HF_ENDPOINT.into(),
            release: RELEASE_BASE_URL.into(),
        }
    }

    /// The official endpoints, overridden by `MMAUDIO_HF_ENDPOINT` / `HF_ENDPOINT` and
    /// `MMAUDIO_RELEASE_BASE_URL`.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let mut e = Self::official();
        if let Some(v) = var(ENV_HF_ENDPOINT).or_else(|| var(ENV_HF_ENDPOINT_STD)) {
            e.hf = v;
        }
        if let Some(v) = var(ENV_RELEASE_BASE_URL) {
            e.release = v;
        }
        e.hf = e.hf.trim().trim_end_matches('/').to_string();
        e.release = e.release.trim().trim_end_matches('/').to_string();
        e
    }

    /// Download URL of a source.
    pub fn url(&self, src: &Source) -> String {
        match src {
            Source::HuggingFace { repo, file } => {
                format!("{}/{repo}/resolve/main/{file}", self.hf)
            }
            Source::Release { file } => format!("{}/{file}", self.release),
        }
    }
}

/// Receives human-readable status lines.
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// Options of a fetch.
#[derive(Clone)]
pub struct FetchOptions {
    pub endpoints: Endpoints,
    /// Draw progress bars on stderr (when it is a terminal).
    pub progress: bool,
    /// Status lines (what is checked, downloaded, skipped).
    pub log: Option<Log>,
    pub connect_timeout: Duration,
    /// Longest silence of a connection before it is given up (the `.part` is kept).
    pub read_timeout: Duration,
    /// Bearer token for the Hugging Face endpoint (`HF_TOKEN`).
    pub hf_token: Option<String>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            endpoints: Endpoints::from_env(),
            progress: false,
            log: None,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
            hf_token: std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()),
        }
    }
}

impl FetchOptions {
    fn say(&self, msg: &str) {
        if let Some(l) = &self.log {
            l(msg);
        }
    }
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Already in place and verified (`how`: against what).
    Present { how: String },
    /// Downloaded and verified.
    Downloaded {
        bytes: u64,
        resumed_from: u64,
        how: String,
    },
    /// The component is already provided by another file (a conversion, or a manifest entry);
    /// the official file is not needed.
    Provided { by: PathBuf },
    /// Download or verification failed.
    Failed { error: String },
    /// Not attempted because its host was unreachable for an earlier file.
    NotTried { reason: String },
}

/// One file of a fetch.
#[derive(Debug, Clone)]
pub struct FileResult {
    pub file: OfficialFile,
    /// Final path in the model folder.
    pub target: PathBuf,
    pub url: String,
    pub outcome: Outcome,
}

/// Result of a fetch.
#[derive(Debug, Clone)]
pub struct FetchReport {
    pub dir: PathBuf,
    pub variant: Option<Variant>,
    pub files: Vec<FileResult>,
}

impl FetchReport {
    pub fn failed(&self) -> Vec<&FileResult> {
        self.files
            .iter()
            .filter(|f| matches!(f.outcome, Outcome::Failed { .. } | Outcome::NotTried { .. }))
            .collect()
    }

    pub fn ok(&self) -> bool {
        self.failed().is_empty()
    }

    /// The error to return when files are missing: every URL that failed, the exact path
    /// each file belongs at, and how to place them by hand.
    pub fn error_message(&self) -> Option<String> {
        let failed = self.failed();
        if failed.is_empty() {
            return None;
        }
        let mut m = format!(
            "could not fetch {} of {} file(s) into {}",
            failed.len(),
            self.files.len(),
            self.dir.display()
        );
        let unreachable: Vec<String> = failed
            .iter()
            .filter(|f| match &f.outcome {
                Outcome::Failed { error } => error.starts_with("cannot reach "),
                Outcome::NotTried { .. } => true,
                _ => false,
            })
            .map(|f| host_of(&f.url))
            .fold(vec![], |mut v, h| {
                if !v.contains(&h) {
                    v.push(h);
                }
                v
            });
        if !unreachable.is_empty() {
            m += &format!(
                " — {} cannot be reached (no network access, or blocked by DNS, proxy or firewall?)",
                unreachable.join(" and ")
            );
        }
        m += ":\n";
        for f in &failed {
            let why = match &f.outcome {
                Outcome::Failed { error } => error.clone(),
                Outcome::NotTried { reason } => reason.clone(),
                _ => unreachable!(),
            };
            m += &format!(
                "  {}\n    -> {}\n    {}\n",
                f.url,
                f.target.display(),
                why.replace('\n', "\n    ")
            );
        }
        if failed.iter().any(|f| {
            matches!(&f.outcome, Outcome::Failed { error } if error.starts_with("checksum mismatch"))
        }) {
            m += "A checksum mismatch means the server (or a proxy on the way) delivered something \
                  other than the official file: check the mirror settings below, or download from \
                  the official URLs.\n";
        }
        let check = match self.variant {
            Some(v) => format!(
                "mmaudio check-weights {} --variant {v}",
                shell_quote(&self.dir)
            ),
            None => format!("mmaudio check-weights {}", shell_quote(&self.dir)),
        };
        m += &format!(
            "To place the files by hand (e.g. on a machine without internet access): download \
             each URL above elsewhere (browser, or `curl -L -o <file> <url>`), copy it to the \
             path shown after `->`, then run `{check}`.\n\
             Partial downloads are kept as `<file>.part` and resumed by the next \
             `mmaudio fetch-weights`. Mirrors: set {ENV_HF_ENDPOINT} (or {ENV_HF_ENDPOINT_STD}) and \
             {ENV_RELEASE_BASE_URL}."
        );
        Some(m)
    }

    /// `Err(Error::Fetch)` if any file is missing.
    pub fn into_result(self) -> Result<Self> {
        match self.error_message() {
            Some(m) => Err(Error::Fetch(m)),
            None => Ok(self),
        }
    }
}

fn shell_quote(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Download (if needed) every official file `variant` needs into `dir` (created if absent).
///
/// Components the folder already provides through a conversion (e.g.
/// `mmaudio_large_44k_v2_fp16.safetensors`) or its manifest are not downloaded. Returns
/// `Err(Error::Fetch)` naming every file that could not be fetched.
pub fn fetch_variant(dir: &Path, variant: Variant, opts: &FetchOptions) -> Result<FetchReport> {
    std::fs::create_dir_all(dir)?;
    let md = ModelDir::open(dir)?;
    let mut plan = vec![];
    let mut provided = vec![];
    for f in official_files(variant) {
        let from_manifest = md.manifest.as_ref().and_then(|m| m.entry(f.component));
        if let Some(e) = from_manifest {
            provided.push((f, md.root.join(&e.file)));
            continue;
        }
        if f.role == FileRole::Weights
            && let Ok(r) = md.resolve(variant, f.component)
            && r.path.file_name() != f.rel_path.file_name()
        {
            provided.push((f, r.path));
            continue;
        }
        plan.push(f);
    }
    let mut report = fetch_files_inner(dir, &plan, opts, &md)?;
    for (f, by) in provided {
        opts.say(&format!(
            "{}: provided by {} (not downloading {})",
            f.component.describe(),
            by.display(),
            f.file_name()
        ));
        report.files.push(FileResult {
            target: dir.join(&f.rel_path),
            url: opts.endpoints.url(&f.source),
            file: f,
            outcome: Outcome::Provided { by },
        });
    }
    report.variant = Some(variant);
    report.into_result()
}

/// Download (if needed) the given files into `dir` (each at `dir/<rel_path>`, or where the
/// folder already holds it under its official name). Returns `Err(Error::Fetch)` naming every
/// file that could not be fetched.
pub fn fetch_files(dir: &Path, files: &[OfficialFile], opts: &FetchOptions) -> Result<FetchReport> {
    std::fs::create_dir_all(dir)?;
    let md = ModelDir::open(dir)?;
    fetch_files_inner(dir, files, opts, &md)?.into_result()
}

fn fetch_files_inner(
    dir: &Path,
    files: &[OfficialFile],
    opts: &FetchOptions,
    md: &ModelDir,
) -> Result<FetchReport> {
    let _lock = FolderLock::take(dir)?;
    let store = ChecksumStore::load(dir);
    if let Some(w) = &store.load_warning {
        opts.say(&format!("warning: {w}"));
    }
    let mut cx = Ctx {
        root: dir,
        opts,
        http: Http::new(opts),
        store,
        dead_hosts: vec![],
    };
    let mut out = FetchReport {
        dir: dir.to_owned(),
        variant: None,
        files: vec![],
    };
    for f in files {
        let mut file = f.clone();
        let mut url = opts.endpoints.url(&f.source);
        let mut target = existing_official(md, f).unwrap_or_else(|| dir.join(&f.rel_path));
        let mut r = cx.fetch_one(f, &target, &url);
        if let (Err(FetchFail::NotFound(e)), Some(fb)) = (&r, &f.fallback) {
            let fb_url = opts.endpoints.url(&fb.source);
            let fb_target = existing_official(md, fb).unwrap_or_else(|| dir.join(&fb.rel_path));
            opts.say(&format!("{e}; trying {fb_url}"));
            r = cx.fetch_one(fb, &fb_target, &fb_url);
            if r.is_ok() {
                (file, target, url) = ((**fb).clone(), fb_target, fb_url);
            }
        }
        let outcome = match r {
            Ok(o) => o,
            Err(FetchFail::Unreachable { host, error }) => {
                cx.dead_hosts.push(host);
                Outcome::Failed { error }
            }
            Err(FetchFail::NotTried(reason)) => Outcome::NotTried { reason },
            Err(FetchFail::NotFound(e) | FetchFail::Other(e)) => Outcome::Failed { error: e },
        };
        match &outcome {
            Outcome::Present { how } => opts.say(&format!("ok      {} ({how})", target.display())),
            Outcome::Downloaded { how, .. } => {
                opts.say(&format!("fetched {} ({how})", target.display()))
            }
            Outcome::Failed { error } => opts.say(&format!(
                "FAILED  {url}\n        {}",
                error.replace('\n', "\n        ")
            )),
            Outcome::NotTried { reason } => opts.say(&format!("skipped {url}: {reason}")),
            Outcome::Provided { .. } => {}
        }
        // keep what was learned even if a later file fails or the run is interrupted
        if let Err(e) = cx.store.save(dir) {
            opts.say(&format!("warning: cannot write checksum record: {e}"));
        }
        out.files.push(FileResult {
            file,
            target,
            url,
            outcome,
        });
    }
    Ok(out)
}

/// Where the folder already holds an official file under its official name (official layout
/// or flat), if anywhere.
fn existing_official(md: &ModelDir, f: &OfficialFile) -> Option<PathBuf> {
    let name = f.rel_path.file_name()?;
    let official = md.root.join(&f.rel_path);
    if official.is_file() {
        return Some(official);
    }
    let flat = md.root.join(name);
    flat.is_file().then_some(flat)
}

enum FetchFail {
    /// The host could not be reached at all (DNS, connect): later files of it are not tried.
    Unreachable {
        host: String,
        error: String,
    },
    /// HTTP 404.
    NotFound(String),
    /// Not attempted: the host was unreachable for an earlier file.
    NotTried(String),
    Other(String),
}

impl From<Error> for FetchFail {
    fn from(e: Error) -> Self {
        FetchFail::Other(e.to_string())
    }
}

/// What the server says the file should be.
#[derive(Debug, Clone, Default)]
struct Remote {
    size: Option<u64>,
    sha256: Option<String>,
    git_sha1: Option<String>,
}

/// A reference a file was checked against.
fn describe_md5(md5: &str) -> String {
    format!("official MD5 {md5}")
}

enum Existing {
    Good(String),
    Bad(String),
}

/// State of one fetch run.
struct Ctx<'a> {
    root: &'a Path,
    opts: &'a FetchOptions,
    http: Http,
    store: ChecksumStore,
    /// Hosts that could not be reached: later files from them are not tried.
    dead_hosts: Vec<String>,
}

impl Ctx<'_> {
    fn dead(&self, url: &str) -> Option<String> {
        let h = host_of(url);
        self.dead_hosts.contains(&h).then_some(h)
    }

    fn fetch_one(
        &mut self,
        f: &OfficialFile,
        target: &Path,
        url: &str,
    ) -> std::result::Result<Outcome, FetchFail> {
        let (root, opts) = (self.root, self.opts);
        // 1. an existing file that verifies is kept without any request when possible
        if target.is_file() {
            match self.verify_existing(f, target, url)? {
                Existing::Good(how) => return Ok(Outcome::Present { how }),
                Existing::Bad(why) => {
                    let aside = with_suffix(target, ".mismatch");
                    std::fs::rename(target, &aside).map_err(|e| FetchFail::Other(e.to_string()))?;
                    self.store.forget(root, target);
                    opts.say(&format!(
                        "{} {why}; moved it to {} and downloading it again",
                        target.display(),
                        aside.display()
                    ));
                }
            }
        }
        if let Some(h) = self.dead(url) {
            return Err(FetchFail::NotTried(format!(
                "not tried: {h} is unreachable (see above)"
            )));
        }
        // 2. download (resuming a .part), verify, rename
        let part = with_suffix(target, ".part");
        let mut attempt = 0;
        loop {
            let (sums, remote, resumed_from) = download_to_part(url, &part, f, opts, &self.http)?;
            match verify_download(f, &part, &sums, &remote) {
                Ok(how) => {
                    std::fs::rename(&part, target).map_err(|e| FetchFail::Other(e.to_string()))?;
                    self.store.forget(root, target);
                    self.store
                        .remember(root, target, &sums)
                        .map_err(|e| FetchFail::Other(e.to_string()))?;
                    self.store.set_verified(
                        root,
                        target,
                        Verified {
                            size: sums.size,
                            sha256: sums.sha256.clone(),
                            against: how.clone(),
                            url: Some(url.to_string()),
                            at_unix: now_unix(),
                        },
                    );
                    return Ok(Outcome::Downloaded {
                        bytes: sums.size - resumed_from.min(sums.size),
                        resumed_from,
                        how,
                    });
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&part);
                    if resumed_from > 0 && attempt == 0 {
                        // the kept part may belong to an older version of the file
                        opts.say(&format!(
                        "{}: the resumed download does not verify ({e}); downloading it again from the start",
                        target.display()
                    ));
                        attempt += 1;
                        continue;
                    }
                    let msg = match e {
                    Error::Checksum {
                        algo,
                        expected,
                        actual,
                        hint,
                        ..
                    } => Error::Checksum {
                        path: target.to_owned(),
                        algo,
                        expected,
                        actual,
                        hint: format!(
                            "{hint}; downloaded from {url}; the download was discarded, nothing was written to {}",
                            target.display()
                        ),
                    }
                    .to_string(),
                    other => other.to_string(),
                };
                    return Err(FetchFail::Other(msg));
                }
            }
        }
    }

    fn verify_existing(
        &mut self,
        f: &OfficialFile,
        target: &Path,
        url: &str,
    ) -> std::result::Result<Existing, FetchFail> {
        let (root, opts) = (self.root, self.opts);
        let sums = sums_with_progress(root, target, opts, &mut self.store)?;
        if let Some(md5) = &f.md5 {
            return Ok(if sums.md5.eq_ignore_ascii_case(md5) {
                Existing::Good(describe_md5(md5))
            } else {
                Existing::Bad(format!(
                    "does not match the {} (its MD5 is {}{})",
                    describe_md5(md5),
                    sums.md5,
                    other_official(&sums.md5)
                ))
            });
        }
        let key = crate::weights::checksums::rel_key(root, target);
        if let Some(v) = self.store.get(&key).and_then(|r| r.verified.clone())
            && v.sha256 == sums.sha256
            && v.size == sums.size
        {
            return Ok(Existing::Good(format!("{} (recorded)", v.against)));
        }
        if let Some(note) = known_hub_sha256(&f.file_name(), &sums.sha256) {
            return Ok(Existing::Good(format!("known Hub SHA-256: {note}")));
        }
        // ask the Hub what the file should be; a file that is there is kept (unverified) when the
        // Hub cannot be asked, rather than failing an offline run
        if let Some(h) = self.dead(url) {
            return Ok(Existing::Good(format!(
                "present but NOT verified: no published checksum here and {h} is \
                 unreachable; run again with network access to verify it"
            )));
        }
        let remote = match self.http.metadata(url) {
            Ok(r) => r,
            Err(fail) => {
                let e = match fail {
                    FetchFail::Unreachable { host, error } => {
                        self.dead_hosts.push(host);
                        error
                    }
                    FetchFail::Other(e) | FetchFail::NotFound(e) | FetchFail::NotTried(e) => e,
                };
                return Ok(Existing::Good(format!(
                    "present but NOT verified: no published checksum here and the Hub could not \
                     be asked ({e}); run again with network access to verify it"
                )));
            }
        };
        let (good, how) = match (&remote.sha256, &remote.git_sha1) {
            (Some(sha), _) => (*sha == sums.sha256, format!("Hub SHA-256 {sha}")),
            (None, Some(g)) => {
                let actual = git_blob_sha1(target)?;
                (*g == actual, format!("Hub Git blob SHA-1 {g}"))
            }
            (None, None) => match remote.size {
                Some(s) => (s == sums.size, format!("size {s} (no checksum published)")),
                None => (false, "nothing (the server publishes no checksum)".into()),
            },
        };
        if good {
            self.store.set_verified(
                root,
                target,
                Verified {
                    size: sums.size,
                    sha256: sums.sha256.clone(),
                    against: how.clone(),
                    url: Some(url.to_string()),
                    at_unix: now_unix(),
                },
            );
            Ok(Existing::Good(how))
        } else {
            Ok(Existing::Bad(format!("does not match the {how}")))
        }
    }
}

fn other_official(md5: &str) -> String {
    match official_name_of_md5(md5) {
        Some(n) => format!(", which is the official {n}"),
        None => String::new(),
    }
}

fn known_hub_sha256(file_name: &str, sha256: &str) -> Option<&'static str> {
    crate::model_dir::KNOWN_HUB_SHA256
        .iter()
        .find(|(n, s, _)| *n == file_name && *s == sha256)
        .map(|(_, _, note)| *note)
}

fn sums_with_progress(
    root: &Path,
    path: &Path,
    opts: &FetchOptions,
    store: &mut ChecksumStore,
) -> Result<Sums> {
    let bar: std::cell::RefCell<Option<indicatif::ProgressBar>> = Default::default();
    let s = store.sums(
        root,
        path,
        &mut |p, len| {
            opts.say(&format!("verifying {} ({})", p.display(), human_bytes(len)));
            if opts.progress && len > 64 << 20 {
                *bar.borrow_mut() = Some(progress_bar(Some(len), "verifying"));
            }
        },
        &mut |n| {
            if let Some(b) = bar.borrow().as_ref() {
                b.set_position(n);
            }
        },
    );
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
    s
}

/// Check a finished download against the official MD5 and what the server reported.
fn verify_download(f: &OfficialFile, part: &Path, sums: &Sums, remote: &Remote) -> Result<String> {
    let mismatch = |algo: &str, expected: &str, actual: &str, hint: String| Error::Checksum {
        path: part.to_owned(),
        algo: algo.into(),
        expected: expected.into(),
        actual: actual.into(),
        hint,
    };
    if let Some(size) = remote.size
        && size != sums.size
    {
        return Err(mismatch(
            "size",
            &size.to_string(),
            &sums.size.to_string(),
            String::new(),
        ));
    }
    let mut how = vec![];
    if let Some(md5) = &f.md5 {
        if !sums.md5.eq_ignore_ascii_case(md5) {
            return Err(mismatch(
                "MD5",
                md5,
                &sums.md5,
                format!(
                    " (official MD5 of {}{})",
                    f.file_name(),
                    other_official(&sums.md5)
                ),
            ));
        }
        how.push(describe_md5(md5));
    }
    if let Some(sha) = &remote.sha256 {
        if *sha != sums.sha256 {
            return Err(mismatch(
                "SHA-256",
                sha,
                &sums.sha256,
                " (as reported by the Hugging Face Hub)".into(),
            ));
        }
        how.push(format!("Hub SHA-256 {sha}"));
    } else if let Some(g) = &remote.git_sha1 {
        let actual = git_blob_sha1(part)?;
        if *g != actual {
            return Err(mismatch(
                "Git blob SHA-1",
                g,
                &actual,
                " (as reported by the Hugging Face Hub)".into(),
            ));
        }
        how.push(format!("Hub Git blob SHA-1 {g}"));
    }
    if how.is_empty() {
        how.push(match remote.size {
            Some(s) => format!("size {s} only: no checksum is published for it"),
            None => "not verified: no checksum or size is published for it".into(),
        });
    }
    Ok(how.join(", "))
}

/// Download `url` into `part`, resuming from its current length. Returns the sums of the
/// whole file, what the server said about it and the byte the download resumed at.
fn download_to_part(
    url: &str,
    part: &Path,
    f: &OfficialFile,
    opts: &FetchOptions,
    http: &Http,
) -> std::result::Result<(Sums, Remote, u64), FetchFail> {
    let io = |e: std::io::Error| FetchFail::Other(format!("{}: {e}", part.display()));
    let mut start = std::fs::metadata(part).map_or(0, |m| m.len());
    let mut resp = http.get(url, Some(start))?;
    let mut remote = resp.remote.clone();
    let status = resp.response.status();
    if status == 416 && start > 0 {
        // the part may already be complete: let the checks decide; else restart
        let total = resp
            .response
            .header("Content-Range")
            .and_then(|v| v.rsplit('/').next())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .or(remote.size);
        if total == Some(start) {
            remote.size = remote.size.or(total);
            let mut h = Hasher::new();
            hash_into(part, None, &mut h, &mut |_| {})
                .map_err(|e| FetchFail::Other(e.to_string()))?;
            return Ok((h.finish(), remote, start));
        }
        std::fs::remove_file(part).map_err(io)?;
        start = 0;
        resp = http.get(url, None)?;
        remote = resp.remote.clone();
    }
    let status = resp.response.status();
    let content_len = resp
        .response
        .header("Content-Length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    let resuming = if start > 0 && status == 206 {
        // Content-Range: bytes <start>-<end>/<total>
        let cr = resp.response.header("Content-Range").unwrap_or("");
        let first = cr
            .trim()
            .strip_prefix("bytes ")
            .and_then(|r| r.split('-').next())
            .and_then(|v| v.parse::<u64>().ok());
        if first != Some(start) {
            return Err(FetchFail::Other(format!(
                "{url}: asked to resume at byte {start} but the server answered `Content-Range: {cr}`"
            )));
        }
        if remote.size.is_none() {
            remote.size = cr.rsplit('/').next().and_then(|v| v.parse().ok());
        }
        true
    } else if status == 200 {
        if start > 0 {
            opts.say(&format!(
                "{url}: the server does not support resuming; starting again from the beginning"
            ));
        }
        if remote.size.is_none() {
            remote.size = content_len;
        }
        false
    } else {
        return Err(FetchFail::Other(format!(
            "{url}: unexpected HTTP status {status} {}",
            resp.response.status_text()
        )));
    };
    let total = remote.size;
    let already = if resuming { start } else { 0 };
    if let Some(t) = total
        && let Some(avail) = available_space(part.parent().unwrap_or(Path::new(".")))
        && avail < t.saturating_sub(already)
    {
        return Err(FetchFail::Other(format!(
            "not enough disk space for {}: {} needed, {} available in {}",
            f.file_name(),
            human_bytes(t - already),
            human_bytes(avail),
            part.parent().unwrap_or(Path::new(".")).display()
        )));
    }
    if let Some(parent) = part.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut hasher = Hasher::new();
    let mut file = if resuming {
        hash_into(part, Some(start), &mut hasher, &mut |_| {})
            .map_err(|e| FetchFail::Other(e.to_string()))?;
        std::fs::OpenOptions::new()
            .append(true)
            .open(part)
            .map_err(io)?
    } else {
        std::fs::File::create(part).map_err(io)?
    };
    opts.say(&format!(
        "downloading {url}{}{}",
        total.map_or(String::new(), |t| format!(" ({})", human_bytes(t))),
        if resuming {
            format!(", resuming at {}", human_bytes(start))
        } else {
            String::new()
        }
    ));
    let bar = opts.progress.then(|| progress_bar(total, &f.file_name()));
    if let Some(b) = &bar {
        b.set_position(already);
    }
    let mut reader = resp.response.into_reader();
    let mut buf = vec![0u8; 1 << 20];
    let mut written = already;
    let read_result: std::result::Result<(), String> = loop {
        match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                if let Err(e) = file.write_all(&buf[..n]) {
                    break Err(format!("writing {}: {e}", part.display()));
                }
                hasher.update(&buf[..n]);
                written += n as u64;
                if let Some(b) = &bar {
                    b.set_position(written);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(format!("{url}: connection lost: {e}")),
        }
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    file.flush().map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    let got = hasher.size();
    let incomplete = |why: String| {
        FetchFail::Other(format!(
            "{why}; {} of {} kept in {} — run `mmaudio fetch-weights` again to resume",
            human_bytes(got),
            total.map_or("?".into(), human_bytes),
            part.display()
        ))
    };
    if let Err(e) = read_result {
        return Err(incomplete(e));
    }
    if let Some(t) = total
        && got < t
    {
        return Err(incomplete(format!(
            "{url}: the connection closed after {got} of {t} bytes"
        )));
    }
    Ok((hasher.finish(), remote, already))
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn progress_bar(total: Option<u64>, msg: &str) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let b = match total {
        Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    let style = if total.is_some() {
        ProgressStyle::with_template(
            "{msg:24!} [{bar:30}] {bytes:>10}/{total_bytes:10} {binary_bytes_per_sec:>12} eta {eta}",
        )
    } else {
        ProgressStyle::with_template("{msg:24!} {spinner} {bytes:>10} {binary_bytes_per_sec:>12}")
    };
    if let Ok(s) = style {
        b.set_style(s.progress_chars("=> "));
    }
    b.set_message(msg.to_string());
    b
}

/// `1.2 GB` style sizes (decimal units, as the official MODELS.md).
pub fn human_bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1} MB", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} kB", n / 1e3)
    } else {
        format!("{n} B")
    }
}

#[cfg(unix)]
fn available_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    // the folder may not exist yet: ask about its nearest existing ancestor
    let dir = dir.ancestors().find(|d| d.is_dir())?;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (r == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(not(unix))]
fn available_space(_dir: &Path) -> Option<u64> {
    None
}

/// An exclusive lock on a folder while files are written into it.
struct FolderLock {
    #[cfg(unix)]
    _file: std::fs::File,
}

impl FolderLock {
    #[cfg(unix)]
    fn take(dir: &Path) -> Result<Self> {
        use std::os::fd::AsRawFd;
        let p = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)?;
        // SAFETY: flock on a file descriptor we own; released when the file is closed.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            return Err(Error::Fetch(format!(
                "another `mmaudio fetch-weights` is writing into {} (lock {}); wait for it to finish",
                dir.display(),
                p.display()
            )));
        }
        Ok(Self { _file: file })
    }

    #[cfg(not(unix))]
    fn take(_dir: &Path) -> Result<Self> {
        Ok(Self {})
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

struct Http {
    agent: ureq::Agent,
    hf_host: String,
    hf_token: Option<String>,
}

struct Got {
    response: ureq::Response,
    remote: Remote,
}

fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or("").to_ascii_lowercase()
}

fn join_url(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("https", base));
    if let Some(l) = location.strip_prefix("//") {
        return format!("{scheme}://{l}");
    }
    let host = rest.split('/').next().unwrap_or("");
    if location.starts_with('/') {
        return format!("{scheme}://{host}{location}");
    }
    let path = rest.split('?').next().unwrap_or(rest);
    let dir = &path[..path.rfind('/').map_or(path.len(), |i| i + 1)];
    format!("{scheme}://{dir}{location}")
}

fn normalize_etag(v: &str) -> String {
    v.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_ascii_lowercase()
}

impl Http {
    fn new(opts: &FetchOptions) -> Self {
        let agent = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout_connect(opts.connect_timeout)
            .timeout_read(opts.read_timeout)
            .try_proxy_from_env(true)
            .user_agent(concat!("mmaudio/", env!("CARGO_PKG_VERSION")))
            .build();
        Self {
            agent,
            hf_host: host_of(&opts.endpoints.hf),
            hf_token: opts.hf_token.clone(),
        }
    }

    /// GET `url` (following redirects by hand so the Hub's `X-Linked-*` headers of the
    /// redirect are seen), asking for bytes from `range_start` on if given and non-zero.
    fn get(&self, url: &str, range_start: Option<u64>) -> std::result::Result<Got, FetchFail> {
        self.request(
            url,
            range_start
                .filter(|&s| s > 0)
                .map(|s| format!("bytes={s}-")),
            false,
        )
    }

    /// What the Hub says about a file (its SHA-256 or Git SHA-1 and size), from the first
    /// response that carries it, reading at most one byte of content.
    fn metadata(&self, url: &str) -> std::result::Result<Remote, FetchFail> {
        Ok(self.request(url, Some("bytes=0-0".into()), true)?.remote)
    }

    fn request(
        &self,
        url: &str,
        range: Option<String>,
        stop_at_hub_headers: bool,
    ) -> std::result::Result<Got, FetchFail> {
        let mut remote = Remote::default();
        let mut current = url.to_string();
        for _ in 0..10 {
            let mut req = self.agent.get(&current);
            if let Some(r) = &range {
                req = req.set("Range", r);
            }
            let on_hub = host_of(&current) == self.hf_host;
            if on_hub && let Some(t) = &self.hf_token {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
            let resp = match req.call() {
                Ok(r) => r,
                Err(ureq::Error::Status(416, r)) => {
                    return Ok(Got {
                        response: r,
                        remote,
                    });
                }
                Err(ureq::Error::Status(code, r)) => {
                    let hint = match code {
                        401 | 403 => {
                            " (access denied: the file may be gated or moved; set HF_TOKEN if you have access)"
                        }
                        404 => " (not found: the file may have been moved or renamed)",
                        _ => "",
                    };
                    let msg = format!("{current}: HTTP {code} {}{hint}", r.status_text());
                    return Err(if code == 404 {
                        FetchFail::NotFound(msg)
                    } else {
                        FetchFail::Other(msg)
                    });
                }
                Err(ureq::Error::Transport(t)) => {
                    let mut why = t.kind().to_string();
                    if let Some(m) = t.message() {
                        why += &format!(": {m}");
                    }
                    if let Some(src) = std::error::Error::source(&t) {
                        why += &format!(": {src}");
                    }
                    let host = host_of(&current);
                    return Err(match t.kind() {
                        ureq::ErrorKind::Dns
                        | ureq::ErrorKind::ConnectionFailed
                        | ureq::ErrorKind::ProxyConnect => FetchFail::Unreachable {
                            host: host.clone(),
                            error: format!("cannot reach {host} ({why})"),
                        },
                        _ => FetchFail::Other(format!("{current}: {why}")),
                    });
                }
            };
            if let Some(v) = resp.header("X-Linked-Etag") {
                let e = normalize_etag(v);
                if is_hex(&e, 64) {
                    remote.sha256 = Some(e);
                }
            }
            if let Some(v) = resp.header("X-Linked-Size")
                && let Ok(n) = v.trim().parse::<u64>()
            {
                remote.size = Some(n);
            }
            if (300..400).contains(&resp.status()) {
                if stop_at_hub_headers && (remote.sha256.is_some()) {
                    return Ok(Got {
                        response: resp,
                        remote,
                    });
                }
                let Some(loc) = resp.header("Location") else {
                    return Err(FetchFail::Other(format!(
                        "{current}: HTTP {} without a Location header",
                        resp.status()
                    )));
                };
                current = join_url(&current, loc);
                continue;
            }
            // a file served by the Hub itself (not LFS): its ETag is the Git blob id
            if on_hub
                && remote.sha256.is_none()
                && resp.header("X-Repo-Commit").is_some()
                && let Some(v) = resp.header("ETag")
            {
                let e = normalize_etag(v);
                if is_hex(&e, 64) {
                    remote.sha256 = Some(e);
                } else if is_hex(&e, 40) {
                    remote.git_sha1 = Some(e);
                }
            }
            if stop_at_hub_headers && remote.size.is_none() {
                remote.size = resp
                    .header("Content-Range")
                    .and_then(|v| v.rsplit('/').next())
                    .and_then(|v| v.trim().parse().ok());
            }
            return Ok(Got {
                response: resp,
                remote,
            });
        }
        Err(FetchFail::Other(format!("{url}: too many redirects")))
    }
}

/// Every URL a variant needs and the exact path it belongs at (`fetch-weights --list`; to
/// place the files by hand).
pub fn plan_listing(dir: &Path, variant: Variant, endpoints: &Endpoints) -> String {
    let mut s = String::new();
    for f in official_files(variant) {
        s += &format!(
            "{}\n  -> {}  ({}, ~{}{})\n",
            endpoints.url(&f.source),
            dir.join(&f.rel_path).display(),
            f.component.describe(),
            human_bytes(f.approx_size),
            f.md5
                .as_deref()
                .map_or(String::new(), |m| format!(", MD5 {m}"))
        );
        if let Some(fb) = &f.fallback {
            s += &format!(
                "  or, if the repository has no {}: {}\n  -> {}\n",
                f.file_name(),
                endpoints.url(&fb.source),
                dir.join(&fb.rel_path).display()
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let e = Endpoints {
            hf: "http://127.0.0.1:9".into(),
            release: "http://x/rel".into(),
        };
        assert_eq!(
            e.url(&Source::HuggingFace {
                repo: "a/b".into(),
                file: "weights/c.pth".into()
            }),
            "http://127.0.0.1:9/a/b/resolve/main/weights/c.pth"
        );
        assert_eq!(
            e.url(&Source::Release {
                file: "v.pth".into()
            }),
            "http://x/rel/v.pth"
        );
        assert_eq!(join_url("https://h.co/a/b/c?x=1", "/d"), "https://h.co/d");
        assert_eq!(
            join_url("https://h.co/a/b", "https://o.org/z"),
            "https://o.org/z"
        );
        assert_eq!(join_url("https://h.co/a/b", "c"), "https://h.co/a/c");
        assert_eq!(host_of("https://Hf.co:443/a"), "hf.co:443");
        assert_eq!(normalize_etag("W/\"ABC\""), "abc");
        assert_eq!(human_bytes(601_000_000), "601.0 MB");
    }
}
