//! Loader fuzzing: mutated copies of the tiny test model's files — the `.pth` zip
//! checkpoints (flow network, VAE, vocoder, Synchformer), the CLIP safetensors and the
//! `mmaudio.json` manifest — must each load or fail with a clear error naming the file:
//! never a panic, never a hang.
//!
//! Mutations are both blind (bytes flipped, cut, inserted, duplicated, "interesting"
//! integers written) and structure-aware, so that they get past the containers' own checks
//! and reach the parsers behind them: a `.pth` is unzipped, one of its entries (mostly the
//! pickle) mutated and the archive rebuilt with valid CRCs; a safetensors file gets its
//! JSON header edited (shapes, offsets, dtypes, names) and its length field rewritten; the
//! manifest is edited as JSON (values replaced by zero, negative, huge, fractional, wrong
//! types; keys removed).
//!
//! Each case runs on its own thread under a time limit. Two levels: the weight file alone
//! (`WeightFile::open` and every tensor read), which is cheap, and the whole model
//! (`load_generator` on a model folder with the one mutated file), which builds every
//! network. CI runs a bounded count with a fixed seed; `scripts/fuzz-loaders.sh` runs many
//! more (`MMAUDIO_FUZZ_CASES` cases per file kind, `MMAUDIO_FUZZ_SEED`).

use candle_core::{DType, Device};
use mmaudio::generator::LoadOptions;
use mmaudio::weights::WeightFile;
use mmaudio::{Mode, Variant};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// SplitMix64: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const INTERESTING: [u64; 12] = [
    0,
    1,
    0x7f,
    0xff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    0x1_0000_0000,
    i64::MAX as u64,
    u64::MAX,
    u64::MAX - 1,
    1 << 40,
];

/// A blind byte-level mutation.
fn mutate_bytes(rng: &mut Rng, data: &[u8]) -> Vec<u8> {
    let mut d = data.to_vec();
    let len = d.len().max(1);
    match rng.below(7) {
        0 => {
            for _ in 0..1 + rng.below(8) {
                if !d.is_empty() {
                    let i = rng.below(d.len());
                    d[i] = rng.next() as u8;
                }
            }
        }
        1 => d.truncate(rng.below(len)),
        2 => {
            let at = rng.below(d.len() + 1);
            let n = 1 + rng.below(64);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            d.splice(at..at, bytes);
        }
        3 => {
            let at = rng.below(d.len());
            let n = rng.below(len - at.min(len - 1)).min(4096);
            d.drain(at..(at + n).min(d.len()));
        }
        4 => {
            let at = rng.below(d.len());
            let n = (1 + rng.below(256)).min(d.len() - at.min(d.len()));
            let v = if rng.chance(50) { 0 } else { 0xff };
            for b in &mut d[at..at + n] {
                *b = v;
            }
        }
        5 => {
            let at = rng.below(d.len());
            let n = (1 + rng.below(256)).min(d.len() - at.min(d.len()));
            let chunk = d[at..at + n].to_vec();
            let to = rng.below(d.len() + 1);
            d.splice(to..to, chunk);
        }
        _ => {
            let v = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
            let w = [1, 2, 4, 8][rng.below(4)];
            if d.len() >= w {
                let at = rng.below(d.len() - w + 1);
                d[at..at + w].copy_from_slice(&v[..w]);
            }
        }
    }
    d
}

/// Unzip a `.pth`, mutate one entry (mostly the pickle), zip it again with valid CRCs.
fn mutate_pth(rng: &mut Rng, data: &[u8]) -> Vec<u8> {
    let Ok(mut archive) = zip::ZipArchive::new(std::io::Cursor::new(data)) else {
        return mutate_bytes(rng, data);
    };
    let mut entries = Vec::new();
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).unwrap();
        let mut body = Vec::new();
        f.read_to_end(&mut body).unwrap();
        entries.push((f.name().unwrap().into_owned(), body));
    }
    let pickle = entries.iter().position(|(n, _)| n.ends_with("data.pkl"));
    let target = match pickle {
        Some(p) if rng.chance(70) => p,
        _ => rng.below(entries.len()),
    };
    let op = rng.below(10);
    if op == 0 && entries.len() > 1 {
        entries.remove(target);
    } else if op == 1 {
        let name = entries[target].0.clone();
        entries[target].0 = format!("{name}x");
    } else {
        entries[target].1 = mutate_bytes(rng, &entries[target].1);
    }
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut out);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, body) in &entries {
            w.start_file(name.as_str(), opts).unwrap();
            w.write_all(body).unwrap();
        }
        w.finish().unwrap();
    }
    out.into_inner()
}

