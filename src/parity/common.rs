//! Shared machinery of the parity runner: case discovery, tensor files, tolerances and
//! comparisons. Nothing here knows a case name or a size; all of it comes from `case.json`.

use anyhow::{Context, Result, anyhow, bail};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub type Tensors = HashMap<String, Tensor>;

/// One fixture folder.
pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    pub json: Value,
    pub kind: String,
    /// Device and dtype the models of this run are built on (CPU f32 by default).
    pub device: Device,
    pub dtype: DType,
}

#[derive(Debug, Clone, Copy)]
pub struct Tol {
    pub atol: f64,
    pub rtol: f64,
}

impl Case {
    pub fn load(dir: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(dir.join("case.json"))
            .with_context(|| format!("reading {}", dir.join("case.json").display()))?;
        let json: Value = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", dir.join("case.json").display()))?;
        let kind = json["kind"]
            .as_str()
            .ok_or_else(|| anyhow!("case.json has no `kind`"))?
            .to_string();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        Ok(Self {
            name,
            dir: dir.to_owned(),
            json,
            kind,
            device: Device::Cpu,
            dtype: DType::F32,
        })
    }

    /// The device models are built on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype models are built in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Whether this run is the reference configuration (CPU or GPU, f32).
    pub fn is_f32(&self) -> bool {
        self.dtype == DType::F32
    }

