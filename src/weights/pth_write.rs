//! A minimal writer of PyTorch zip checkpoints (`torch.save(state_dict)` format, pickle
//! protocol 2), so tests and `make-test-model` can produce official-format `.pth` files
//! without Python. `torch.load(path, weights_only=True)` reads the result.

use crate::error::{Error, Result};
use candle_core::{DType, Tensor};
use std::io::Write;
use std::path::Path;

struct Pickler {
    out: Vec<u8>,
}

impl Pickler {
    fn op(&mut self, b: u8) {
        self.out.push(b);
    }
    fn global(&mut self, module: &str, name: &str) {
        self.op(b'c');
        self.out.extend_from_slice(module.as_bytes());
        self.op(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.op(b'\n');
    }
    fn unicode(&mut self, s: &str) {
        self.op(b'X');
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }
    fn int(&mut self, v: usize) {
        if v < 256 {
            self.op(b'K');
            self.op(v as u8);
        } else if v <= i32::MAX as usize {
            self.op(b'J');
            self.out.extend_from_slice(&(v as i32).to_le_bytes());
        } else {
            // LONG1 with 8 little-endian bytes
            self.op(0x8a);
            self.op(8);
            self.out.extend_from_slice(&(v as i64).to_le_bytes());
        }
    }
    fn int_tuple(&mut self, vs: &[usize]) {
        self.op(b'(');
        for &v in vs {
            self.int(v);
        }
        self.op(b't');
    }
    fn ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.op(b')');
        self.op(b'R');
    }
}

fn storage_class(dtype: DType) -> Result<&'static str> {
    Ok(match dtype {
        DType::F32 => "FloatStorage",
        DType::F16 => "HalfStorage",
        DType::BF16 => "BFloat16Storage",
        DType::F64 => "DoubleStorage",
        DType::I64 => "LongStorage",
        DType::U8 => "ByteStorage",
        other => {
            return Err(Error::config(format!(
                "cannot write {other:?} tensors to .pth"
            )));
        }
    })
}

/// Write `tensors` (in order) as a PyTorch state dict. `top_key`, if given, nests the state
/// dict one level down (`{"generator": state_dict}`, as BigVGAN checkpoints are shipped).
pub fn write_pth(path: &Path, tensors: &[(String, Tensor)], top_key: Option<&str>) -> Result<()> {
    let archive = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty() && s.is_ascii())
        .unwrap_or("archive")
        .to_string();

    let mut p = Pickler { out: vec![0x80, 2] };
    if let Some(k) = top_key {
        p.op(b'}');
        p.unicode(k);
    }
    p.ordered_dict();
    p.op(b'(');
    let mut blobs: Vec<Vec<u8>> = Vec::with_capacity(tensors.len());
    for (i, (name, t)) in tensors.iter().enumerate() {
        let t = t.to_device(&candle_core::Device::Cpu)?.contiguous()?;
        let dims = t.dims().to_vec();
        let numel: usize = dims.iter().product();
        let mut strides = vec![1usize; dims.len()];
        for d in (0..dims.len().saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * dims[d + 1];
        }
        p.unicode(name);
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.op(b'(');
        // persistent id: ('storage', storage_type, key, location, numel)
        p.op(b'(');
        p.unicode("storage");
        p.global("torch", storage_class(t.dtype())?);
        p.unicode(&i.to_string());
        p.unicode("cpu");
        p.int(numel);
        p.op(b't');
        p.op(b'Q');
        p.int(0); // storage offset
        p.int_tuple(&dims);
        p.int_tuple(&strides);
        p.op(0x89); // requires_grad = False
        p.ordered_dict(); // backward hooks
        p.op(b't');
        p.op(b'R');
        blobs.push(tensor_bytes(&t)?);
    }
    p.op(b'u');
    if top_key.is_some() {
        p.op(b's');
    }
    p.op(b'.');

    let file = std::fs::File::create(path)?;
    let mut zw = zip::ZipWriter::new(std::io::BufWriter::new(file));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .with_alignment(64);
    let zerr = |e: zip::result::ZipError| Error::WeightFile {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    zw.start_file(format!("{archive}/data.pkl"), opts)
        .map_err(zerr)?;
    zw.write_all(&p.out)?;
    zw.start_file(format!("{archive}/byteorder"), opts)
        .map_err(zerr)?;
    zw.write_all(b"little")?;
    for (i, b) in blobs.iter().enumerate() {
        zw.start_file(format!("{archive}/data/{i}"), opts)
            .map_err(zerr)?;
        zw.write_all(b)?;
    }
    zw.start_file(format!("{archive}/version"), opts)
        .map_err(zerr)?;
    zw.write_all(b"3\n")?;
    zw.finish().map_err(zerr)?;
    Ok(())
}

fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let flat = t.flatten_all()?;
    Ok(match t.dtype() {
        DType::F32 => flat
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::F16 => flat
            .to_vec1::<half::f16>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::BF16 => flat
            .to_vec1::<half::bf16>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::F64 => flat
            .to_vec1::<f64>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::I64 => flat
            .to_vec1::<i64>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::U8 => flat.to_vec1::<u8>()?,
        other => {
            return Err(Error::config(format!(
                "cannot write {other:?} tensors to .pth"
            )));
        }
    })
}
