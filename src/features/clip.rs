//! CLIP image and text towers (open_clip `CLIP`, as MMAudio uses them).
//!
//! MMAudio loads `hf-hub:apple/DFN5B-CLIP-ViT-H-14-384` through open_clip and uses
//! (`mmaudio/model/utils/features_utils.py` of hkchengrex/MMAudio @ 974010a):
//!
//! * **images** (`encode_video_with_clip`): 384×384 frames in [0, 1], normalised with the
//!   OpenAI mean/std inside MMAudio, then `encode_image(normalize=True)`: conv1 (kernel =
//!   stride = patch, no bias) → prepend `class_embedding` → `+ positional_embedding` →
//!   `ln_pre` → pre-LN residual blocks (QuickGELU MLP) → `ln_post` → CLS token → `@ proj` →
//!   L2 normalisation. The checkpoint's config says image_size 378 while MMAudio feeds 384:
//!   conv1 sees a 27×27 grid and pixels 378..383 are never used.
//! * **text** (`patch_clip`'s replacement of `encode_text`): token + position embeddings →
//!   causal pre-LN blocks over all 77 positions (padding included, no padding mask) →
//!   `ln_final` → per-token L2 normalisation. No EOT pooling and no `text_projection`.
//!
//! Module paths mirror open_clip's `CLIP.state_dict()` keys (`visual.conv1.weight`,
//! `visual.transformer.resblocks.{i}.attn.in_proj_weight`, `token_embedding.weight`, ...),
//! so `open_clip_pytorch_model.bin` or `open_clip_model.safetensors` load without renaming.

use super::vit::{Activation, LayerNorm, Mlp, MultiheadAttention, Trace, host_ok, l2_normalize};
use crate::error::{Error, Result};
use crate::weights::WeightFile;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

/// OpenAI CLIP normalisation applied by MMAudio before `encode_image` (the literals of
/// `features_utils.py`, rounded to f32 as torchvision does).
#[allow(clippy::excessive_precision)]
pub const OPENAI_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
#[allow(clippy::excessive_precision)]
pub const OPENAI_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// LayerNorm epsilon of open_clip (`nn.LayerNorm` default).
pub const CLIP_LN_EPS: f64 = 1e-5;

/// Vision tower hyper-parameters (open_clip `CLIPVisionCfg`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipVisionConfig {
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub patch_size: usize,
    /// Image size of the config; the position embedding covers `(image_size / patch)²` patches.
    pub image_size: usize,
    pub mlp_ratio: f64,
}

impl ClipVisionConfig {
    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
    pub fn mlp_width(&self) -> usize {
        (self.width as f64 * self.mlp_ratio) as usize
    }
}

/// Text tower hyper-parameters (open_clip `CLIPTextCfg`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipTextConfig {
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub mlp_ratio: f64,
}

impl ClipTextConfig {
    pub fn mlp_width(&self) -> usize {
        (self.width as f64 * self.mlp_ratio) as usize
    }
}

/// A CLIP model configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    /// Output size of the image projection (`visual.proj` columns).
    pub embed_dim: usize,
    /// QuickGELU (`x·σ(1.702x)`) instead of exact GELU in both towers.
    pub quick_gelu: bool,
    pub vision: ClipVisionConfig,
    pub text: ClipTextConfig,
}

impl ClipConfig {
    /// `apple/DFN5B-CLIP-ViT-H-14-384` (open_clip `ViT-H-14-378-quickgelu`), the model MMAudio
    /// uses: vision 1280 wide, 32 layers, 16 heads, patch 14, 27×27 grid; text 1024 wide,
    /// 24 layers, 16 heads; embed 1024.
    pub fn dfn5b_vit_h_14_384() -> Self {
        Self {
            embed_dim: 1024,
            quick_gelu: true,
            vision: ClipVisionConfig {
                width: 1280,
                layers: 32,
                heads: 16,
                patch_size: 14,
                image_size: 378,
                mlp_ratio: 4.0,
            },
            text: ClipTextConfig {
                width: 1024,
                layers: 24,
                heads: 16,
                vocab_size: 49408,
                context_length: 77,
                mlp_ratio: 4.0,
            },
        }
    }