    pub fn file(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn load_st(&self, rel: &str) -> Result<Tensors> {
        let p = self.file(rel);
        candle_core::safetensors::load(&p, &Device::Cpu)
            .with_context(|| format!("loading {}", p.display()))
    }
    /// Inputs, on the run's device (floating-point inputs in f32; models convert).
    pub fn inputs(&self) -> Result<Tensors> {
        let t = self.load_st("inputs.safetensors")?;
        if self.device.is_cpu() {
            return Ok(t);
        }
        t.into_iter()
            .map(|(k, v)| Ok((k, v.to_device(&self.device)?)))
            .collect()
    }
    pub fn outputs(&self) -> Result<Tensors> {
        self.load_st("outputs.safetensors")
    }

    /// The weights file named by `case.json["weights_file"]` (relative to the case folder).
    pub fn weights_path(&self) -> Result<PathBuf> {
        let rel = self.json["weights_file"]
            .as_str()
            .ok_or_else(|| anyhow!("case.json has no weights_file"))?;
        Ok(self.dir.join(rel))
    }

    /// A number from case.json at a `/`-separated path (JSON pointer without the leading `/`).
    pub fn num(&self, path: &str) -> Result<f64> {
        self.at(path)?
            .as_f64()
            .ok_or_else(|| anyhow!("case.json `{path}` is not a number"))
    }
    pub fn at(&self, path: &str) -> Result<&Value> {
        self.json
            .pointer(&format!("/{path}"))
            .ok_or_else(|| anyhow!("case.json has no `{path}`"))
    }

    /// Tolerance for a tensor: `suggested_tolerance.per_tensor[name]`, else
    /// `suggested_tolerance[name]`, else `intermediates` (for non-main tensors), else `default`.
    pub fn tol(&self, name: &str, main: bool) -> Tol {
        let st = &self.json["suggested_tolerance"];
        let parse = |v: &Value| -> Option<Tol> {
            let atol = v.get("atol")?.as_f64()?;
            let rtol = v.get("rtol").and_then(|r| r.as_f64()).unwrap_or(0.0);
            Some(Tol { atol, rtol })
        };
        let candidates = [
            st.get("per_tensor").and_then(|p| p.get(name)),
            st.get(name),
            if main { None } else { st.get("intermediates") },
            st.get("default"),
            st.get("intermediates"),
        ];
        for c in candidates.into_iter().flatten() {
            if let Some(t) = parse(c) {
                return t;
            }
        }
        // no machine-readable tolerance: strict float32 noise
        Tol {
            atol: 1e-5,
            rtol: 1e-4,
        }
    }
}

/// Collects comparisons of one case.
#[derive(Default)]
pub struct Checker {
    pub compared: usize,
    pub max_abs: f64,
    /// max over tensors of max|a−g| / max|g| (error relative to the tensor's scale)
    pub max_rel: f64,
    /// worst (error / allowed) ratio and its tensor
    pub worst: (f64, String),
    pub failures: Vec<String>,
    pub notes: Vec<String>,
    /// Names passed to [`Checker::close`] / [`Checker::exact`] (golden tensors compared).
    pub compared_names: std::collections::BTreeSet<String>,
    /// Golden tensors a runner deliberately does not compare, with the reason
    /// ([`Checker::not_compared`]).
    pub waived: Vec<(String, String)>,
}

impl Checker {
    /// Compare `actual` with `expected` elementwise: |a − g| ≤ atol + rtol·|g|.
    pub fn close(
        &mut self,
        name: &str,
        actual: &Tensor,
        expected: &Tensor,
        tol: Tol,
    ) -> Result<()> {
        self.compared_names.insert(name.to_string());
        let a = actual.to_dtype(DType::F64)?.to_device(&Device::Cpu)?;
        let g = expected.to_dtype(DType::F64)?;
        if a.dims() != g.dims() {
            // allow size-1 differences that squeeze to the same thing
            if a.elem_count() == g.elem_count() {
                self.notes.push(format!(
                    "{name}: shape {:?} vs golden {:?} (same numel)",
                    a.dims(),
                    g.dims()
                ));
            } else {
                self.failures.push(format!(
                    "{name}: shape {:?} != golden {:?}",
                    a.dims(),
                    g.dims()
                ));
                return Ok(());
            }
        }
        let av = a.flatten_all()?.to_vec1::<f64>()?;
        let gv = g.flatten_all()?.to_vec1::<f64>()?;
        let mut max_abs = 0f64;
        let mut max_g = 0f64;
        let mut worst_ratio = 0f64;
        let mut worst_idx = 0usize;
        let mut bad = 0usize;
        for (i, (x, y)) in av.iter().zip(gv.iter()).enumerate() {
            let d = (x - y).abs();
            let allowed = tol.atol + tol.rtol * y.abs();
            let d = if d.is_nan() || (x.is_nan() != y.is_nan()) {
                f64::INFINITY
            } else {
                d
            };
            if d > allowed {
                bad += 1;
            }
            let r = d / allowed;
            if r > worst_ratio || (r.is_infinite() && !worst_ratio.is_infinite()) {
                worst_ratio = r;
                worst_idx = i;
            }
            max_abs = max_abs.max(d);
            max_g = max_g.max(y.abs());
        }
        self.compared += 1;
        self.max_abs = self.max_abs.max(max_abs);
        let rel = if max_g > 0.0 {
            max_abs / max_g
        } else {
            max_abs
        };
        self.max_rel = self.max_rel.max(rel);
        if std::env::var_os("MMAUDIO_PARITY_VERBOSE").is_some() {
            self.notes.push(format!(
                "{name}: max_abs={max_abs:.3e} max_rel={rel:.3e} (max|golden|={max_g:.3e})"
            ));
        }
        if worst_ratio > self.worst.0 || self.worst.1.is_empty() {
            self.worst = (worst_ratio, name.to_string());
        }
        if bad > 0 {
            self.failures.push(format!(
                "{name}: {bad}/{} elements outside atol={:e} rtol={:e}; max_abs={max_abs:.3e} \
                 (worst at flat index {worst_idx}: got {} want {})",
                av.len(),
                tol.atol,
                tol.rtol,
                av[worst_idx],
                gv[worst_idx]
            ));
        }
        Ok(())
    }

