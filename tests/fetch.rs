//! `fetch-weights` and `check-weights` against a local HTTP server started by each test (no
//! internet needed): fresh download, resume of a `.part`, idempotence (no request on a second
//! run), broken transfers, checksum mismatches, unreachable servers, truncated and
//! wrong-variant files.

use candle_core::{DType, Device, Tensor};
use md5::Md5;
use mmaudio::fetch::{Endpoints, FetchOptions, Outcome, fetch_files, fetch_variant};
use mmaudio::model_dir::{
    Component, FileRole, MANIFEST, Manifest, OfficialFile, Source, official_files,
};
use mmaudio::weights::check::{CheckOptions, Level, check_weights, expected_shapes};
use mmaudio::weights::checksums::{CHECKSUMS_FILE, ChecksumStore};
use mmaudio::{NetConfig, Variant};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// a tiny HTTP/1.1 server: redirects, Range, Hub headers, broken transfers

#[derive(Clone, Default)]
struct Route {
    redirect: Option<String>,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
    /// Close the connection after this many body bytes (a broken transfer).
    cut_after: Option<usize>,
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Route>,
    /// (path, Range header) of every request.
    log: Vec<(String, Option<String>)>,
}

struct Server {
    base: String,
    state: Arc<Mutex<State>>,
}

impl Server {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let st = st.clone();
                std::thread::spawn(move || handle(s, &st));
            }
        });
        Self { base, state }
    }

    fn route(&self, path: &str, r: Route) {
        self.state.lock().unwrap().routes.insert(path.into(), r);
    }

    fn requests(&self) -> Vec<(String, Option<String>)> {
        self.state.lock().unwrap().log.clone()
    }

    fn endpoints(&self) -> Endpoints {
        Endpoints {
            hf: self.base.clone(),
            release: format!("{}/rel", self.base),
        }
    }

    /// A Hub file: LFS files redirect to a CDN path with `X-Linked-Etag` (SHA-256) and
    /// `X-Linked-Size`; small files are served directly with their Git blob id as `ETag`.
    fn hf(&self, repo: &str, file: &str, body: &[u8], lfs: bool) {
        self.hf_with_etag(repo, file, body, lfs, None)
    }

    fn hf_with_etag(&self, repo: &str, file: &str, body: &[u8], lfs: bool, etag: Option<&str>) {
        let path = format!("/{repo}/resolve/main/{file}");
        if lfs {
            let sha = etag.map_or_else(|| sha256(body), str::to_string);
            let cdn = format!("/cdn/{sha}");
            self.route(
                &path,
                Route {
                    redirect: Some(cdn.clone()),
                    headers: vec![
                        ("X-Linked-Etag".into(), format!("\"{sha}\"")),
                        ("X-Linked-Size".into(), body.len().to_string()),
                        ("X-Repo-Commit".into(), "0123abcd".into()),
                    ],
                    ..Default::default()
                },
            );
            self.route(
                &cdn,
                Route {
                    body: body.to_vec(),
                    ..Default::default()
                },
            );
        } else {
            let git = etag.map_or_else(|| git_sha1(body), str::to_string);
            self.route(
                &path,
                Route {
                    body: body.to_vec(),
                    headers: vec![
                        ("ETag".into(), format!("\"{git}\"")),
                        ("X-Repo-Commit".into(), "0123abcd".into()),
                    ],
                    ..Default::default()
                },
            );
        }
    }

    /// A GitHub release asset: a redirect to an asset host, which serves the bytes.
    fn release(&self, file: &str, body: &[u8]) {
        self.route(
            &format!("/rel/{file}"),
            Route {
                redirect: Some(format!("/assets/{file}")),
                ..Default::default()
            },
        );
        self.route(
            &format!("/assets/{file}"),
            Route {
                body: body.to_vec(),
                ..Default::default()
            },
        );
    }

    fn cut(&self, path: &str, after: Option<usize>) {
        self.state
            .lock()
            .unwrap()
            .routes
            .get_mut(path)
            .unwrap()
            .cut_after = after;
    }
}