/// Edit a JSON value: replace a random node with a hostile value, or remove a key.
fn mutate_json_value(rng: &mut Rng, v: &mut serde_json::Value) {
    use serde_json::{Value, json};
    match v {
        Value::Object(m) if !m.is_empty() && rng.chance(75) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = keys[rng.below(keys.len())].clone();
            if rng.chance(10) {
                m.remove(&k);
            } else {
                mutate_json_value(rng, m.get_mut(&k).unwrap());
            }
        }
        Value::Array(a) if !a.is_empty() && rng.chance(75) => {
            let i = rng.below(a.len());
            mutate_json_value(rng, &mut a[i]);
        }
        _ => {
            let hostile = [
                json!(0),
                json!(-1),
                json!(1),
                json!(3),
                json!(1_000_000_000u64),
                json!(u64::MAX),
                json!(i64::MIN),
                json!(1e300),
                json!(0.5),
                json!(-0.0),
                json!(""),
                json!("x"),
                json!("../../../../etc/passwd"),
                json!(null),
                json!(true),
                json!([]),
                json!({}),
                json!([1, 2, 3]),
            ];
            *v = hostile[rng.below(hostile.len())].clone();
        }
    }
}

fn mutate_json_text(rng: &mut Rng, data: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(mut v) if rng.chance(80) => {
            for _ in 0..1 + rng.below(3) {
                mutate_json_value(rng, &mut v);
            }
            serde_json::to_vec_pretty(&v).unwrap()
        }
        _ => mutate_bytes(rng, data),
    }
}

/// Edit the JSON header of a safetensors file (or its length field, or the data).
fn mutate_safetensors(rng: &mut Rng, data: &[u8]) -> Vec<u8> {
    if data.len() < 8 {
        return mutate_bytes(rng, data);
    }
    let n = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
    if n > data.len() - 8 {
        return mutate_bytes(rng, data);
    }
    let (header, body) = (&data[8..8 + n], &data[8 + n..]);
    match rng.below(10) {
        0 | 1 => mutate_bytes(rng, data),
        2 => {
            // A lying length field.
            let mut d = data.to_vec();
            let v = INTERESTING[rng.below(INTERESTING.len())];
            d[..8].copy_from_slice(&v.to_le_bytes());
            d
        }
        3 => {
            let mut d = data[..8 + n].to_vec();
            d.extend_from_slice(&mutate_bytes(rng, body));
            d
        }
        _ => {
            let header = mutate_json_text(rng, header);
            let mut d = (header.len() as u64).to_le_bytes().to_vec();
            d.extend_from_slice(&header);
            d.extend_from_slice(body);
            d
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Pth,
    Safetensors,
    Manifest,
}

/// The files of a model folder that are fuzzed: (relative path, kind, `.pth` key).
fn targets(dir: &Path) -> Vec<(PathBuf, Kind, Option<String>)> {
    let manifest: mmaudio::model_dir::Manifest =
        serde_json::from_slice(&std::fs::read(dir.join("mmaudio.json")).unwrap()).unwrap();
    let mut out = vec![(PathBuf::from("mmaudio.json"), Kind::Manifest, None)];
    for c in [
        manifest.net.as_ref(),
        manifest.vae.as_ref(),
        manifest.vocoder.as_ref(),
        manifest.synchformer.as_ref(),
        manifest.clip.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        let kind = if c.file.ends_with(".safetensors") {
            Kind::Safetensors
        } else {
            Kind::Pth
        };
        out.push((PathBuf::from(&c.file), kind, c.key.clone()));
    }
    out
}

fn mutate(rng: &mut Rng, kind: Kind, data: &[u8]) -> Vec<u8> {
    match kind {
        Kind::Pth if rng.chance(75) => mutate_pth(rng, data),
        Kind::Safetensors if rng.chance(75) => mutate_safetensors(rng, data),
        Kind::Manifest => mutate_json_text(rng, data),
        _ => mutate_bytes(rng, data),
    }
}

/// Run `f` on a thread with a time limit: `Ok(Ok(..))`/`Ok(Err(message))`, or `Err` for a
/// panic (its message) or a hang.
fn guarded<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<Result<T, String>, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("fuzz-case".into())
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(r);
        })
        .unwrap();
    match rx.recv_timeout(limit) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(panic)) => Err(format!(
            "panicked: {}",
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default()
        )),
        Err(_) => Err(format!("no result within {limit:?} (hang)")),
    }
}

/// Open a weight file and read every tensor.
fn read_weight_file(path: &Path, key: Option<&str>) -> Result<usize, String> {
    let wf = WeightFile::open_with_key(path, key).map_err(|e| e.to_string())?;
    let keys = wf.keys();
    for k in &keys {
        wf.load(k, DType::F32, &Device::Cpu)
            .map_err(|e| e.to_string())?;
    }
    Ok(keys.len())
}

fn load_model(dir: &Path) -> Result<u32, String> {
    let opts = LoadOptions {
        model_dir: dir.to_owned(),
        variant: Some(Variant::Small16k),
        device: "cpu".into(),
        precision: "f32".into(),
    };
    mmaudio::model::load_generator(&opts)
        .map(|g| g.sample_rate())
        .map_err(|e| e.to_string())
}