    /// Parse an open_clip model config (the JSON of `open_clip/model_configs/*.json`, or an
    /// `open_clip_config.json` with it under `model_cfg`). Options this port does not
    /// implement (attentional pooling, layer scale, HF or timm towers, ...) are rejected.
    pub fn from_open_clip_json(v: &Value) -> Result<Self> {
        let v = v.get("model_cfg").unwrap_or(v);
        let bad = |m: String| Error::config(format!("open_clip config: {m}"));
        let uint = |o: &Value, k: &str, default: Option<usize>| -> Result<usize> {
            match o.get(k) {
                Some(x) => x
                    .as_u64()
                    .map(|x| x as usize)
                    .ok_or_else(|| bad(format!("`{k}` is not a non-negative integer: {x}"))),
                None => default.ok_or_else(|| bad(format!("missing `{k}`"))),
            }
        };
        let float = |o: &Value, k: &str, default: f64| -> Result<f64> {
            match o.get(k) {
                Some(x) => x
                    .as_f64()
                    .ok_or_else(|| bad(format!("`{k}` is not a number: {x}"))),
                None => Ok(default),
            }
        };
        let unsupported = |o: &Value, k: &str, ok: &dyn Fn(&Value) -> bool| -> Result<()> {
            match o.get(k) {
                Some(x) if !ok(x) => Err(bad(format!("`{k}` = {x} is not supported"))),
                _ => Ok(()),
            }
        };
        let is_null_or_false = |x: &Value| x.is_null() || x == &Value::Bool(false);

        let vc = v
            .get("vision_cfg")
            .ok_or_else(|| bad("missing `vision_cfg`".into()))?;
        let tc = v
            .get("text_cfg")
            .ok_or_else(|| bad("missing `text_cfg`".into()))?;
        for k in [
            "timm_model_name",
            "attentional_pool",
            "no_ln_pre",
            "ls_init_value",
            "final_ln_after_pool",
        ] {
            unsupported(vc, k, &is_null_or_false)?;
        }
        unsupported(vc, "pool_type", &|x| x == "tok")?;
        unsupported(vc, "pos_embed_type", &|x| x == "learnable")?;
        for k in [
            "hf_model_name",
            "embed_cls",
            "no_causal_mask",
            "ls_init_value",
        ] {
            unsupported(tc, k, &is_null_or_false)?;
        }
        let image_size = match vc.get("image_size") {
            Some(Value::Array(a)) if a.len() == 2 && a[0] == a[1] => {
                a[0].as_u64()
                    .ok_or_else(|| bad("bad `image_size`".into()))? as usize
            }
            Some(Value::Array(_)) => return Err(bad("non-square `image_size`".into())),
            _ => uint(vc, "image_size", Some(224))?,
        };
        let width = uint(vc, "width", Some(768))?;
        let head_width = uint(vc, "head_width", Some(64))?;
        if head_width == 0 || width % head_width != 0 {
            return Err(bad(format!(
                "vision width {width} is not a multiple of head_width {head_width}"
            )));
        }
        let cfg = Self {
            embed_dim: uint(v, "embed_dim", None)?,
            quick_gelu: v
                .get("quick_gelu")
                .and_then(|x| x.as_bool())
                .unwrap_or(false),
            vision: ClipVisionConfig {
                width,
                layers: uint(vc, "layers", Some(12))?,
                heads: width / head_width,
                patch_size: uint(vc, "patch_size", Some(16))?,
                image_size,
                mlp_ratio: float(vc, "mlp_ratio", 4.0)?,
            },
            text: ClipTextConfig {
                width: uint(tc, "width", Some(512))?,
                layers: uint(tc, "layers", Some(12))?,
                heads: uint(tc, "heads", Some(8))?,
                vocab_size: uint(tc, "vocab_size", Some(49408))?,
                context_length: uint(tc, "context_length", Some(77))?,
                mlp_ratio: float(tc, "mlp_ratio", 4.0)?,
            },
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        let v = &self.vision;
        let t = &self.text;
        if v.patch_size == 0 || v.grid() == 0 {
            return Err(Error::config(format!(
                "CLIP vision: image_size {} and patch_size {} give no patches",
                v.image_size, v.patch_size
            )));
        }
        for (what, w, h) in [("vision", v.width, v.heads), ("text", t.width, t.heads)] {
            if h == 0 || w % h != 0 {
                return Err(Error::config(format!(
                    "CLIP {what}: width {w} is not a multiple of {h} heads"
                )));
            }
        }
        if t.context_length == 0 {
            return Err(Error::config("CLIP text: context_length is 0"));
        }
        Ok(())
    }

    fn activation(&self) -> Activation {
        if self.quick_gelu {
            Activation::QuickGelu
        } else {
            Activation::GeluErf
        }
    }
}

/// open_clip `ResidualAttentionBlock`: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
#[derive(Debug, Clone)]
struct ResidualBlock {
    ln_1: LayerNorm,
    attn: MultiheadAttention,
    ln_2: LayerNorm,
    mlp: Mlp,
}

impl ResidualBlock {
    fn load(
        vb: VarBuilder,
        width: usize,
        heads: usize,
        mlp: usize,
        act: Activation,
    ) -> Result<Self> {
        Ok(Self {
            ln_1: LayerNorm::load(vb.pp("ln_1"), width, CLIP_LN_EPS)?,
            attn: MultiheadAttention::load(vb.pp("attn"), width, heads)?,
            ln_2: LayerNorm::load(vb.pp("ln_2"), width, CLIP_LN_EPS)?,
            mlp: Mlp::load(&vb.pp("mlp"), ("c_fc", "c_proj"), width, mlp, act)?,
        })
    }

    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.ln_1.forward(x)?, mask)?)?;
        Ok((&x + self.mlp.forward(&self.ln_2.forward(&x)?)?)?)
    }

    /// CPU fast path on `b` sequences of `t` host rows, in place.
    fn forward_host(&self, x: &mut [f32], b: usize, t: usize, causal: bool) -> Result<()> {
        let h = self.ln_1.forward_host(x)?;
        self.attn.add_host(x, &h, b, t, causal)?;
        let h = self.ln_2.forward_host(x)?;
        self.mlp.add_host(x, &h, b * t)
    }
}