fn handle(mut s: TcpStream, st: &Mutex<State>) {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("range")
        {
            range = Some(v.trim().to_string());
        }
    }
    let route = {
        let mut g = st.lock().unwrap();
        g.log.push((path.clone(), range.clone()));
        g.routes.get(&path).cloned()
    };
    let Some(route) = route else {
        let _ = s
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let mut head = String::new();
    for (k, v) in &route.headers {
        head += &format!("{k}: {v}\r\n");
    }
    if let Some(loc) = &route.redirect {
        let _ = s.write_all(
            format!(
                "HTTP/1.1 302 Found\r\nLocation: {loc}\r\n{head}Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        return;
    }
    let len = route.body.len();
    let (status, slice, extra) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        Some(spec) => {
            let (a, b) = spec.split_once('-').unwrap();
            let start: usize = a.parse().unwrap();
            let end: usize = if b.is_empty() {
                len.saturating_sub(1)
            } else {
                b.parse::<usize>().unwrap().min(len - 1)
            };
            if start >= len {
                let _ = s.write_all(
                    format!(
                        "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\n{head}Content-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                );
                return;
            }
            (
                "206 Partial Content",
                &route.body[start..=end],
                format!("Content-Range: bytes {start}-{end}/{len}\r\n"),
            )
        }
        None => ("200 OK", &route.body[..], String::new()),
    };
    let _ = s.write_all(
        format!(
            "HTTP/1.1 {status}\r\n{extra}{head}Content-Length: {}\r\nConnection: close\r\n\r\n",
            slice.len()
        )
        .as_bytes(),
    );
    let n = route.cut_after.unwrap_or(slice.len()).min(slice.len());
    let _ = s.write_all(&slice[..n]);
    let _ = s.flush();
    let _ = s.shutdown(std::net::Shutdown::Both);
}

// ---------------------------------------------------------------------------------------------
// helpers

fn sha256(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}
fn md5(b: &[u8]) -> String {
    hex(&Md5::digest(b))
}
fn git_sha1(b: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", b.len()).as_bytes());
    h.update(b);
    hex(&h.finalize())
}
fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Deterministic pseudo-random bytes.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mmaudio-fetch-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn opts(endpoints: Endpoints) -> (FetchOptions, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(vec![]));
    let l = lines.clone();
    (
        FetchOptions {
            endpoints,
            progress: false,
            log: Some(Arc::new(move |m: &str| {
                l.lock().unwrap().push(m.to_string())
            })),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(10),
            hf_token: None,
        },
        lines,
    )
}

fn file(component: Component, rel: &str, source: Source, md5: Option<String>) -> OfficialFile {
    OfficialFile {
        component,
        role: FileRole::Weights,
        rel_path: PathBuf::from(rel),
        source,
        md5,
        approx_size: 0,
        fallback: None,
    }
}

fn hf(repo: &str, f: &str) -> Source {
    Source::HuggingFace {
        repo: repo.into(),
        file: f.into(),
    }
}
fn rel(f: &str) -> Source {
    Source::Release { file: f.into() }
}

fn outcomes(r: &mmaudio::fetch::FetchReport) -> Vec<&Outcome> {
    r.files.iter().map(|f| &f.outcome).collect()
}

// ---------------------------------------------------------------------------------------------
// fetch

#[test]
fn fresh_download_is_verified_recorded_and_idempotent_then_resumes_a_part() {
    let srv = Server::start();
    let d = tmpdir("fresh");
    let vae = bytes(300_000, 1);
    let big = bytes(700_000, 2);
    let cfg = br#"{"num_mels": 128, "sampling_rate": 44100}"#.to_vec();
    srv.release("vae.pth", &vae);
    srv.hf("org/big", "big.pt", &big, true);
    srv.hf("org/big", "config.json", &cfg, false);
    let files = vec![
        file(
            Component::Vae,
            "ext_weights/vae.pth",
            rel("vae.pth"),
            Some(md5(&vae)),
        ),
        file(
            Component::Vocoder,
            "ext_weights/b/big.pt",
            hf("org/big", "big.pt"),
            None,
        ),
        OfficialFile {
            role: FileRole::Config,
            ..file(
                Component::Vocoder,
                "ext_weights/b/config.json",
                hf("org/big", "config.json"),
                None,
            )
        },
    ];
    let (o, log) = opts(srv.endpoints());

    // 1. fresh
    let r = fetch_files(&d, &files, &o).unwrap();
    let hows: Vec<String> = r
        .files
        .iter()
        .map(|f| match &f.outcome {
            Outcome::Downloaded {
                how, resumed_from, ..
            } => {
                assert_eq!(*resumed_from, 0);
                how.clone()
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(
        hows[0].contains(&format!("official MD5 {}", md5(&vae))),
        "{hows:?}"
    );
    assert!(
        hows[1].contains(&format!("Hub SHA-256 {}", sha256(&big))),
        "{hows:?}"
    );
    assert!(
        hows[2].contains(&format!("Git blob SHA-1 {}", git_sha1(&cfg))),
        "{hows:?}"
    );
    assert_eq!(std::fs::read(d.join("ext_weights/vae.pth")).unwrap(), vae);
    assert_eq!(std::fs::read(d.join("ext_weights/b/big.pt")).unwrap(), big);
    assert_eq!(
        std::fs::read(d.join("ext_weights/b/config.json")).unwrap(),
        cfg
    );
    assert!(!d.join("ext_weights/b/big.pt.part").exists());
    let store = ChecksumStore::load(&d);
    let v = store
        .get("ext_weights/b/big.pt")
        .unwrap()
        .verified
        .clone()
        .unwrap();
    assert_eq!(
        (v.sha256.as_str(), v.size),
        (sha256(&big).as_str(), big.len() as u64)
    );
    assert!(v.against.contains("Hub SHA-256"));

    // 2. idempotent: nothing is requested
    let before = srv.requests().len();
    log.lock().unwrap().clear();
    let r = fetch_files(&d, &files, &o).unwrap();
    assert!(
        outcomes(&r)
            .iter()
            .all(|o| matches!(o, Outcome::Present { .. })),
        "{:?}",
        outcomes(&r)
    );
    assert_eq!(
        srv.requests().len(),
        before,
        "a second run must not touch the network"
    );
    assert!(
        !log.lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("verifying")),
        "a second run must not hash again: {:?}",
        log.lock().unwrap()
    );

    // 3. a Hub file placed by hand (no record) is verified with one metadata request and
    // no content transfer
    std::fs::remove_file(d.join(CHECKSUMS_FILE)).unwrap();
    let before = srv.requests().len();
    let r = fetch_files(&d, &files[1..2], &o).unwrap();
    match &r.files[0].outcome {
        Outcome::Present { how } => assert!(how.contains("Hub SHA-256"), "{how}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        srv.requests()[before..],
        [(
            "/org/big/resolve/main/big.pt".to_string(),
            Some("bytes=0-0".to_string())
        )]
    );

    // 4. resume: half of the file is already in a .part
    std::fs::remove_file(d.join("ext_weights/b/big.pt")).unwrap();
    std::fs::write(d.join("ext_weights/b/big.pt.part"), &big[..250_000]).unwrap();
    let before = srv.requests().len();
    let r = fetch_files(&d, &files[1..2], &o).unwrap();
    match &r.files[0].outcome {
        Outcome::Downloaded {
            resumed_from,
            bytes,
            ..
        } => assert_eq!((*resumed_from, *bytes), (250_000, 450_000)),
        other => panic!("{other:?}"),
    }
    let reqs = srv.requests()[before..].to_vec();
    assert!(
        reqs.iter()
            .any(|(p, r)| p.starts_with("/cdn/") && r.as_deref() == Some("bytes=250000-")),
        "{reqs:?}"
    );
    assert_eq!(std::fs::read(d.join("ext_weights/b/big.pt")).unwrap(), big);

    // 5. a file changed by hand is detected and fetched again (md5 reference)
    std::fs::write(d.join("ext_weights/vae.pth"), b"something else").unwrap();
    let r = fetch_files(&d, &files[..1], &o).unwrap();
    assert!(matches!(r.files[0].outcome, Outcome::Downloaded { .. }));
    assert_eq!(std::fs::read(d.join("ext_weights/vae.pth")).unwrap(), vae);
    assert_eq!(
        std::fs::read(d.join("ext_weights/vae.pth.mismatch")).unwrap(),
        b"something else",
        "the mismatching file is moved aside, not deleted"
    );
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn broken_transfer_keeps_the_part_and_the_next_run_resumes() {
    let srv = Server::start();
    let d = tmpdir("broken");
    let body = bytes(400_000, 3);
    srv.release("syn.pth", &body);
    srv.cut("/assets/syn.pth", Some(123_456));
    let files = vec![file(
        Component::Synchformer,
        "ext_weights/syn.pth",
        rel("syn.pth"),
        Some(md5(&body)),
    )];
    let (o, _) = opts(srv.endpoints());
    let e = fetch_files(&d, &files, &o).unwrap_err().to_string();
    eprintln!("{e}");
    assert!(
        e.contains("run `mmaudio fetch-weights` again to resume"),
        "{e}"
    );
    assert!(e.contains("syn.pth.part"), "{e}");
    assert!(!d.join("ext_weights/syn.pth").exists());
    assert_eq!(
        std::fs::metadata(d.join("ext_weights/syn.pth.part"))
            .unwrap()
            .len(),
        123_456
    );
    srv.cut("/assets/syn.pth", None);
    let r = fetch_files(&d, &files, &o).unwrap();
    match &r.files[0].outcome {
        Outcome::Downloaded { resumed_from, .. } => assert_eq!(*resumed_from, 123_456),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(d.join("ext_weights/syn.pth")).unwrap(), body);
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn checksum_mismatch_names_file_and_sums_and_installs_nothing() {
    let srv = Server::start();
    let d = tmpdir("mismatch");
    let good = bytes(50_000, 4);
    let bad = bytes(50_000, 5);
    srv.release("v1-16.pth", &bad);
    // Hub file whose content does not match the SHA-256 the Hub announces
    srv.hf_with_etag("org/x", "x.pt", &bad, true, Some(&sha256(&good)));
    let files = vec![
        file(
            Component::Vae,
            "ext_weights/v1-16.pth",
            rel("v1-16.pth"),
            Some(md5(&good)),
        ),
        file(
            Component::Vocoder,
            "ext_weights/x.pt",
            hf("org/x", "x.pt"),
            None,
        ),
    ];
    let (o, _) = opts(srv.endpoints());
    let e = fetch_files(&d, &files, &o).unwrap_err().to_string();
    eprintln!("{e}");
    let target = d.join("ext_weights/v1-16.pth");
    assert!(
        e.contains(&format!(
            "checksum mismatch for {}: expected MD5 {}, got {}",
            target.display(),
            md5(&good),
            md5(&bad)
        )),
        "{e}"
    );
    assert!(
        e.contains(&format!(
            "expected SHA-256 {}, got {}",
            sha256(&good),
            sha256(&bad)
        )),
        "{e}"
    );
    assert!(e.contains("nothing was written to"), "{e}");
    for f in ["v1-16.pth", "v1-16.pth.part", "x.pt", "x.pt.part"] {
        assert!(
            !d.join("ext_weights").join(f).exists(),
            "{f} must not be left behind"
        );
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn official_catalogue_through_a_mirror_checks_official_md5_and_skips_conversions() {
    // The real file list of small_16k, served by a "mirror" with wrong content for the MD5
    // files: the official MD5 is enforced; the Hub-verified CLIP files pass; the network is
    // provided by a conversion and is not requested.
    let srv = Server::start();
    let d = tmpdir("official");
    std::fs::write(d.join("mmaudio_small_16k_fp16.safetensors"), b"x").unwrap();
    let mut expect_fail = vec![];
    for f in official_files(Variant::Small16k) {
        // the mirror has only the torch .bin of CLIP, as some open_clip repositories
        let f = match f.fallback {
            Some(fb) => *fb,
            None => f,
        };
        let body = bytes(10_000 + f.rel_path.to_string_lossy().len(), 7);
        match &f.source {
            Source::HuggingFace { repo, file } => {
                srv.hf(repo, file, &body, !file.ends_with(".json"))
            }
            Source::Release { file } => {
                srv.release(file, &body);
                expect_fail.push(file.clone());
            }
        }
    }
    let (o, _) = opts(srv.endpoints());
    let e = fetch_variant(&d, Variant::Small16k, &o)
        .unwrap_err()
        .to_string();
    eprintln!("{e}");
    assert!(e.contains("could not fetch 3 of 6 file(s)"), "{e}");
    assert!(
        e.contains("expected MD5 69f56803f59a549a1a507c93859fd4d7"),
        "official v1-16.pth MD5: {e}"
    );
    for f in &expect_fail {
        assert!(e.contains(&format!("{}/rel/{f}", srv.base)), "{f}: {e}");
    }
    assert!(
        d.join("ext_weights/DFN5B-CLIP-ViT-H-14-384/open_clip_pytorch_model.bin")
            .is_file(),
        "open_clip_model.safetensors is not on the mirror: the .bin is fetched instead"
    );
    assert!(
        !d.join("ext_weights/DFN5B-CLIP-ViT-H-14-384/open_clip_model.safetensors")
            .exists()
    );
    assert!(
        d.join("ext_weights/DFN5B-CLIP-ViT-H-14-384/open_clip_config.json")
            .is_file()
    );
    assert!(
        !srv.requests()
            .iter()
            .any(|(p, _)| p.contains("mmaudio_small_16k")),
        "the network is provided by the conversion"
    );
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn unreachable_server_names_every_url_and_target_path() {
    // a port nobody listens on
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let d = tmpdir("offline");
    let (o, _) = opts(Endpoints {
        hf: base.clone(),
        release: format!("{base}/rel"),
    });
    // a CLIP file placed by hand: kept (it cannot be verified without the Hub) and not listed
    let clip = d.join("m/ext_weights/DFN5B-CLIP-ViT-H-14-384/open_clip_model.safetensors");
    std::fs::create_dir_all(clip.parent().unwrap()).unwrap();
    std::fs::write(&clip, b"placed by hand").unwrap();
    let (o, log) = opts(o.endpoints.clone());
    let e = fetch_variant(&d.join("m"), Variant::Small44k, &o)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot be reached"), "{e}");
    assert!(e.contains("could not fetch 6 of 7 file(s)"), "{e}");
    assert!(!e.contains(&format!("-> {}", clip.display())), "{e}");
    assert_eq!(std::fs::read(&clip).unwrap(), b"placed by hand");
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("present but NOT verified")),
        "{:?}",
        log.lock().unwrap()
    );
    for f in official_files(Variant::Small44k) {
        if f.rel_path.ends_with("open_clip_model.safetensors") {
            continue;
        }
        let url = o.endpoints.url(&f.source);
        assert!(e.contains(&url), "{url} missing in: {e}");
        let p = d.join("m").join(&f.rel_path);
        assert!(
            e.contains(&format!("-> {}", p.display())),
            "{} missing: {e}",
            p.display()
        );
    }
    assert!(
        e.contains(&format!(
            "mmaudio check-weights {} --variant small_44k",
            d.join("m").display()
        )),
        "{e}"
    );

    // the same through the CLI, with the endpoints from the environment
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mmaudio"))
        .args(["fetch-weights", "--variant", "small_16k", "--model-dir"])
        .arg(d.join("cli"))
        .env("MMAUDIO_HF_ENDPOINT", &base)
        .env("MMAUDIO_RELEASE_BASE_URL", format!("{base}/rel"))
        .env_remove("HF_ENDPOINT")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{base}/hkchengrex/MMAudio/resolve/main/weights/mmaudio_small_16k.pth"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("{base}/rel/best_netG.pt")), "{err}");
    assert!(
        err.contains(&format!(
            "-> {}",
            d.join("cli/ext_weights/best_netG.pt").display()
        )),
        "{err}"
    );
    std::fs::remove_dir_all(&d).ok();
}

// ---------------------------------------------------------------------------------------------
// check-weights

/// A safetensors file with the given tensor shapes whose data is a sparse hole (zeros, no disk
/// use): enough for every header-level check at the real sizes.
fn sparse_safetensors(path: &Path, tensors: &[(String, Vec<usize>)], dtype: &str) {
    let es = if dtype == "F16" { 2 } else { 4 };
    let mut off = 0usize;
    let mut hdr = serde_json::Map::new();
    for (k, s) in tensors {
        let n = s.iter().product::<usize>() * es;
        hdr.insert(
            k.clone(),
            serde_json::json!({"dtype": dtype, "shape": s, "data_offsets": [off, off + n]}),
        );
        off += n;
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(hdr)).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(&(h.len() as u64).to_le_bytes()).unwrap();
    f.write_all(&h).unwrap();
    f.set_len((8 + h.len() + off) as u64).unwrap();
}

fn shapes(list: &[(&str, &[usize])]) -> Vec<(String, Vec<usize>)> {
    list.iter()
        .map(|(k, s)| (k.to_string(), s.to_vec()))
        .collect()
}

fn vocoder_tensors(mels: usize, conv_pre: &str) -> Vec<(String, Vec<usize>)> {
    shapes(&[
        (conv_pre, &[1536, mels, 7]),
        ("conv_pre.bias", &[1536]),
        ("ups.0.0.bias", &[768]),
        ("resblocks.0.convs1.0.bias", &[768]),
        ("conv_post.bias", &[1]),
    ])
}

fn vae_tensors(mels: usize, latent: usize) -> Vec<(String, Vec<usize>)> {
    shapes(&[
        ("data_mean", &[1, mels, 1]),
        ("data_std", &[1, mels, 1]),
        ("encoder.conv_in.weight", &[64, mels, 3]),
        ("decoder.conv_in.weight", &[64, latent, 3]),
    ])
}

fn synchformer_tensors() -> Vec<(String, Vec<usize>)> {
    let mut v = shapes(&[
        (
            "vfeat_extractor.patch_embed_3d.proj.weight",
            &[768, 3, 2, 16, 16],
        ),
        ("vfeat_extractor.cls_token", &[1, 1, 768]),
        ("vfeat_extractor.pos_embed", &[1, 197, 768]),
        ("vfeat_extractor.temp_embed", &[1, 8, 768]),
    ]);
    for i in 0..12 {
        v.push((
            format!("vfeat_extractor.blocks.{i}.norm1.weight"),
            vec![768],
        ));
    }
    v
}

fn clip_tensors() -> Vec<(String, Vec<usize>)> {
    let mut v = shapes(&[
        ("visual.conv1.weight", &[1280, 3, 14, 14]),
        ("visual.positional_embedding", &[730, 1280]),
        ("visual.proj", &[1280, 1024]),
        ("token_embedding.weight", &[49408, 1024]),
        ("positional_embedding", &[77, 1024]),
        ("text_projection", &[1024, 1024]),
    ]);
    for i in 0..32 {
        v.push((
            format!("visual.transformer.resblocks.{i}.ln_1.weight"),
            vec![1280],
        ));
    }
    for i in 0..24 {
        v.push((format!("transformer.resblocks.{i}.ln_1.weight"), vec![1024]));
    }
    v
}

#[allow(clippy::result_large_err)]
fn net_tensors(cfg: &NetConfig) -> Vec<(String, Vec<usize>)> {
    expected_shapes(|vb| mmaudio::net::MmAudioNet::new(vb, cfg).map(|_| ())).unwrap()
}

fn file_md5(p: &Path) -> String {
    md5(&std::fs::read(p).unwrap())
}

/// A small_16k folder of real-shaped (sparse) conversions described by a manifest.
fn manifest_folder(d: &Path) {
    sparse_safetensors(
        &d.join("net.safetensors"),
        &net_tensors(&NetConfig::small_16k()),
        "F16",
    );
    sparse_safetensors(&d.join("vae.safetensors"), &vae_tensors(80, 20), "F32");
    sparse_safetensors(
        &d.join("voc.safetensors"),
        &vocoder_tensors(80, "conv_pre.weight"),
        "F32",
    );
    sparse_safetensors(&d.join("sync.safetensors"), &synchformer_tensors(), "F16");
    sparse_safetensors(&d.join("clip.safetensors"), &clip_tensors(), "F16");
    let entry = |f: &str, md5: Option<String>| mmaudio::model_dir::ComponentEntry {
        file: f.into(),
        md5,
        ..Default::default()
    };
    let m = Manifest {
        format: 1,
        variant: Some(Variant::Small16k),
        net: Some(entry("net.safetensors", None)),
        vae: Some(entry(
            "vae.safetensors",
            Some(file_md5(&d.join("vae.safetensors"))),
        )),
        vocoder: Some(entry("voc.safetensors", None)),
        synchformer: Some(entry("sync.safetensors", None)),
        clip: Some(entry("clip.safetensors", None)),
        ..Default::default()
    };
    std::fs::write(d.join(MANIFEST), serde_json::to_string_pretty(&m).unwrap()).unwrap();
}

fn findings(r: &mmaudio::weights::check::CheckReport, c: Component) -> String {
    r.files
        .iter()
        .filter(|f| f.component == c)
        .flat_map(|f| &f.findings)
        .map(|x| format!("{:?} {} {}", x.level, x.aspect, x.message))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn check_passes_a_consistent_folder_and_reports_a_truncated_file() {
    let d = tmpdir("check-ok");
    manifest_folder(&d);
    let r = check_weights(&d, None, &CheckOptions::default()).unwrap();
    eprintln!("{}", r.render());
    assert!(r.ok(), "{}", r.render());
    assert_eq!(r.variant, Variant::Small16k);
    let net = findings(&r, Component::Net);
    assert!(
        net.contains("the small_16k network") && net.contains("all 251 tensors present"),
        "{net}"
    );
    assert!(net.contains("no reference checksum (conversion"), "{net}");
    assert!(
        findings(&r, Component::Vae).contains("matches the MD5 given by mmaudio.json"),
        "{}",
        r.render()
    );

    // a conversion that lost a tensor and gained a foreign one
    let mut t = net_tensors(&NetConfig::small_16k());
    let dropped = t.remove(17).0;
    t.push(("model.extra.weight".into(), vec![4]));
    sparse_safetensors(&d.join("net.safetensors"), &t, "F16");
    let r = check_weights(&d, None, &CheckOptions::default()).unwrap();
    let net = findings(&r, Component::Net);
    assert!(
        net.contains(&format!(
            "does not hold the small_16k network: 1 tensor(s) missing (`{dropped}`); 1 that do not belong to it (`model.extra.weight`)"
        )),
        "{net}"
    );
    sparse_safetensors(
        &d.join("net.safetensors"),
        &net_tensors(&NetConfig::small_16k()),
        "F16",
    );

    // truncate the VAE: the checksum and the file format both say so
    let p = d.join("vae.safetensors");
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let r = check_weights(&d, None, &CheckOptions::default()).unwrap();
    eprintln!("{}", r.render());
    assert!(!r.ok());
    let vae = findings(&r, Component::Vae);
    assert!(
        vae.contains("Error checksum checksum mismatch for"),
        "{vae}"
    );
    assert!(
        vae.contains("Error content cannot read weights file"),
        "{vae}"
    );
    assert_eq!(r.errors(), 2, "{}", r.render());
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn check_names_a_wrong_variant_network_and_wrong_mode_vae() {
    // small_44k-shaped tensors saved as the official mmaudio_small_16k.pth: only the tensors
    // the variant check reads (real shapes), so the file stays small
    let d = tmpdir("check-variant");
    std::fs::create_dir_all(d.join("weights")).unwrap();
    std::fs::create_dir_all(d.join("ext_weights")).unwrap();
    let all = net_tensors(&NetConfig::small_44k());
    let keep = |k: &str| {
        k == "audio_input_proj.0.weight"
            || k.ends_with("_input_proj.0.weight")
            || k == "empty_string_feat"
            || (k.contains("_blocks.") && k.ends_with("norm.weight"))
    };
    let tensors: Vec<(String, Tensor)> = all
        .iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, s)| {
            (
                k.clone(),
                Tensor::zeros(s.as_slice(), DType::F32, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    assert!(tensors.len() > 10);
    mmaudio::weights::write_pth(&d.join("weights/mmaudio_small_16k.pth"), &tensors, None).unwrap();
    // the 44.1 kHz VAE under the 16 kHz name
    let vae: Vec<(String, Tensor)> = vae_tensors(128, 40)
        .into_iter()
        .map(|(k, s)| (k, Tensor::zeros(s, DType::F32, &Device::Cpu).unwrap()))
        .collect();
    mmaudio::weights::write_pth(&d.join("ext_weights/v1-16.pth"), &vae, None).unwrap();

    let r = check_weights(&d, Some(Variant::Small16k), &CheckOptions::default()).unwrap();
    eprintln!("{}", r.render());
    let net = findings(&r, Component::Net);
    assert!(net.contains("looks like small_44k"), "{net}");
    assert!(
        net.contains("expected MD5 af93cde404179f58e3919ac085b8033b"),
        "{net}"
    );
    let vae = findings(&r, Component::Vae);
    assert!(
        vae.contains("this looks like the 44k VAE v1-44.pth"),
        "{vae}"
    );
    let voc = findings(&r, Component::Vocoder);
    assert!(
        voc.contains("Error presence")
            && voc.contains("best_netG.pt")
            && voc.contains("fetch-weights"),
        "{voc}"
    );

    // the CLI exits non-zero with the same report
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mmaudio"))
        .args(["check-weights"])
        .arg(&d)
        .args(["--variant", "small_16k"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.contains("looks like small_44k"), "{stdout}");
    assert!(stdout.contains("ERROR"), "{stdout}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn hub_verified_vocoder_is_rechecked_offline_and_truncation_is_named() {
    // fetch the 44.1 kHz vocoder (+ config) of the official catalogue from a mirror, then check
    // it offline from the recorded SHA-256; truncate it and check again
    let srv = Server::start();
    let d = tmpdir("check-hub");
    let voc: Vec<(String, Tensor)> = vocoder_tensors(128, "conv_pre.weight_v")
        .into_iter()
        .map(|(k, s)| (k, Tensor::zeros(s, DType::F32, &Device::Cpu).unwrap()))
        .collect();
    let src = d.join("src.pt");
    mmaudio::weights::write_pth(&src, &voc, Some("generator")).unwrap();
    let body = std::fs::read(&src).unwrap();
    std::fs::remove_file(&src).unwrap();
    let cfg = br#"{"num_mels": 128, "sampling_rate": 44100, "hop_size": 512}"#;
    let files: Vec<OfficialFile> = official_files(Variant::Small44k)
        .into_iter()
        .filter(|f| f.component == Component::Vocoder)
        .collect();
    assert_eq!(files.len(), 2);
    srv.hf(
        "nvidia/bigvgan_v2_44khz_128band_512x",
        "bigvgan_generator.pt",
        &body,
        true,
    );
    srv.hf(
        "nvidia/bigvgan_v2_44khz_128band_512x",
        "config.json",
        cfg,
        false,
    );
    let (o, _) = opts(srv.endpoints());
    fetch_files(&d, &files, &o).unwrap();
    assert!(d.join(CHECKSUMS_FILE).is_file());

    let r = check_weights(&d, Some(Variant::Small44k), &CheckOptions::default()).unwrap();
    let v = findings(&r, Component::Vocoder);
    assert!(
        v.contains(&format!(
            "Ok checksum matches Hub SHA-256 {}",
            sha256(&body)
        )),
        "{v}"
    );
    assert!(v.contains("BigVGAN-v2 generator for 128 mel bins"), "{v}");
    assert!(v.contains("Ok config BigVGAN-v2 configuration"), "{v}");
    assert!(findings(&r, Component::Net).contains("Error presence"));

    let p = d.join("ext_weights/bigvgan_v2_44khz_128band_512x/bigvgan_generator.pt");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(body.len() as u64 - 1000)
        .unwrap();
    let r = check_weights(&d, Some(Variant::Small44k), &CheckOptions::default()).unwrap();
    eprintln!("{}", r.render());
    let v = findings(&r, Component::Vocoder);
    assert!(
        v.contains(&format!(
            "the file is truncated ({} bytes; the verified download had {})",
            body.len() - 1000,
            body.len()
        )),
        "{v}"
    );
    assert!(v.contains("Error content"), "{v}");
    let levels: Vec<Level> = r
        .files
        .iter()
        .filter(|f| f.component == Component::Vocoder)
        .map(|f| f.level())
        .collect();
    assert_eq!(levels, vec![Level::Error, Level::Ok], "weights then config");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn full_check_loads_a_manifest_network() {
    // a tiny network described by the manifest: the header check and the full load both pass;
    // a file of another configuration is named as such by both
    let d = tmpdir("check-full");
    let cfg = NetConfig {
        hidden_dim: 64,
        num_heads: 1,
        depth: 2,
        fused_depth: 1,
        ..NetConfig::small_16k()
    };
    let w = mmaudio::net::random_weights(&cfg, 3).unwrap();
    candle_core::safetensors::save(&w, d.join("tiny.safetensors")).unwrap();
    // written as a user would: official variant name
    let m = serde_json::json!({
        "variant": "small_16k",
        "net": { "file": "tiny.safetensors", "config": cfg },
    });
    std::fs::write(d.join(MANIFEST), m.to_string()).unwrap();
    let full = CheckOptions {
        full: true,
        log: None,
    };
    let r = check_weights(&d, None, &full).unwrap();
    let net = findings(&r, Component::Net);
    assert!(
        net.contains("Ok content the configured network (hidden 64, depth 2, fused 1"),
        "{net}"
    );
    assert!(net.contains("Ok load every tensor loads"), "{net}");

    let other = NetConfig {
        depth: 3,
        ..cfg.clone()
    };
    let w = mmaudio::net::random_weights(&other, 3).unwrap();
    candle_core::safetensors::save(&w, d.join("tiny.safetensors")).unwrap();
    let r = check_weights(&d, None, &full).unwrap();
    let net = findings(&r, Component::Net);
    assert!(
        net.contains("Error content") && net.contains("depth 3"),
        "{net}"
    );
    assert!(
        !net.contains("load"),
        "no full load after a failed header check: {net}"
    );
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn not_enough_disk_space_is_said_before_writing() {
    let srv = Server::start();
    let d = tmpdir("space");
    srv.route(
        "/org/huge/resolve/main/huge.pt",
        Route {
            redirect: Some("/cdn/huge".into()),
            headers: vec![
                ("X-Linked-Etag".into(), format!("\"{}\"", "0".repeat(64))),
                ("X-Linked-Size".into(), "900000000000000000".into()),
            ],
            ..Default::default()
        },
    );
    srv.route(
        "/cdn/huge",
        Route {
            body: b"tiny".to_vec(),
            ..Default::default()
        },
    );
    let files = vec![file(
        Component::Clip,
        "ext_weights/huge.pt",
        hf("org/huge", "huge.pt"),
        None,
    )];
    let (o, _) = opts(srv.endpoints());
    let e = fetch_files(&d, &files, &o).unwrap_err().to_string();
    assert!(
        e.contains("not enough disk space for huge.pt: 900000000.00 GB needed"),
        "{e}"
    );
    assert!(!d.join("ext_weights").exists(), "nothing is created: {e}");
    std::fs::remove_dir_all(&d).ok();
}
