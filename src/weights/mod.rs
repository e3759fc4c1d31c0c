//! Weight files: mmap'd safetensors and official PyTorch `.pth` checkpoints through one path.
//!
//! [`WeightFile`] opens either format (decided by the file's magic bytes, not its name),
//! exposes tensor names and shapes, and turns into a candle [`VarBuilder`] whose errors name
//! the file, the key, the expected and the actual shape. It also records which keys were
//! read, so a loader can reject files that hold tensors the configured model does not have
//! (the equivalent of PyTorch's `load_state_dict(strict=True)`).

pub mod check;
pub mod checksums;
mod pth_write;
pub mod random;

pub use pth_write::write_pth;

use crate::error::{Error, Result};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

enum Inner {
    Safetensors(candle_core::safetensors::MmapedSafetensors),
    Pth(candle_core::pickle::PthTensors),
    Memory(HashMap<String, Tensor>),
}

/// One file of weights (or an in-memory set of tensors), with shape-checked access.
pub struct WeightFile {
    path: PathBuf,
    inner: Inner,
    /// name -> (shape, stored dtype)
    index: HashMap<String, (Vec<usize>, DType)>,
    used: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for WeightFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightFile")
            .field("path", &self.path)
            .field("tensors", &self.index.len())
            .finish()
    }
}

/// Run candle's `.pth` reader, which panics on some malformed pickles (an argument tuple
/// shorter than it expects, found by `tests/fuzz_loaders.rs`): a panic becomes an error
/// naming the file, like any other corruption.
fn guard_parser<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(Error::WeightFile {
            path: path.to_owned(),
            reason: format!("malformed checkpoint: the PyTorch pickle reader failed ({what})"),
        })
    })
}

/// Storage format of a weight file, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Safetensors,
    /// PyTorch zip checkpoint (`torch.save` since 1.6).
    Pth,
}