/// open_clip `Transformer` (`transformer.resblocks.{i}`).
#[derive(Debug, Clone)]
struct Transformer {
    blocks: Vec<ResidualBlock>,
    /// Weights are host f32: the blocks run on the CPU kernels of [`crate::cpu`], on one
    /// host buffer updated in place (no per-op tensors, heads never split or merged).
    host: bool,
}

impl Transformer {
    fn load(
        vb: VarBuilder,
        layers: usize,
        width: usize,
        heads: usize,
        mlp: usize,
        act: Activation,
    ) -> Result<Self> {
        let host = host_ok(&vb);
        let vb = vb.pp("resblocks");
        let blocks = (0..layers)
            .map(|i| ResidualBlock::load(vb.pp(i), width, heads, mlp, act))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { blocks, host })
    }

    /// `x (B, T, width)`; `causal`: token i attends to tokens 0..=i only (text tower).
    fn forward(&self, mut x: Tensor, causal: bool, trace: &mut Trace) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        if self.host && x.device().is_cpu() && x.dtype() == DType::F32 {
            let mut v = x.flatten_all()?.to_vec1::<f32>()?;
            for (i, blk) in self.blocks.iter().enumerate() {
                blk.forward_host(&mut v, b, t, causal)?;
                trace.record(&format!("block{i}_out"), || {
                    Ok(Tensor::from_slice(&v, (b, t, c), &Device::Cpu)?)
                })?;
            }
            return Ok(Tensor::from_vec(v, (b, t, c), &Device::Cpu)?);
        }
        let mask = if causal {
            Some(causal_mask(t, x.dtype(), x.device())?)
        } else {
            None
        };
        for (i, blk) in self.blocks.iter().enumerate() {
            x = blk.forward(&x, mask.as_ref())?;
            trace.record(&format!("block{i}_out"), || Ok(x.clone()))?;
        }
        Ok(x)
    }
}

/// Keys a full open_clip checkpoint holds that MMAudio never uses.
fn unused_by_mmaudio(k: &str) -> bool {
    matches!(
        k,
        "text_projection" | "logit_scale" | "logit_bias" | "attn_mask"
    )
}

/// The CLIP image tower with MMAudio's normalisation in front.
#[derive(Debug, Clone)]
pub struct ClipVision {
    cfg: ClipVisionConfig,
    embed_dim: usize,
    /// conv1 as a transposed matrix `(3·p·p, width)` (kernel = stride, no bias): the patch
    /// embedding is one GEMM of the patches `(N·g², 3·p·p)` with it.
    conv1_t: Tensor,
    class_embedding: Tensor,
    positional_embedding: Tensor,
    ln_pre: LayerNorm,
    transformer: Transformer,
    ln_post: LayerNorm,
    /// `(width, embed_dim)`, used as `x @ proj`.
    proj: Tensor,
    dtype: DType,
    /// Images per forward pass (bounds activation memory; results do not depend on it).
    pub max_batch: usize,
}

