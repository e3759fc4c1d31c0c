//! The model folder: one layout read by the element's `model-dir`, the CLI and
//! `mmaudio fetch-weights`.
//!
//! The layout is the official one (MMAudio `docs/MODELS.md`), plus the two Hugging Face
//! models the official code fetches on the fly:
//!
//! ```text
//! <model-dir>/
//!   weights/mmaudio_<variant>.pth                  flow network
//!   ext_weights/v1-16.pth | v1-44.pth              VAE
//!   ext_weights/best_netG.pt                       16 kHz BigVGAN (small_16k)
//!   ext_weights/bigvgan_v2_44khz_128band_512x/     BigVGAN-v2 (44.1 kHz variants)
//!       bigvgan_generator.pt, config.json
//!   ext_weights/synchformer_state_dict.pth         Synchformer
//!   ext_weights/DFN5B-CLIP-ViT-H-14-384/           CLIP (open_clip)
//!       open_clip_model.safetensors | open_clip_pytorch_model.bin
//!   mmaudio.json                                   optional manifest (see [`Manifest`])
//!   .mmaudio-checksums.json                        verified sums (`crate::weights::checksums`)
//! ```
//!
//! [`official_files`] lists, per variant, every file with its source (Hugging Face or the
//! official GitHub release) and official MD5; `crate::fetch` downloads them and
//! `crate::weights::check` verifies a folder.
//!
//! Every file may also sit directly in `<model-dir>`, and each official `.pth`/`.pt`/`.bin`
//! may be replaced by a safetensors conversion with the same stem (optionally suffixed
//! `_fp16`, `_bf16` or `_fp32`), as ComfyUI users share them. The manifest can name other
//! files and carry component configurations (the small test models use it).

use crate::config::{Mode, Variant};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "mmaudio.json";
pub const BIGVGAN_V2_DIR: &str = "bigvgan_v2_44khz_128band_512x";
pub const CLIP_DIR: &str = "DFN5B-CLIP-ViT-H-14-384";

/// The components of a model folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    Net,
    Vae,
    Vocoder,
    Synchformer,
    Clip,
}

impl Component {
    pub const ALL: [Component; 5] = [
        Component::Net,
        Component::Vae,
        Component::Vocoder,
        Component::Synchformer,
        Component::Clip,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            Component::Net => "flow network",
            Component::Vae => "VAE",
            Component::Vocoder => "vocoder",
            Component::Synchformer => "Synchformer",
            Component::Clip => "CLIP",
        }
    }
}

/// One component entry of the manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ComponentEntry {
    /// File relative to the model folder.
    pub file: String,
    /// Key of the state dict inside a `.pth` (BigVGAN: `generator`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Component configuration (hyper-parameters), interpreted by its loader; absent = the
    /// official configuration of the variant/mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// Expected MD5 of the file (checked by `mmaudio check-weights`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
}

/// `mmaudio.json`: optional description of a model folder.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version (1).
    #[serde(default = "one")]
    pub format: u32,
    /// Variant the folder holds (used when the element's `variant` is left at its default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<Variant>,
    /// Audio mode, for folders whose network is not one of the official variants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Free text (e.g. "tiny random test model — produces noise").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<ComponentEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae: Option<ComponentEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocoder: Option<ComponentEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchformer: Option<ComponentEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<ComponentEntry>,
}

fn one() -> u32 {
    1
}

impl Manifest {
    pub fn entry(&self, c: Component) -> Option<&ComponentEntry> {
        match c {
            Component::Net => self.net.as_ref(),
            Component::Vae => self.vae.as_ref(),
            Component::Vocoder => self.vocoder.as_ref(),
            Component::Synchformer => self.synchformer.as_ref(),
            Component::Clip => self.clip.as_ref(),
        }
    }
    pub fn entry_mut(&mut self, c: Component) -> &mut Option<ComponentEntry> {
        match c {
            Component::Net => &mut self.net,
            Component::Vae => &mut self.vae,
            Component::Vocoder => &mut self.vocoder,
            Component::Synchformer => &mut self.synchformer,
            Component::Clip => &mut self.clip,
        }
    }
}

/// Official file name of a component, relative to the model folder (official layout).
pub fn official_path(variant: Variant, c: Component) -> PathBuf {
    match c {
        Component::Net => Path::new("weights").join(variant.net_file()),
        Component::Vae => Path::new("ext_weights").join(variant.vae_file()),
        Component::Vocoder => match variant.mode() {
            Mode::Khz16 => Path::new("ext_weights").join("best_netG.pt"),
            Mode::Khz44 => Path::new("ext_weights")
                .join(BIGVGAN_V2_DIR)
                .join("bigvgan_generator.pt"),
        },
        Component::Synchformer => Path::new("ext_weights").join(crate::config::SYNCHFORMER_FILE),
        Component::Clip => Path::new("ext_weights")
            .join(CLIP_DIR)
            .join("open_clip_model.safetensors"),
    }
}

