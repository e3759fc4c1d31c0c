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
//! ```
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
            let text = std::fs::read_to_string(&mpath)?;
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
                "{} for {variant}; run `mmaudio fetch-weights --variant {variant} --dir {}` or place it there",
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
        std::fs::write(d.join(MANIFEST), b"{ not json").unwrap();
        let e = ModelDir::open(&d).unwrap_err().to_string();
        assert!(
            e.contains("mmaudio.json") && e.contains("invalid manifest"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).ok();
    }
}