impl ClipVision {
    /// Build from a `VarBuilder` at the root of a CLIP state dict (reads `visual.*`).
    pub fn new(cfg: &ClipConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let v = &cfg.vision;
        let vb = vb.pp("visual");
        let p = v.patch_size;
        let conv1_t = vb
            .get((v.width, 3, p, p), "conv1.weight")?
            .reshape((v.width, 3 * p * p))?
            .t()?
            .contiguous()?;
        let n_pos = v.grid() * v.grid() + 1;
        Ok(Self {
            cfg: v.clone(),
            embed_dim: cfg.embed_dim,
            conv1_t,
            class_embedding: vb.get(v.width, "class_embedding")?,
            positional_embedding: vb.get((n_pos, v.width), "positional_embedding")?,
            ln_pre: LayerNorm::load(vb.pp("ln_pre"), v.width, CLIP_LN_EPS)?,
            transformer: Transformer::load(
                vb.pp("transformer"),
                v.layers,
                v.width,
                v.heads,
                v.mlp_width(),
                cfg.activation(),
            )?,
            ln_post: LayerNorm::load(vb.pp("ln_post"), v.width, CLIP_LN_EPS)?,
            proj: vb.get((v.width, cfg.embed_dim), "proj")?,
            dtype: vb.dtype(),
            max_batch: 8,
        })
    }

    /// Load from a weight file holding the `visual.*` tensors (a full CLIP checkpoint or the
    /// image tower alone). Other `visual.*` tensors are an error (wrong model).
    pub fn load(
        wf: &Arc<WeightFile>,
        cfg: &ClipConfig,
        dtype: DType,
        dev: &Device,
    ) -> Result<Self> {
        let m = Self::new(cfg, wf.var_builder(dtype, dev))?;
        wf.check_all_used("the CLIP image tower", |k| !k.starts_with("visual."))?;
        Ok(m)
    }

    pub fn config(&self) -> &ClipVisionConfig {
        &self.cfg
    }
    pub fn embed_dim(&self) -> usize {
        self.embed_dim
    }

    /// `(N, 3, H, W)` images in [0, 1] → `(N, embed_dim)` unit-norm features (float32).
    pub fn encode_images(&self, x: &Tensor) -> Result<Tensor> {
        self.encode_images_traced(x, &mut Trace::off())
    }