/// State-dict key inside the official file, if nested.
pub fn official_key(variant: Variant, c: Component) -> Option<&'static str> {
    match (c, variant.mode()) {
        (Component::Vocoder, _) => Some("generator"),
        _ => None,
    }
}

/// Hugging Face repository of the flow networks (`weights/mmaudio_<variant>.pth`).
pub const HF_MMAUDIO_REPO: &str = "hkchengrex/MMAudio";
/// Hugging Face repository of the 44.1 kHz vocoder.
pub const HF_BIGVGAN_V2_REPO: &str = "nvidia/bigvgan_v2_44khz_128band_512x";
/// Hugging Face repository of the CLIP model (the name the official code uses; the Hub
/// redirects it if the repository was renamed).
pub const HF_CLIP_REPO: &str = "apple/DFN5B-CLIP-ViT-H-14-384";
/// Base URL of the official GitHub release holding the VAEs, the 16 kHz vocoder and
/// Synchformer.
pub const RELEASE_BASE_URL: &str = "https://github.com/hkchengrex/MMAudio/releases/download/v0.1";

/// Where an official file is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file of a Hugging Face model repository (branch `main`).
    HuggingFace { repo: String, file: String },
    /// An asset of the official MMAudio GitHub release (v0.1).
    Release { file: String },
}

/// What a file of the model folder is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// The weights of a component.
    Weights,
    /// A configuration file published next to the weights (BigVGAN-v2 `config.json`,
    /// open_clip `open_clip_config.json`).
    Config,
}

/// One file the official layout holds, where it comes from and how to verify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfficialFile {
    pub component: Component,
    pub role: FileRole,
    /// Path relative to the model folder (official layout).
    pub rel_path: PathBuf,
    pub source: Source,
    /// Published MD5 (`mmaudio/utils/download_utils.py`); `None` for the Hugging Face files
    /// of other projects, which are verified against the SHA-256 the Hub reports.
    pub md5: Option<String>,
    /// Approximate size in bytes (for messages; the server's size is authoritative).
    pub approx_size: u64,
    /// Another file to fetch instead if the source does not have this one (HTTP 404), as
    /// open_clip falls back from `open_clip_model.safetensors` to
    /// `open_clip_pytorch_model.bin`.
    pub fallback: Option<Box<OfficialFile>>,
}

impl OfficialFile {
    /// File name without folders.
    pub fn file_name(&self) -> String {
        self.rel_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Official MD5 sums of `mmaudio/utils/download_utils.py` (hkchengrex/MMAudio @ 974010a).
pub const OFFICIAL_MD5: [(&str, &str); 9] = [
    ("mmaudio_small_16k.pth", "af93cde404179f58e3919ac085b8033b"),
    ("mmaudio_small_44k.pth", "babd74c884783d13701ea2820a5f5b6d"),
    ("mmaudio_medium_44k.pth", "5a56b6665e45a1e65ada534defa903d0"),
    ("mmaudio_large_44k.pth", "fed96c325a6785b85ce75ae1aafd2673"),
    (
        "mmaudio_large_44k_v2.pth",
        "01ad4464f049b2d7efdaa4c1a59b8dfe",
    ),
    ("v1-16.pth", "69f56803f59a549a1a507c93859fd4d7"),
    ("best_netG.pt", "eeaf372a38a9c31c362120aba2dde292"),
    ("v1-44.pth", "fab020275fa44c6589820ce025191600"),
    (
        "synchformer_state_dict.pth",
        "5b2f5594b0730f70e41e549b7c94390c",
    ),
];

/// SHA-256 sums of Hugging Face files that were published at some revision (from the Hub's
/// Git LFS details). A file matching one of them is verified without network access; a file
/// matching none is not necessarily wrong (the repository may have been updated) and is
/// verified against the Hub by `mmaudio fetch-weights`.
pub const KNOWN_HUB_SHA256: [(&str, &str, &str); 2] = [
    (
        "bigvgan_generator.pt",
        "d9fe7ec6bd0b44ed9d66973d5012d8181c1570b01e5c72df51973e241dccd357",
        "nvidia/bigvgan_v2_44khz_128band_512x, revision v2.4 (68eac6e)",
    ),
    (
        "bigvgan_generator.pt",
        "b42626076b2d905942150f55015455d0fc963e58794b6532b90b3e4bba34bc97",
        "nvidia/bigvgan_v2_44khz_128band_512x, first upload (ef68881; later kept as bigvgan_generator_3msteps.pt)",
    ),
];

/// The official MD5 of a file name, if it is one of the official MMAudio files.
pub fn official_md5(file_name: &str) -> Option<&'static str> {
    OFFICIAL_MD5
        .iter()
        .find(|(n, _)| *n == file_name)
        .map(|(_, m)| *m)
}

/// The official file whose MD5 is `md5`, if any (to say "this is mmaudio_small_44k.pth").
pub fn official_name_of_md5(md5: &str) -> Option<&'static str> {
    OFFICIAL_MD5
        .iter()
        .find(|(_, m)| m.eq_ignore_ascii_case(md5))
        .map(|(n, _)| *n)
}