/// Copy a model folder (files hard-linked where possible).
fn copy_model(from: &Path, to: &Path) {
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).unwrap();
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        if std::fs::hard_link(&entry, &dest).is_err() {
            std::fs::copy(&entry, &dest).unwrap();
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

struct Findings(Vec<String>);

impl Findings {
    /// Record a fault (panic, hang) or an unclear error. A clear error names the mutated
    /// file — or, for a manifest, the file the (mutated) manifest points to.
    fn check<T>(
        &mut self,
        case: &str,
        file: &Path,
        kind: Kind,
        outcome: Result<Result<T, String>, String>,
    ) -> bool {
        match outcome {
            Ok(Ok(_)) => true,
            Ok(Err(msg)) => {
                let name = file.file_name().unwrap().to_string_lossy();
                let dir = file.parent().unwrap().to_string_lossy();
                let named = msg.contains(name.as_ref())
                    || (kind == Kind::Manifest && msg.contains(dir.as_ref()));
                if msg.trim().is_empty() || !named {
                    self.0
                        .push(format!("{case}: error does not name {name}: {msg:?}"));
                }
                false
            }
            Err(fault) => {
                self.0.push(format!("{case}: {fault}"));
                false
            }
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mmaudio-fuzz-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Each weight file and the manifest, mutated `MMAUDIO_FUZZ_CASES` times (default 300):
/// every mutation is read in full and either loads or fails naming the file.
#[test]
fn mutated_weight_files_fail_cleanly() {
    let cases = env_u64("MMAUDIO_FUZZ_CASES", 300);
    let seed = env_u64("MMAUDIO_FUZZ_SEED", 13);
    let root = scratch("files");
    let model = root.join("model");
    mmaudio::test_model::write_test_model(&model, Mode::Khz16, 1).unwrap();
    let mut findings = Findings(Vec::new());
    let started = Instant::now();
    let mut failed_cleanly = 0;
    let mut total = 0;
    for (t, (rel, kind, key)) in targets(&model).into_iter().enumerate() {
        let original = std::fs::read(model.join(&rel)).unwrap();
        let mut rng = Rng(seed.wrapping_mul(1000).wrapping_add(t as u64));
        for case in 0..cases {
            let data = mutate(&mut rng, kind, &original);
            let path = root
                .join(format!("case-{t}-{case}"))
                .join(rel.file_name().unwrap());
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &data).unwrap();
            let label = format!("{} case {case} (seed {seed})", rel.display());
            let outcome = match kind {
                Kind::Manifest => {
                    let dir = path.parent().unwrap().to_owned();
                    guarded(Duration::from_secs(20), move || {
                        mmaudio::model_dir::ModelDir::open(&dir)
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    })
                }
                _ => {
                    let (p, k) = (path.clone(), key.clone());
                    guarded(Duration::from_secs(20), move || {
                        read_weight_file(&p, k.as_deref()).map(|_| ())
                    })
                }
            };
            total += 1;
            if !findings.check(&label, &path, kind, outcome) {
                failed_cleanly += 1;
            }
            let _ = std::fs::remove_dir_all(path.parent().unwrap());
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    println!(
        "fuzz files: {total} mutated files, {failed_cleanly} rejected, {} loaded, {} findings, {:.1} s",
        total - failed_cleanly,
        findings.0.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(findings.0.is_empty(), "{:#?}", findings.0);
}

/// The whole model loaded with one mutated file (`MMAUDIO_FUZZ_MODEL_CASES` per file,
/// default 8): loads or fails naming the file, never panics or hangs.
#[test]
fn models_with_a_mutated_file_load_or_fail_cleanly() {
    let cases = env_u64("MMAUDIO_FUZZ_MODEL_CASES", 8);
    let seed = env_u64("MMAUDIO_FUZZ_SEED", 13);
    let root = scratch("models");
    let model = root.join("model");
    mmaudio::test_model::write_test_model(&model, Mode::Khz16, 1).unwrap();
    let mut findings = Findings(Vec::new());
    let started = Instant::now();
    let mut total = 0;
    for (t, (rel, kind, _)) in targets(&model).into_iter().enumerate() {
        let original = std::fs::read(model.join(&rel)).unwrap();
        let mut rng = Rng(seed.wrapping_mul(7919).wrapping_add(t as u64));
        for case in 0..cases {
            let dir = root.join(format!("case-{t}-{case}"));
            copy_model(&model, &dir);
            let path = dir.join(&rel);
            std::fs::remove_file(&path).unwrap();
            std::fs::write(&path, mutate(&mut rng, kind, &original)).unwrap();
            let label = format!("model with {} case {case} (seed {seed})", rel.display());
            let d = dir.clone();
            let outcome = guarded(Duration::from_secs(60), move || load_model(&d));
            total += 1;
            findings.check(&label, &path, kind, outcome);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    println!(
        "fuzz models: {total} model loads with a mutated file, {} findings, {:.1} s",
        findings.0.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(findings.0.is_empty(), "{:#?}", findings.0);
}