    /// [`encode_images`](Self::encode_images), recording `patch_embeds`,
    /// `tokens_before_ln_pre`, `block{i}_out`, `ln_post_cls` and `pooled_projected`.
    pub fn encode_images_traced(&self, x: &Tensor, trace: &mut Trace) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let (p, g) = (self.cfg.patch_size, self.cfg.grid());
        if c != 3 || h / p != g || w / p != g {
            return Err(Error::input(format!(
                "CLIP image tower expects (N, 3, H, W) images with {g}×{g} patches of {p} px \
                 (e.g. 384×384 for MMAudio), got {:?}",
                x.dims()
            )));
        }
        if n == 0 {
            return Ok(Tensor::zeros((0, self.embed_dim), DType::F32, x.device())?);
        }
        let mut outs = Vec::new();
        let mut start = 0;
        while start < n {
            let m = self.max_batch.max(1).min(n - start);
            outs.push(self.forward_chunk(&x.narrow(0, start, m)?, trace)?);
            start += m;
        }
        Ok(Tensor::cat(&outs, 0)?)
    }

    /// `(B, T, 3, H, W)` → `(B, T, embed_dim)` (`encode_video_with_clip`).
    pub fn encode_video(&self, x: &Tensor) -> Result<Tensor> {
        self.encode_video_traced(x, &mut Trace::off())
    }

    pub fn encode_video_traced(&self, x: &Tensor, trace: &mut Trace) -> Result<Tensor> {
        let (b, t, c, h, w) = x.dims5()?;
        let y = self.encode_images_traced(&x.reshape((b * t, c, h, w))?, trace)?;
        Ok(y.reshape((b, t, self.embed_dim))?)
    }

    fn forward_chunk(&self, x: &Tensor, trace: &mut Trace) -> Result<Tensor> {
        let (n, _, _, _) = x.dims4()?;
        let (p, g, width) = (self.cfg.patch_size, self.cfg.grid(), self.cfg.width);
        let dev = x.device();
        // torchvision Normalize: (x − mean) / std per channel, in float32
        let mean = Tensor::new(&OPENAI_MEAN, dev)?.reshape((1, 3, 1, 1))?;
        let std = Tensor::new(&OPENAI_STD, dev)?.reshape((1, 3, 1, 1))?;
        let x = x
            .to_dtype(DType::F32)?
            .broadcast_sub(&mean)?
            .broadcast_div(&std)?;
        // conv1 with kernel = stride = p: pixels beyond g·p are never seen
        let x = x
            .narrow(2, 0, g * p)?
            .narrow(3, 0, g * p)?
            .to_dtype(self.dtype)?;
        let patches = x
            .reshape((n, 3, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((n * g * g, 3 * p * p))?;
        let tok = patches.matmul(&self.conv1_t)?.reshape((n, g * g, width))?;
        trace.record("patch_embeds", || {
            Ok(tok.transpose(1, 2)?.reshape((n, width, g, g))?)
        })?;
        let cls = self
            .class_embedding
            .reshape((1, 1, width))?
            .broadcast_as((n, 1, width))?;
        let x = Tensor::cat(&[&cls, &tok], 1)?.broadcast_add(&self.positional_embedding)?;
        trace.record("tokens_before_ln_pre", || Ok(x.clone()))?;
        let x = self.ln_pre.forward(&x)?;
        let x = self.transformer.forward(x, false, trace)?;
        // ln_post is per token: normalising only the CLS token gives the same result
        let cls = self.ln_post.forward(&x.narrow(1, 0, 1)?.squeeze(1)?)?;
        trace.record("ln_post_cls", || Ok(cls.clone()))?;
        let pooled = cls.matmul(&self.proj)?;
        trace.record("pooled_projected", || Ok(pooled.clone()))?;
        l2_normalize(&pooled)
    }
}

/// The CLIP text tower as MMAudio patches it (per-token hidden states, no projection).
#[derive(Debug, Clone)]
pub struct ClipText {
    cfg: ClipTextConfig,
    token_embedding: Tensor,
    positional_embedding: Tensor,
    transformer: Transformer,
    ln_final: LayerNorm,
}

impl ClipText {
    /// Build from a `VarBuilder` at the root of a CLIP state dict.
    pub fn new(cfg: &ClipConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let t = &cfg.text;
        Ok(Self {
            cfg: t.clone(),
            token_embedding: vb.get((t.vocab_size, t.width), "token_embedding.weight")?,
            positional_embedding: vb.get((t.context_length, t.width), "positional_embedding")?,
            transformer: Transformer::load(
                vb.pp("transformer"),
                t.layers,
                t.width,
                t.heads,
                t.mlp_width(),
                cfg.activation(),
            )?,
            ln_final: LayerNorm::load(vb.pp("ln_final"), t.width, CLIP_LN_EPS)?,
        })
    }

    /// Load from a weight file holding the text tower (a full CLIP checkpoint or the text side
    /// alone). `text_projection` and `logit_scale` may be present and are ignored.
    pub fn load(
        wf: &Arc<WeightFile>,
        cfg: &ClipConfig,
        dtype: DType,
        dev: &Device,
    ) -> Result<Self> {
        let m = Self::new(cfg, wf.var_builder(dtype, dev))?;
        wf.check_all_used("the CLIP text tower", |k| {
            k.starts_with("visual.") || unused_by_mmaudio(k)
        })?;
        Ok(m)
    }

    pub fn config(&self) -> &ClipTextConfig {
        &self.cfg
    }

    /// Token ids `(B, L)` (any integer dtype, L ≤ context length, normally exactly 77) →
    /// `(B, L, width)` per-token L2-normalised `ln_final` outputs (float32), as MMAudio's
    /// patched `encode_text(tokens, normalize=True)`. With the causal mask, a shorter L gives
    /// the first L rows of the full-length result.
    pub fn encode_ids(&self, ids: &Tensor) -> Result<Tensor> {
        self.encode_ids_traced(ids, &mut Trace::off())
    }

    /// [`encode_ids`](Self::encode_ids), recording `transformer_in`, `block{i}_out` and
    /// `ln_final_out`.
    pub fn encode_ids_traced(&self, ids: &Tensor, trace: &mut Trace) -> Result<Tensor> {
        let (b, l) = ids.dims2()?;
        if l == 0 || l > self.cfg.context_length {
            return Err(Error::input(format!(
                "CLIP text tower: {l} tokens per prompt, expected 1..={} (normally {})",
                self.cfg.context_length, self.cfg.context_length
            )));
        }
        let host: Vec<i64> = ids.to_dtype(DType::I64)?.flatten_all()?.to_vec1::<i64>()?;
        if let Some(bad) = host
            .iter()
            .find(|&&i| i < 0 || i as usize >= self.cfg.vocab_size)
        {
            return Err(Error::input(format!(
                "CLIP text tower: token id {bad} outside the vocabulary (0..{})",
                self.cfg.vocab_size
            )));
        }
        let dev = self.token_embedding.device();
        let idx = Tensor::from_vec(
            host.iter().map(|&i| i as u32).collect::<Vec<u32>>(),
            b * l,
            dev,
        )?;
        let width = self.cfg.width;
        let x = self
            .token_embedding
            .index_select(&idx, 0)?
            .reshape((b, l, width))?
            .broadcast_add(&self.positional_embedding.narrow(0, 0, l)?)?;
        trace.record("transformer_in", || Ok(x.clone()))?;
        let x = self.transformer.forward(x, true, trace)?;
        let x = self.ln_final.forward(&x)?;
        trace.record("ln_final_out", || Ok(x.clone()))?;
        l2_normalize(&x)
    }

    /// Same as [`encode_ids`](Self::encode_ids) from host ids (one `Vec` per prompt).
    pub fn encode_tokens(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        let l = ids.first().map(|v| v.len()).unwrap_or(0);
        if ids.iter().any(|v| v.len() != l) {
            return Err(Error::input(
                "CLIP text tower: prompts of different lengths",
            ));
        }
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let t = Tensor::from_vec(flat, (ids.len(), l), &Device::Cpu)?;
        self.encode_ids(&t)
    }
}

/// Additive causal mask `(L, L)`: 0 on and below the diagonal, −∞ above.
fn causal_mask(l: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..l)
        .flat_map(|i| (0..l).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(v, (l, l), dev)?.to_dtype(dtype)?)
}