/// Sniff the format: PyTorch checkpoints are zip archives (`PK\x03\x04`); safetensors start
/// with a little-endian u64 header length followed by `{`.
pub fn sniff_format(path: &Path) -> Result<Format> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::WeightFile {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let mut head = [0u8; 9];
    let n = f.read(&mut head).map_err(|e| Error::WeightFile {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if n >= 4 && &head[..4] == b"PK\x03\x04" {
        return Ok(Format::Pth);
    }
    if n == 9 && head[8] == b'{' {
        return Ok(Format::Safetensors);
    }
    if n >= 2 && head[0] == 0x80 {
        return Err(Error::WeightFile {
            path: path.to_owned(),
            reason: "legacy (pre-1.6, non-zip) PyTorch pickle format is not supported; \
                     re-save it with torch.save(obj, path) from a recent PyTorch or convert it to \
                     safetensors"
                .into(),
        });
    }
    Err(Error::WeightFile {
        path: path.to_owned(),
        reason: "neither a safetensors file nor a PyTorch zip checkpoint (truncated or corrupt?)"
            .into(),
    })
}

impl WeightFile {
    /// Open a safetensors or `.pth` file holding a flat state dict.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_key(path, None)
    }

    /// Open a file; for `.pth` checkpoints whose state dict sits under a key of the top-level
    /// dict (BigVGAN's `{"generator": ...}`), give that key. For safetensors, `key` is a prefix
    /// to strip (`"generator."`), if present.
    pub fn open_with_key(path: impl AsRef<Path>, key: Option<&str>) -> Result<Self> {
        let path = path.as_ref().to_owned();
        if !path.exists() {
            return Err(Error::MissingFile {
                path,
                what: "weights file".into(),
            });
        }
        let werr = |e: candle_core::Error| Error::WeightFile {
            path: path.clone(),
            reason: e.to_string(),
        };
        match sniff_format(&path)? {
            Format::Safetensors => {
                // SAFETY: the file is mapped read-only; like every mmap user we rely on nobody
                // truncating it while it is in use.
                let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(&path) }
                    .map_err(werr)?;
                let mut index = HashMap::new();
                let prefix = key.map(|k| format!("{k}."));
                for (name, view) in st.tensors() {
                    let dtype =
                        safetensors_dtype(view.dtype()).ok_or_else(|| Error::WeightFile {
                            path: path.clone(),
                            reason: format!(
                                "tensor `{name}` has unsupported dtype {:?}",
                                view.dtype()
                            ),
                        })?;
                    let name = match &prefix {
                        Some(p) => name.strip_prefix(p.as_str()).unwrap_or(&name).to_string(),
                        None => name,
                    };
                    index.insert(name, (view.shape().to_vec(), dtype));
                }
                Ok(Self {
                    path,
                    inner: Inner::Safetensors(st),
                    index,
                    used: Default::default(),
                })
            }
            Format::Pth => {
                let pth = guard_parser(&path, || {
                    candle_core::pickle::PthTensors::new(&path, key).map_err(werr)
                })?;
                let index = pth
                    .tensor_infos()
                    .iter()
                    .map(|(k, v)| (k.clone(), (v.layout.dims().to_vec(), v.dtype)))
                    .collect::<HashMap<_, _>>();
                if index.is_empty() {
                    return Err(Error::WeightFile {
                        path,
                        reason: match key {
                            Some(k) => format!("no tensors found under key `{k}`"),
                            None => "no tensors found (is this a state dict?)".into(),
                        },
                    });
                }
                Ok(Self {
                    path,
                    inner: Inner::Pth(pth),
                    index,
                    used: Default::default(),
                })
            }
        }
    }

    /// Tensors held in memory (tests, random models), under a descriptive pseudo-path.
    pub fn from_tensors(name: impl Into<PathBuf>, tensors: HashMap<String, Tensor>) -> Self {
        let index = tensors
            .iter()
            .map(|(k, t)| (k.clone(), (t.dims().to_vec(), t.dtype())))
            .collect();
        Self {
            path: name.into(),
            inner: Inner::Memory(tensors),
            index,
            used: Default::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All tensor names, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.index.keys().cloned().collect();
        k.sort();
        k
    }

    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// Shape of a tensor, without loading it.
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.index.get(key).map(|(s, _)| s.as_slice())
    }

    /// Stored dtype of a tensor.
    pub fn stored_dtype(&self, key: &str) -> Option<DType> {
        self.index.get(key).map(|(_, d)| *d)
    }

    /// The dtype most tensors are stored in (f32 for official checkpoints, f16/bf16 for
    /// converted ones).
    pub fn dominant_dtype(&self) -> Option<DType> {
        let mut counts: HashMap<DType, usize> = HashMap::new();
        for (_, d) in self.index.values() {
            *counts.entry(*d).or_default() += 1;
        }
        counts.into_iter().max_by_key(|(_, c)| *c).map(|(d, _)| d)
    }

    /// Load a tensor as stored, then convert to `dtype` on `device`. Errors name the file.
    pub fn load(&self, key: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let t = self.load_raw(key)?;
        Ok(t.to_dtype(dtype)?.to_device(device)?)
    }

    /// Load a tensor and check its shape.
    pub fn load_shaped(
        &self,
        key: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        match self.shape(key) {
            None => Err(Error::MissingTensor {
                path: self.path.clone(),
                key: key.into(),
                expected: shape.to_vec(),
            }),
            Some(s) if s != shape => Err(Error::ShapeMismatch {
                path: self.path.clone(),
                key: key.into(),
                expected: shape.to_vec(),
                actual: s.to_vec(),
                hint: String::new(),
            }),
            Some(_) => {
                // an integer tensor where a float weight belongs would be converted silently
                let stored = self.stored_dtype(key).unwrap_or(dtype);
                if dtype.is_float() && !stored.is_float() {
                    return Err(Error::WeightFile {
                        path: self.path.clone(),
                        reason: format!(
                            "tensor `{key}` is stored as {}, a floating-point weight \
                             (f32, f16, bf16 or f64) was expected (wrong or damaged file?)",
                            stored.as_str()
                        ),
                    });
                }
                self.load(key, dtype, device)
            }
        }
    }

    fn load_raw(&self, key: &str) -> Result<Tensor> {
        let werr = |e: candle_core::Error| Error::WeightFile {
            path: self.path.clone(),
            reason: format!("tensor `{key}`: {e}"),
        };
        let (_, stored) = self.index.get(key).ok_or_else(|| Error::MissingTensor {
            path: self.path.clone(),
            key: key.into(),
            expected: vec![],
        })?;
        let t =
            match &self.inner {
                Inner::Safetensors(st) => {
                    let full = self.full_name(st, key);
                    st.load(&full, &Device::Cpu).map_err(werr)?
                }
                Inner::Pth(p) => guard_parser(&self.path, || p.get(key).map_err(werr))?
                    .ok_or_else(|| Error::MissingTensor {
                        path: self.path.clone(),
                        key: key.into(),
                        expected: vec![],
                    })?,
                Inner::Memory(m) => m[key].clone(),
            };
        debug_assert_eq!(t.dtype(), *stored);
        self.used.lock().unwrap().insert(key.to_string());
        Ok(t)
    }

    fn full_name(&self, st: &candle_core::safetensors::MmapedSafetensors, key: &str) -> String {
        if st.get(key).is_ok() {
            key.to_string()
        } else {
            // the key was stored under a stripped prefix
            st.tensors()
                .into_iter()
                .map(|(n, _)| n)
                .find(|n| n.ends_with(key) && n[..n.len() - key.len()].ends_with('.'))
                .unwrap_or_else(|| key.to_string())
        }
    }

    /// Turn an error raised while building a model from this file into one that names the
    /// file exactly once.
    pub fn wrap_error(&self, e: Error) -> Error {
        match e {
            Error::Candle(c) => {
                let msg = c.to_string();
                let prefix = format!("weights file {}: ", self.path.display());
                let reason = msg.strip_prefix("cannot read ").unwrap_or(&msg);
                let reason = reason.strip_prefix(&prefix).unwrap_or(&msg).to_string();
                Error::WeightFile {
                    path: self.path.clone(),
                    reason,
                }
            }
            other => other,
        }
    }

    /// Names that were never read through this file (after a model was built from it).
    pub fn unused_keys(&self) -> Vec<String> {
        let used = self.used.lock().unwrap();
        let mut v: Vec<String> = self
            .index
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Fail like `load_state_dict(strict=True)` if tensors were left unread, ignoring names for
    /// which `ignore` returns true (non-persistent buffers some checkpoints carry).
    pub fn check_all_used(&self, what: &str, ignore: impl Fn(&str) -> bool) -> Result<()> {
        let extra: Vec<String> = self
            .unused_keys()
            .into_iter()
            .filter(|k| !ignore(k))
            .collect();
        if extra.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = extra.iter().take(8).map(|s| s.as_str()).collect();
        Err(Error::WrongModel {
            path: self.path.clone(),
            reason: format!(
                "{} tensor(s) do not belong to {what} (wrong variant or wrong file?): {}{}",
                extra.len(),
                shown.join(", "),
                if extra.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            ),
        })
    }

    /// A candle `VarBuilder` reading from this file, converting to `dtype` on `device`.
    pub fn var_builder(self: &Arc<Self>, dtype: DType, device: &Device) -> VarBuilder<'static> {
        let backend: Box<dyn candle_nn::var_builder::SimpleBackend> =
            Box::new(Backend(self.clone()));
        VarBuilder::from_backend(backend, dtype, device.clone())
    }
}

fn safetensors_dtype(d: safetensors::Dtype) -> Option<DType> {
    use safetensors::Dtype as S;
    Some(match d {
        S::F32 => DType::F32,
        S::F16 => DType::F16,
        S::BF16 => DType::BF16,
        S::F64 => DType::F64,
        S::U8 => DType::U8,
        S::U32 => DType::U32,
        S::I64 => DType::I64,
        _ => return None,
    })
}

struct Backend(Arc<WeightFile>);

impl candle_nn::var_builder::SimpleBackend for Backend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0
            .load_shaped(name, s.dims(), dtype, dev)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0
            .load(name, dtype, dev)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}

/// Parse a precision name: `f32`, `f16`, `bf16`.
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s.to_ascii_lowercase().as_str() {
        "f32" | "float32" | "fp32" => Ok(DType::F32),
        "f16" | "float16" | "fp16" | "half" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        other => Err(Error::config(format!(
            "unknown precision `{other}` (use f32, f16 or bf16)"
        ))),
    }
}