/// Every file a variant needs, in the official layout, with its source and reference sum.
pub fn official_files(variant: Variant) -> Vec<OfficialFile> {
    const MB: u64 = 1_000_000;
    let hf = |repo: &str, file: &str| Source::HuggingFace {
        repo: repo.into(),
        file: file.into(),
    };
    let rel = |file: &str| Source::Release { file: file.into() };
    let entry = |component, role, rel_path: PathBuf, source, approx_size| {
        let name = rel_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        OfficialFile {
            component,
            role,
            md5: official_md5(&name).map(str::to_string),
            rel_path,
            source,
            approx_size,
            fallback: None,
        }
    };
    let net_size = match variant {
        Variant::Small16k | Variant::Small44k => 601 * MB,
        Variant::Medium44k => 2_400 * MB,
        Variant::Large44k | Variant::Large44kV2 => 3_900 * MB,
    };
    let mut out = vec![entry(
        Component::Net,
        FileRole::Weights,
        official_path(variant, Component::Net),
        hf(HF_MMAUDIO_REPO, &format!("weights/{}", variant.net_file())),
        net_size,
    )];
    let vae_size = match variant.mode() {
        Mode::Khz16 => 655 * MB,
        Mode::Khz44 => 1_200 * MB,
    };
    out.push(entry(
        Component::Vae,
        FileRole::Weights,
        official_path(variant, Component::Vae),
        rel(variant.vae_file()),
        vae_size,
    ));
    match variant.mode() {
        Mode::Khz16 => out.push(entry(
            Component::Vocoder,
            FileRole::Weights,
            official_path(variant, Component::Vocoder),
            rel("best_netG.pt"),
            429 * MB,
        )),
        Mode::Khz44 => {
            out.push(entry(
                Component::Vocoder,
                FileRole::Weights,
                official_path(variant, Component::Vocoder),
                hf(HF_BIGVGAN_V2_REPO, "bigvgan_generator.pt"),
                489 * MB,
            ));
            out.push(entry(
                Component::Vocoder,
                FileRole::Config,
                Path::new("ext_weights")
                    .join(BIGVGAN_V2_DIR)
                    .join("config.json"),
                hf(HF_BIGVGAN_V2_REPO, "config.json"),
                2_000,
            ));
        }
    }
    out.push(entry(
        Component::Synchformer,
        FileRole::Weights,
        official_path(variant, Component::Synchformer),
        rel(crate::config::SYNCHFORMER_FILE),
        907 * MB,
    ));
    let mut clip = entry(
        Component::Clip,
        FileRole::Weights,
        official_path(variant, Component::Clip),
        hf(HF_CLIP_REPO, "open_clip_model.safetensors"),
        3_950 * MB,
    );
    clip.fallback = Some(Box::new(entry(
        Component::Clip,
        FileRole::Weights,
        Path::new("ext_weights")
            .join(CLIP_DIR)
            .join("open_clip_pytorch_model.bin"),
        hf(HF_CLIP_REPO, "open_clip_pytorch_model.bin"),
        3_950 * MB,
    )));
    out.push(clip);
    out.push(entry(
        Component::Clip,
        FileRole::Config,
        Path::new("ext_weights")
            .join(CLIP_DIR)
            .join("open_clip_config.json"),
        hf(HF_CLIP_REPO, "open_clip_config.json"),
        1_000,
    ));
    out
}

/// Whether `path` (a resolved component file) is the official file itself rather than a
/// conversion or an alternative (compared by file name).
pub fn is_official_name(variant: Variant, c: Component, path: &Path) -> bool {
    official_path(variant, c).file_name() == path.file_name()
}