    /// Compare with the case's tolerance for `name`.
    pub fn check(
        &mut self,
        case: &Case,
        name: &str,
        actual: &Tensor,
        golden: &Tensors,
        main: bool,
    ) -> Result<()> {
        let expected = golden
            .get(name)
            .ok_or_else(|| anyhow!("golden tensor `{name}` missing"))?;
        let tol = case.tol(name, main);
        self.close(name, actual, expected, tol)
    }

    /// Exact equality of integer data.
    pub fn exact(&mut self, name: &str, actual: &[i64], expected: &[i64]) {
        self.compared += 1;
        self.compared_names.insert(name.to_string());
        if actual.len() != expected.len() {
            self.failures.push(format!(
                "{name}: length {} != golden {}",
                actual.len(),
                expected.len()
            ));
            return;
        }
        let bad: Vec<usize> = (0..actual.len())
            .filter(|&i| actual[i] != expected[i])
            .collect();
        if let Some(&i) = bad.first() {
            self.failures.push(format!(
                "{name}: {} of {} values differ (first at {i}: got {} want {})",
                bad.len(),
                actual.len(),
                actual[i],
                expected[i]
            ));
        }
    }

    pub fn fail(&mut self, msg: impl Into<String>) {
        self.failures.push(msg.into());
    }

    /// Declare that the golden tensor `name` is deliberately not compared (`why` is reported).
    /// Every other golden tensor of `outputs.safetensors` that no comparison named is a
    /// failure ([`Checker::uncompared_goldens`]): a golden the port's trace did not produce
    /// must not pass silently.
    pub fn not_compared(&mut self, name: &str, why: &str) {
        self.waived.push((name.to_string(), why.to_string()));
    }

    /// The golden names (of `golden`) that were neither compared nor waived, sorted.
    pub fn uncompared_goldens<'a>(
        &self,
        golden: impl IntoIterator<Item = &'a String>,
    ) -> Vec<String> {
        let mut v: Vec<String> = golden
            .into_iter()
            .filter(|n| {
                !self.compared_names.contains(n.as_str())
                    && !self.waived.iter().any(|(w, _)| w == *n)
            })
            .cloned()
            .collect();
        v.sort();
        v
    }
}

/// The tensor names of a safetensors file (header only).
pub fn safetensors_names(path: &Path) -> Result<Vec<String>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .with_context(|| format!("reading the header of {}", path.display()))?;
    let n = u64::from_le_bytes(len);
    if n > 100_000_000 {
        bail!(
            "{}: implausible safetensors header size {n}",
            path.display()
        );
    }
    let mut buf = vec![0u8; n as usize];
    f.read_exact(&mut buf)
        .with_context(|| format!("reading the header of {}", path.display()))?;
    let v: Value = serde_json::from_slice(&buf)
        .with_context(|| format!("parsing the header of {}", path.display()))?;
    let mut names: Vec<String> = v
        .as_object()
        .ok_or_else(|| anyhow!("{}: header is not an object", path.display()))?
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    names.sort();
    Ok(names)
}

/// Golden tensor as i64 values (ids, indices), whatever the stored dtype.
pub fn as_i64(t: &Tensor) -> Result<Vec<i64>> {
    Ok(match t.dtype() {
        DType::I64 => t.flatten_all()?.to_vec1::<i64>()?,
        DType::U32 => t
            .flatten_all()?
            .to_vec1::<u32>()?
            .into_iter()
            .map(i64::from)
            .collect(),
        DType::U8 => t
            .flatten_all()?
            .to_vec1::<u8>()?
            .into_iter()
            .map(i64::from)
            .collect(),
        _ => {
            let v = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            if v.iter().any(|x| x.fract() != 0.0) {
                bail!("tensor holds non-integer values");
            }
            v.into_iter().map(|x| x as i64).collect()
        }
    })
}

/// What a kind's runner reports.
pub enum Outcome {
    /// The runner compared what it could; the checker decides ok/FAIL.
    Ran,
    /// The kind exists but this case uses something not implemented (explained).
    Skip(String),
}