/// Both towers, loaded from one open_clip state dict.
#[derive(Debug, Clone)]
pub struct Clip {
    pub vision: ClipVision,
    pub text: ClipText,
}

impl Clip {
    /// Load a full CLIP checkpoint (`.safetensors` or `.pth`/`.bin`) strictly: every tensor
    /// must belong to the configured model, except `text_projection` / `logit_scale`, which
    /// MMAudio does not use.
    pub fn load(
        path: impl AsRef<Path>,
        cfg: &ClipConfig,
        dtype: DType,
        dev: &Device,
    ) -> Result<Self> {
        let wf = Arc::new(WeightFile::open(path)?);
        Self::from_weights(&wf, cfg, dtype, dev)
    }

    pub fn from_weights(
        wf: &Arc<WeightFile>,
        cfg: &ClipConfig,
        dtype: DType,
        dev: &Device,
    ) -> Result<Self> {
        let vb = wf.var_builder(dtype, dev);
        let vision = ClipVision::new(cfg, vb.clone())?;
        let text = ClipText::new(cfg, vb)?;
        wf.check_all_used("CLIP", unused_by_mmaudio)?;
        Ok(Self { vision, text })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::vit::RandomWeights;
    use serde_json::json;
    use std::collections::HashMap;
    use std::path::PathBuf;

    fn tiny() -> ClipConfig {
        ClipConfig::from_open_clip_json(&json!({
            "embed_dim": 24,
            "quick_gelu": true,
            "vision_cfg": {"image_size": 42, "layers": 2, "width": 32, "head_width": 16, "patch_size": 14},
            "text_cfg": {"context_length": 12, "vocab_size": 50, "width": 16, "heads": 2, "layers": 2}
        }))
        .unwrap()
    }

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("mmaudio-clip-test-{}-{name}", std::process::id()))
    }

    fn inputs() -> (Tensor, Tensor) {
        let dev = Device::Cpu;
        // 45 px: one pixel row/column beyond the 3×14 grid, never seen (like 384 vs 378)
        let img = Tensor::rand(0f32, 1.0, (2, 3, 45, 45), &dev).unwrap();
        let ids = Tensor::new(
            &[
                [49u32, 3, 7, 9, 48, 0, 0, 0, 0, 0, 0, 0],
                [49, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 48],
            ],
            &dev,
        )
        .unwrap();
        (img, ids)
    }

    /// A random tiny CLIP, its state dict (with the unused open_clip extras) and outputs.
    fn random_model() -> (Clip, Vec<(String, Tensor)>) {
        let cfg = tiny();
        let rw = RandomWeights::recording(7);
        let vb = rw.var_builder(DType::F32, &Device::Cpu);
        let vision = ClipVision::new(&cfg, vb.clone()).unwrap();
        let text = ClipText::new(&cfg, vb).unwrap();
        let mut sd = rw.recorded();
        let dev = Device::Cpu;
        sd.push((
            "text_projection".into(),
            Tensor::ones((16, 24), DType::F32, &dev).unwrap(),
        ));
        sd.push((
            "logit_scale".into(),
            Tensor::ones(1, DType::F32, &dev).unwrap(),
        ));
        (Clip { vision, text }, sd)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// The CPU fast path (host buffers, fused kernels, strided attention, causal flag) gives
    /// what the generic candle ops give (the path of GPUs and half precision).
    #[test]
    fn cpu_fast_path_matches_generic_ops() {
        let (mut clip, _) = random_model();
        let (img, ids) = inputs();
        assert!(clip.vision.transformer.host && clip.text.transformer.host);
        let fast_v = clip.vision.encode_images(&img).unwrap();
        let fast_t = clip.text.encode_ids(&ids).unwrap();
        clip.vision.transformer.host = false;
        clip.text.transformer.host = false;
        let gen_v = clip.vision.encode_images(&img).unwrap();
        let gen_t = clip.text.encode_ids(&ids).unwrap();
        assert!(
            max_diff(&fast_v, &gen_v) < 1e-5,
            "{}",
            max_diff(&fast_v, &gen_v)
        );
        assert!(
            max_diff(&fast_t, &gen_t) < 1e-5,
            "{}",
            max_diff(&fast_t, &gen_t)
        );
    }

    #[test]
    fn real_preset_matches_open_clip_config() {
        let j = json!({
            "embed_dim": 1024, "quick_gelu": true,
            "vision_cfg": {"image_size": 378, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24}
        });
        let real = ClipConfig::dfn5b_vit_h_14_384();
        assert_eq!(ClipConfig::from_open_clip_json(&j).unwrap(), real);
        // open_clip_config.json of the hub repo nests it under model_cfg
        let nested = json!({"model_cfg": j, "preprocess_cfg": {}});
        assert_eq!(ClipConfig::from_open_clip_json(&nested).unwrap(), real);
        assert_eq!(real.vision.grid(), 27);
        assert_eq!(real.vision.heads, 16);
        assert_eq!(real.vision.mlp_width(), 5120);
    }

    #[test]
    fn unsupported_config_is_rejected() {
        let j = json!({
            "embed_dim": 8,
            "vision_cfg": {"width": 32, "attentional_pool": true},
            "text_cfg": {}
        });
        let e = ClipConfig::from_open_clip_json(&j).unwrap_err().to_string();
        assert!(e.contains("attentional_pool"), "{e}");
        let j =
            json!({"embed_dim": 8, "vision_cfg": {"width": 30, "head_width": 16}, "text_cfg": {}});
        let e = ClipConfig::from_open_clip_json(&j).unwrap_err().to_string();
        assert!(e.contains("head_width"), "{e}");
    }

    #[test]
    fn safetensors_and_pth_load_to_the_same_model() {
        let (model, sd) = random_model();
        let (img, ids) = inputs();
        let want_img = model.vision.encode_images(&img).unwrap();
        let want_txt = model.text.encode_ids(&ids).unwrap();
        assert_eq!(want_img.dims(), &[2, 24]);
        assert_eq!(want_txt.dims(), &[2, 12, 16]);

        let st = tmp("ok.safetensors");
        let map: HashMap<String, Tensor> = sd.iter().cloned().collect();
        candle_core::safetensors::save(&map, &st).unwrap();
        let pth = tmp("ok.pth");
        crate::weights::write_pth(&pth, &sd, None).unwrap();
        for p in [&st, &pth] {
            let m = Clip::load(p, &tiny(), DType::F32, &Device::Cpu).unwrap();
            assert_eq!(
                max_diff(&m.vision.encode_images(&img).unwrap(), &want_img),
                0.0
            );
            assert_eq!(max_diff(&m.text.encode_ids(&ids).unwrap(), &want_txt), 0.0);
            // each tower alone from the full file
            let wf = Arc::new(WeightFile::open(p).unwrap());
            ClipVision::load(&wf, &tiny(), DType::F32, &Device::Cpu).unwrap();
            let wf = Arc::new(WeightFile::open(p).unwrap());
            ClipText::load(&wf, &tiny(), DType::F32, &Device::Cpu).unwrap();
        }
        let _ = std::fs::remove_file(&st);
        let _ = std::fs::remove_file(&pth);
    }

    #[test]
    fn missing_misshaped_and_foreign_tensors_are_named() {
        let (_, sd) = random_model();
        let dev = Device::Cpu;
        let key = "visual.transformer.resblocks.1.attn.in_proj_weight";

        let missing: Vec<_> = sd.iter().filter(|(k, _)| k != key).cloned().collect();
        let p = tmp("missing.pth");
        crate::weights::write_pth(&p, &missing, None).unwrap();
        let e = Clip::load(&p, &tiny(), DType::F32, &dev)
            .unwrap_err()
            .to_string();
        assert!(e.contains(key) && e.contains(&*p.to_string_lossy()), "{e}");
        assert!(e.contains("missing"), "{e}");
        let _ = std::fs::remove_file(&p);

        let shaped: Vec<_> = sd
            .iter()
            .map(|(k, t)| {
                if k == "positional_embedding" {
                    (
                        k.clone(),
                        Tensor::zeros((77, 16), DType::F32, &dev).unwrap(),
                    )
                } else {
                    (k.clone(), t.clone())
                }
            })
            .collect();
        let p = tmp("shape.pth");
        crate::weights::write_pth(&p, &shaped, None).unwrap();
        let e = Clip::load(&p, &tiny(), DType::F32, &dev)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("positional_embedding")
                && e.contains("[77, 16]")
                && e.contains("[12, 16]")
                && e.contains(&*p.to_string_lossy()),
            "{e}"
        );
        let _ = std::fs::remove_file(&p);

        let mut extra = sd.clone();
        extra.push((
            "visual.transformer.resblocks.2.ln_1.weight".into(),
            Tensor::ones(32, DType::F32, &dev).unwrap(),
        ));
        let p = tmp("extra.safetensors");
        candle_core::safetensors::save(&extra.into_iter().collect::<HashMap<_, _>>(), &p).unwrap();
        let e = Clip::load(&p, &tiny(), DType::F32, &dev)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("visual.transformer.resblocks.2.ln_1.weight"),
            "{e}"
        );
        let wf = Arc::new(WeightFile::open(&p).unwrap());
        let e = ClipVision::load(&wf, &tiny(), DType::F32, &dev)
            .unwrap_err()
            .to_string();
        assert!(e.contains("resblocks.2"), "{e}");
        // the text tower does not care about image-tower tensors
        let wf = Arc::new(WeightFile::open(&p).unwrap());
        ClipText::load(&wf, &tiny(), DType::F32, &dev).unwrap();
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn batching_causality_and_input_checks() {
        let (mut model, _) = random_model();
        let (img, ids) = inputs();
        let full = model.vision.encode_images(&img).unwrap();
        model.vision.max_batch = 1;
        assert!(max_diff(&model.vision.encode_images(&img).unwrap(), &full) < 1e-6);
        let video = img.unsqueeze(0).unwrap();
        let v = model.vision.encode_video(&video).unwrap();
        assert_eq!(v.dims(), &[1, 2, 24]);
        let norms = full
            .sqr()
            .unwrap()
            .sum(1)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5), "{norms:?}");

        // causal: a prefix gives the first rows of the full result
        let t = model.text.encode_ids(&ids).unwrap();
        let p = model
            .text
            .encode_ids(&ids.narrow(1, 0, 5).unwrap())
            .unwrap();
        assert!(max_diff(&t.narrow(1, 0, 5).unwrap(), &p) < 1e-6);
        // and later tokens matter for later rows only
        let mut other = ids.to_vec2::<u32>().unwrap();
        other[0][8] = 17;
        let o = model.text.encode_tokens(&other).unwrap();
        assert!(max_diff(&t.narrow(1, 0, 8).unwrap(), &o.narrow(1, 0, 8).unwrap()) < 1e-6);
        assert!(max_diff(&t.narrow(1, 8, 4).unwrap(), &o.narrow(1, 8, 4).unwrap()) > 1e-3);

        let dev = Device::Cpu;
        let e = model
            .vision
            .encode_images(&Tensor::zeros((1, 3, 41, 42), DType::F32, &dev).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("3×3 patches"), "{e}");
        let e = model
            .text
            .encode_tokens(&[vec![1, 2, 50]])
            .unwrap_err()
            .to_string();
        assert!(e.contains("token id 50"), "{e}");
        let e = model
            .text
            .encode_tokens(&[vec![0; 13]])
            .unwrap_err()
            .to_string();
        assert!(e.contains("13 tokens"), "{e}");
    }
}