/// A resolved model folder.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub root: PathBuf,
    pub manifest: Option<Manifest>,
}

/// A component file found on disk.
#[derive(Debug, Clone)]
pub struct ResolvedFile {
    pub component: Component,
    pub path: PathBuf,
    pub key: Option<String>,
    pub config: Option<serde_json::Value>,
}

impl ModelDir {
    /// Open a folder (it must exist; the manifest is optional but must parse if present).
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_owned();
        if !root.is_dir() {
            return Err(Error::MissingFile {
                path: root,
                what: "model directory".into(),
            });
        }
        let mpath = root.join(MANIFEST);
        let manifest = if mpath.is_file() {
            let text = std::fs::read_to_string(&mpath).map_err(|e| Error::WeightFile {
                path: mpath.clone(),
                reason: format!("cannot read the manifest: {e}"),
            })?;
            Some(
                serde_json::from_str::<Manifest>(&text).map_err(|e| Error::WeightFile {
                    path: mpath.clone(),
                    reason: format!("invalid manifest: {e}"),
                })?,
            )
        } else {
            None
        };
        Ok(Self { root, manifest })
    }

    /// The variant to use: the requested one, else the manifest's.
    pub fn variant(&self, requested: Option<Variant>) -> Result<Variant> {
        match (requested, self.manifest.as_ref().and_then(|m| m.variant)) {
            (Some(v), _) => Ok(v),
            (None, Some(v)) => Ok(v),
            (None, None) => Err(Error::config(format!(
                "no variant given and {} has no manifest naming one",
                self.root.display()
            ))),
        }
    }

    /// The variant to load, decided once for the element, the CLI and `check-weights`:
    ///
    /// * the folder's `mmaudio.json` names a variant: that one. A different `requested`
    ///   one is refused with an error naming both — the manifest's files are that
    ///   variant's, and loading them under another name would announce a sample rate and a
    ///   network that are not what runs;
    /// * no manifest: `requested`, else the one variant whose flow network is in the
    ///   folder, else [`Variant::Large44kV2`] (the official default) when several or none
    ///   are there (the missing files are then reported for it).
    pub fn choose_variant(&self, requested: Option<Variant>) -> Result<Variant> {
        let named = self.manifest.as_ref().and_then(|m| m.variant);
        match (requested, named) {
            (Some(r), Some(m)) if r != m => Err(Error::config(format!(
                "{} holds {m} (its {MANIFEST} says so), not the requested {r}: ask for {m}, or \
                 leave the variant unset (auto) to use what the folder holds",
                self.root.display()
            ))),
            (_, Some(m)) => Ok(m),
            (Some(r), None) => Ok(r),
            (None, None) => {
                let present: Vec<Variant> = Variant::ALL
                    .into_iter()
                    .filter(|&v| {
                        self.candidates(&official_path(v, Component::Net))
                            .iter()
                            .any(|p| p.is_file())
                    })
                    .collect();
                Ok(match present.as_slice() {
                    [one] => *one,
                    _ => Variant::Large44kV2,
                })
            }
        }
    }

    /// Audio mode of the folder for a variant (the manifest may override it for test models).
    pub fn mode(&self, variant: Variant) -> Mode {
        self.manifest
            .as_ref()
            .and_then(|m| m.mode)
            .unwrap_or_else(|| variant.mode())
    }

    /// Find a component's file: the manifest entry, else the official name in the official
    /// layout or flat, or a safetensors conversion of it.
    pub fn resolve(&self, variant: Variant, c: Component) -> Result<ResolvedFile> {
        if let Some(e) = self.manifest.as_ref().and_then(|m| m.entry(c)) {
            let path = self.root.join(&e.file);
            if !path.is_file() {
                return Err(Error::MissingFile {
                    path,
                    what: format!(
                        "{} named by {}",
                        c.describe(),
                        self.root.join(MANIFEST).display()
                    ),
                });
            }
            return Ok(ResolvedFile {
                component: c,
                path,
                key: e.key.clone(),
                config: e.config.clone(),
            });
        }
        let official = official_path(variant, c);
        let candidates = self.candidates(&official);
        for p in &candidates {
            if p.is_file() {
                let is_st = p.extension().is_some_and(|e| e == "safetensors");
                // safetensors conversions hold the state dict itself (no nesting)
                let key = if is_st {
                    None
                } else {
                    official_key(variant, c).map(str::to_string)
                };
                return Ok(ResolvedFile {
                    component: c,
                    path: p.clone(),
                    key,
                    config: None,
                });
            }
        }
        Err(Error::MissingFile {
            path: self.root.join(&official),
            what: format!(
                "{} for {variant}; run `mmaudio fetch-weights --variant {variant} --model-dir {}` or place it there",
                c.describe(),
                self.root.display()
            ),
        })
    }

    /// Paths tried for an official relative path, in order.
    pub fn candidates(&self, official: &Path) -> Vec<PathBuf> {
        let file = official.file_name().unwrap().to_string_lossy().to_string();
        let stem = Path::new(&file)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let mut dirs = vec![self.root.join(official.parent().unwrap_or(Path::new("")))];
        dirs.push(self.root.clone());
        let mut out = vec![];
        for d in &dirs {
            out.push(d.join(&file));
        }
        // CLIP: the HF repo also ships the torch .bin
        if file == "open_clip_model.safetensors" {
            for d in &dirs {
                out.push(d.join("open_clip_pytorch_model.bin"));
            }
        }
        for d in &dirs {
            for suffix in ["", "_fp32", "_fp16", "_bf16"] {
                out.push(d.join(format!("{stem}{suffix}.safetensors")));
            }
        }
        out.dedup();
        out
    }

    /// Resolve every component a variant needs.
    pub fn resolve_all(&self, variant: Variant) -> Result<Vec<ResolvedFile>> {
        Component::ALL
            .iter()
            .map(|&c| self.resolve(variant, c))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_official_flat_and_converted_layouts() {
        let d = std::env::temp_dir().join(format!("mmaudio-md-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("weights")).unwrap();
        std::fs::create_dir_all(d.join("ext_weights")).unwrap();
        let md = ModelDir::open(&d).unwrap();
        let v = Variant::Small16k;
        let e = md.resolve(v, Component::Net).unwrap_err().to_string();
        assert!(
            e.contains("mmaudio_small_16k.pth") && e.contains("fetch-weights"),
            "{e}"
        );
        std::fs::write(d.join("weights/mmaudio_small_16k.pth"), b"x").unwrap();
        assert!(
            md.resolve(v, Component::Net)
                .unwrap()
                .path
                .ends_with("weights/mmaudio_small_16k.pth")
        );
        std::fs::write(d.join("v1-16_fp16.safetensors"), b"x").unwrap();
        assert!(
            md.resolve(v, Component::Vae)
                .unwrap()
                .path
                .ends_with("v1-16_fp16.safetensors")
        );
        std::fs::write(d.join("ext_weights/best_netG.pt"), b"x").unwrap();
        let r = md.resolve(v, Component::Vocoder).unwrap();
        assert_eq!(r.key.as_deref(), Some("generator"));
        assert!(
            ModelDir::open(d.join("nope"))
                .unwrap_err()
                .to_string()
                .contains("nope")
        );
        // no manifest: the one network present decides; an explicit request is kept
        assert_eq!(md.choose_variant(None).unwrap(), Variant::Small16k);
        assert_eq!(
            md.choose_variant(Some(Variant::Medium44k)).unwrap(),
            Variant::Medium44k
        );
        std::fs::write(d.join("mmaudio_large_44k_v2_fp16.safetensors"), b"x").unwrap();
        assert_eq!(md.choose_variant(None).unwrap(), Variant::Large44kV2);
        // a manifest naming a variant wins, and a contradicting request is refused
        std::fs::write(d.join(MANIFEST), br#"{"variant": "small_16k"}"#).unwrap();
        let md = ModelDir::open(&d).unwrap();
        assert_eq!(md.choose_variant(None).unwrap(), Variant::Small16k);
        assert_eq!(
            md.choose_variant(Some(Variant::Small16k)).unwrap(),
            Variant::Small16k
        );
        let e = md
            .choose_variant(Some(Variant::Small44k))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("holds small_16k") && e.contains("not the requested small_44k"),
            "{e}"
        );
        std::fs::write(d.join(MANIFEST), b"{ not json").unwrap();
        let e = ModelDir::open(&d).unwrap_err().to_string();
        assert!(
            e.contains("mmaudio.json") && e.contains("invalid manifest"),
            "{e}"
        );
        // Not UTF-8 (found by tests/fuzz_loaders.rs: the error did not name the file).
        std::fs::write(
            d.join(MANIFEST),
            b"{\"format\": 1, \"description\": \"\xff\"}",
        )
        .unwrap();
        let e = ModelDir::open(&d).unwrap_err().to_string();
        assert!(e.contains("mmaudio.json") && e.contains("UTF-8"), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }
}
