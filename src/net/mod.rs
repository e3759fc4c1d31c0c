//! The MMAudio flow-prediction network (official `mmaudio/model/networks.py`, class `MMAudio`).
//!
//! Variable paths are the official state-dict keys (`audio_input_proj.0.weight`,
//! `joint_blocks.3.latent_block.attn.qkv.weight`, …), so the official `mmaudio_*.pth` files
//! and their safetensors conversions load without renaming (see [`MmAudioNet::load_file`]).
//!
//! Work is split as in the official code: [`MmAudioNet::preprocess_conditions`] computes
//! everything that depends only on the video/text features once per window, and
//! [`MmAudioNet::predict_flow`] is the per-step part. The network has no absolute positions:
//! sequence lengths follow the inputs (RoPE tables and the sync-feature resampling are built
//! per length), so any duration works.

pub mod blocks;
pub mod embed;
pub mod rope;

use crate::config::NetConfig;
use crate::error::{Error, Result};
use crate::nn::{ChannelLastConv1d, Linear, SwiGlu, selu};
use crate::weights::WeightFile;
use blocks::{AdaInput, FinalBlock, FusedAdaLn, JointBlock, SingleBlock};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use embed::TimestepEmbedder;
use rope::RopeTable;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Optional collector of intermediate tensors (for parity tests and debugging); off by default
/// and nearly free when off. A `Mutex` (not a `RefCell`) so that a loaded network can be
/// shared between threads (one model serving several streams).
#[derive(Default)]
pub struct Trace(Mutex<Option<HashMap<String, Tensor>>>);

impl Trace {
    pub fn enabled() -> Self {
        Self(Mutex::new(Some(HashMap::new())))
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<HashMap<String, Tensor>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    pub fn on(&self) -> bool {
        self.lock().is_some()
    }
    pub fn put(&self, name: &str, t: &Tensor) {
        if let Some(m) = self.lock().as_mut() {
            m.insert(name.to_string(), t.clone());
        }
    }
    pub fn take(&self) -> HashMap<String, Tensor> {
        self.lock().replace(HashMap::new()).unwrap_or_default()
    }
}

/// Input projection of one stream: first layer, optional activation, then (Conv)MLP.
#[derive(Debug, Clone)]
enum First {
    Conv(ChannelLastConv1d),
    Linear(Linear),
}

#[derive(Debug, Clone, Copy)]
enum Act {
    None,
    Selu,
    Silu,
}

#[derive(Debug, Clone)]
struct InputProj {
    first: First,
    act: Act,
    mlp: SwiGlu,
}

impl InputProj {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = match &self.first {
            First::Conv(c) => c.forward(x)?,
            First::Linear(l) => l.forward(x)?,
        };
        let h = match self.act {
            Act::None => h,
            Act::Selu => selu(&h)?,
            Act::Silu => candle_nn::ops::silu(&h)?,
        };
        self.mlp.forward(&h)
    }
}

/// Conditions of a window, computed once and reused by every sampler step.
#[derive(Debug, Clone)]
pub struct Conditions {
    /// `(B, clip_len, H)`
    pub clip_f: Tensor,
    /// `(B, S, H)`: projected sync features (S sync tokens), before resampling
    pub sync_u: Tensor,
    /// `(N,)` u32: the sync row of each latent row (`interpolate(mode='nearest-exact')`)
    pub sync_idx: Tensor,
    /// `(B, 77, H)`
    pub text_f: Tensor,
    /// `(B, H)`
    pub clip_f_c: Tensor,
    /// `(B, H)`
    pub text_f_c: Tensor,
    /// `global_cond_mlp(clip_f_c + text_f_c)`, `(B, H)`: step-independent part of `global_c`
    pub global_cond: Tensor,
    pub latent_rot: RopeTable,
    pub clip_rot: RopeTable,
}

impl Conditions {
    pub fn batch(&self) -> usize {
        self.clip_f.dim(0).unwrap_or(0)
    }
    pub fn latent_len(&self) -> usize {
        self.sync_idx.dim(0).unwrap_or(0)
    }

    /// `(B, N, H)`: the sync features resampled to the latent length (official `sync_f`
    /// after interpolation).
    pub fn sync_f(&self) -> Result<Tensor> {
        Ok(self.sync_u.index_select(&self.sync_idx, 1)?)
    }

    /// Repeat batch-1 rows to `b` (no-op when already `b`).
    pub fn expand(&self, b: usize) -> Result<Self> {
        let e = |t: &Tensor| -> candle_core::Result<Tensor> {
            if t.dim(0)? == b {
                Ok(t.clone())
            } else {
                let mut shape = t.dims().to_vec();
                shape[0] = b;
                t.broadcast_as(shape)?.contiguous()
            }
        };
        Ok(Self {
            clip_f: e(&self.clip_f)?,
            sync_u: e(&self.sync_u)?,
            sync_idx: self.sync_idx.clone(),
            text_f: e(&self.text_f)?,
            clip_f_c: e(&self.clip_f_c)?,
            text_f_c: e(&self.text_f_c)?,
            global_cond: e(&self.global_cond)?,
            latent_rot: self.latent_rot.clone(),
            clip_rot: self.clip_rot.clone(),
        })
    }

    /// Stack conditions along the batch (for evaluating cond and uncond as one batch).
    pub fn cat(parts: &[&Conditions]) -> Result<Self> {
        let c = |f: &dyn Fn(&Conditions) -> &Tensor| -> candle_core::Result<Tensor> {
            Tensor::cat(&parts.iter().map(|p| f(p)).collect::<Vec<_>>(), 0)
        };
        Ok(Self {
            clip_f: c(&|p| &p.clip_f)?,
            sync_u: c(&|p| &p.sync_u)?,
            sync_idx: parts[0].sync_idx.clone(),
            text_f: c(&|p| &p.text_f)?,
            clip_f_c: c(&|p| &p.clip_f_c)?,
            text_f_c: c(&|p| &p.text_f_c)?,
            global_cond: c(&|p| &p.global_cond)?,
            latent_rot: parts[0].latent_rot.clone(),
            clip_rot: parts[0].clip_rot.clone(),
        })
    }
}

/// Mean over `dim`, accumulated in f32 whatever the dtype (as PyTorch does for bf16/f16:
/// candle's reductions accumulate in the tensor's own dtype), returned in `x`'s dtype.
pub fn mean_f32(x: &Tensor, dim: usize) -> candle_core::Result<Tensor> {
    x.to_dtype(DType::F32)?.mean(dim)?.to_dtype(x.dtype())
}

/// Source index of `torch.nn.functional.interpolate(mode='nearest-exact')` evaluated in f32:
/// `min(floor((dst + 0.5) · (in / out)), in − 1)`.
pub fn nearest_exact_indices(in_len: usize, out_len: usize) -> Vec<u32> {
    let scale = in_len as f32 / out_len as f32;
    (0..out_len)
        .map(|d| {
            let s = ((d as f32 + 0.5) * scale).floor() as usize;
            s.min(in_len.saturating_sub(1)) as u32
        })
        .collect()
}

/// The MMAudio network.
pub struct MmAudioNet {
    pub cfg: NetConfig,
    dtype: DType,
    device: Device,
    audio_input_proj: InputProj,
    clip_input_proj: InputProj,
    sync_input_proj: InputProj,
    text_input_proj: InputProj,
    clip_cond_proj: Linear,
    text_cond_proj: Linear,
    global_cond_mlp: SwiGlu,
    /// `(1, 1, 8, sync_dim)`
    sync_pos_emb: Tensor,
    final_layer: FinalBlock,
    t_embed: TimestepEmbedder,
    joint_blocks: Vec<JointBlock>,
    fused_blocks: Vec<SingleBlock>,
    /// `(1, 1, latent_dim)`, f32
    latent_mean: Tensor,
    latent_std: Tensor,
    /// `(77, text_dim)`
    empty_string_feat: Tensor,
    /// `(1, clip_dim)`
    empty_clip_feat: Tensor,
    /// `(1, sync_dim)`
    empty_sync_feat: Tensor,
    /// Generic path: the adaLN projections of all blocks fed by `global_c` (CLIP and text
    /// streams, final layer) and by `extended_c` (latent stream, fused blocks), each fused
    /// into one matmul per step.
    fused_ada: Option<(FusedAdaLn, FusedAdaLn)>,
    pub trace: Trace,
}

/// Keys some official checkpoints carry that are non-persistent buffers here.
pub fn is_ignorable_key(k: &str) -> bool {
    k == "t_embed.freqs" || k == "latent_rot" || k == "clip_rot"
}

impl MmAudioNet {
    /// Build from a `VarBuilder` whose paths are the official keys.
    pub fn new(vb: VarBuilder, cfg: &NetConfig) -> Result<Self> {
        cfg.validate()?;
        let h = cfg.hidden_dim;
        let mlp_h = cfg.mlp_hidden();
        let v2 = cfg.v2;
        let act = if v2 { Act::Silu } else { Act::Selu };
        let conv_proj =
            |name: &str, in_dim: usize, k_mlp: usize| -> candle_core::Result<InputProj> {
                let p = vb.pp(name);
                Ok(InputProj {
                    first: First::Conv(ChannelLastConv1d::load(p.pp(0), in_dim, h, 7, 3, true)?),
                    act,
                    mlp: SwiGlu::load(p.pp(2), h, mlp_h, k_mlp, k_mlp / 2)?,
                })
            };
        // v1: Linear → (Conv)MLP at index 1; v2: Linear → SiLU → (Conv)MLP at index 2
        let lin_proj =
            |name: &str, in_dim: usize, k_mlp: usize| -> candle_core::Result<InputProj> {
                let p = vb.pp(name);
                let mlp_idx = if v2 { 2 } else { 1 };
                Ok(InputProj {
                    first: First::Linear(Linear::load(p.pp(0), in_dim, h, true)?),
                    act: if v2 { Act::Silu } else { Act::None },
                    mlp: SwiGlu::load(p.pp(mlp_idx), h, mlp_h, k_mlp, k_mlp / 2)?,
                })
            };
        let joint_depth = cfg.joint_depth();
        let mut joint_blocks = (0..joint_depth)
            .map(|i| JointBlock::load(vb.pp("joint_blocks").pp(i), cfg, i == joint_depth - 1))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut fused_blocks = (0..cfg.fused_depth)
            .map(|i| SingleBlock::load(vb.pp("fused_blocks").pp(i), cfg, false, 3))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut final_layer = FinalBlock::load(vb.pp("final_layer"), h, cfg.latent_dim)?;
        let fused_ada = if crate::ops::fast_cpu_path(vb.device(), vb.dtype()) {
            None
        } else {
            let mut global = Vec::new();
            let mut extended = Vec::new();
            for jb in joint_blocks.iter_mut() {
                let (latent, clip, text) = jb.streams_mut();
                extended.push(latent.ada_mut());
                global.push(clip.ada_mut());
                global.push(text.ada_mut());
            }
            for b in fused_blocks.iter_mut() {
                extended.push(b.ada_mut());
            }
            global.push(final_layer.ada_mut());
            Some((FusedAdaLn::fuse(global, h)?, FusedAdaLn::fuse(extended, h)?))
        };
        let (max_period, freq_dim) = if v2 { (1.0, h) } else { (10_000.0, 256) };
        let f32vb = vb.clone().set_dtype(DType::F32);
        Ok(Self {
            cfg: cfg.clone(),
            dtype: vb.dtype(),
            device: vb.device().clone(),
            audio_input_proj: conv_proj("audio_input_proj", cfg.latent_dim, 7)?,
            clip_input_proj: lin_proj("clip_input_proj", cfg.clip_dim, 3)?,
            sync_input_proj: conv_proj("sync_input_proj", cfg.sync_dim, 3)?,
            text_input_proj: lin_proj("text_input_proj", cfg.text_dim, 1)?,
            clip_cond_proj: Linear::load(vb.pp("clip_cond_proj"), h, h, true)?,
            text_cond_proj: Linear::load(vb.pp("text_cond_proj"), h, h, true)?,
            global_cond_mlp: SwiGlu::load(vb.pp("global_cond_mlp"), h, mlp_h, 1, 0)?,
            sync_pos_emb: vb.get((1, 1, 8, cfg.sync_dim), "sync_pos_emb")?,
            final_layer,
            t_embed: TimestepEmbedder::load(vb.pp("t_embed"), h, freq_dim, max_period)?,
            joint_blocks,
            fused_blocks,
            latent_mean: f32vb.get((1, 1, cfg.latent_dim), "latent_mean")?,
            latent_std: f32vb.get((1, 1, cfg.latent_dim), "latent_std")?,
            empty_string_feat: vb.get((cfg.text_seq_len, cfg.text_dim), "empty_string_feat")?,
            empty_clip_feat: vb.get((1, cfg.clip_dim), "empty_clip_feat")?,
            empty_sync_feat: vb.get((1, cfg.sync_dim), "empty_sync_feat")?,
            fused_ada,
            trace: Trace::default(),
        })
    }

    /// Load from a weights file (official `.pth` or safetensors), strictly: every tensor the
    /// configuration needs must be present with its shape, and the file must not hold tensors
    /// of a bigger/other model. The configuration is checked against the file first so a
    /// wrong variant is reported as such.
    pub fn load_file(
        path: &std::path::Path,
        cfg: &NetConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let wf = Arc::new(WeightFile::open(path)?);
        Self::load_weights(&wf, cfg, dtype, device)
    }

    pub fn load_weights(
        wf: &Arc<WeightFile>,
        cfg: &NetConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        check_variant(wf, cfg)?;
        let net = Self::new(wf.var_builder(dtype, device), cfg).map_err(|e| wf.wrap_error(e))?;
        wf.check_all_used("the MMAudio network", is_ignorable_key)?;
        Ok(net)
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `(x − mean) / std`, in the latent's dtype.
    pub fn normalize(&self, x: &Tensor) -> Result<Tensor> {
        let dt = x.dtype();
        let xf = x.to_dtype(DType::F32)?;
        Ok(xf
            .broadcast_sub(&self.latent_mean)?
            .broadcast_div(&self.latent_std)?
            .to_dtype(dt)?)
    }

    /// `x · std + mean`, in f32.
    pub fn unnormalize(&self, x: &Tensor) -> Result<Tensor> {
        let xf = x.to_dtype(DType::F32)?;
        Ok(xf
            .broadcast_mul(&self.latent_std)?
            .broadcast_add(&self.latent_mean)?)
    }

    /// Everything that depends only on the features: projections, sync positional embedding
    /// and resampling to `latent_len`, the pooled clip/text conditions, the step-independent
    /// part of the global condition and the RoPE tables.
    ///
    /// `clip_f (B, L, clip_dim)`, `sync_f (B, S, sync_dim)` with `S` a multiple of 8,
    /// `text_f (B, 77, text_dim)`.
    pub fn preprocess_conditions(
        &self,
        clip_f: &Tensor,
        sync_f: &Tensor,
        text_f: &Tensor,
        latent_len: usize,
    ) -> Result<Conditions> {
        let (b, clip_len, cd) = clip_f.dims3()?;
        let (bs, sync_len, sd) = sync_f.dims3()?;
        let (bt, text_len, td) = text_f.dims3()?;
        if cd != self.cfg.clip_dim || sd != self.cfg.sync_dim || td != self.cfg.text_dim {
            return Err(Error::input(format!(
                "feature widths clip {cd} / sync {sd} / text {td} do not match the network's {} / {} / {}",
                self.cfg.clip_dim, self.cfg.sync_dim, self.cfg.text_dim
            )));
        }
        if bs != b || bt != b {
            return Err(Error::input(format!(
                "feature batch sizes differ: clip {b}, sync {bs}, text {bt}"
            )));
        }
        if sync_len == 0 || sync_len % 8 != 0 {
            return Err(Error::input(format!(
                "sync features must hold whole 8-token segments (got {sync_len} tokens)"
            )));
        }
        if text_len != self.cfg.text_seq_len {
            return Err(Error::input(format!(
                "text features have {text_len} tokens, expected {}",
                self.cfg.text_seq_len
            )));
        }
        if clip_len == 0 || latent_len == 0 {
            return Err(Error::input("empty clip or latent sequence"));
        }
        let dt = self.dtype;
        let clip_f = clip_f.to_dtype(dt)?;
        let text_f = text_f.to_dtype(dt)?;
        // (B, S/8, 8, D) + pos_emb per position inside a segment
        let sync_f = sync_f
            .to_dtype(dt)?
            .reshape((b, sync_len / 8, 8, sd))?
            .broadcast_add(&self.sync_pos_emb)?
            .reshape((b, sync_len, sd))?;
        if self.trace.on() {
            self.trace
                .put("sync_f_with_pos_emb.b0", &sync_f.narrow(0, 0, 1)?);
        }
        let clip_f = self.clip_input_proj.forward(&clip_f)?;
        let sync_f = self.sync_input_proj.forward(&sync_f)?;
        let text_f = self.text_input_proj.forward(&text_f)?;
        if self.trace.on() {
            self.trace.put("sync_f_proj_before_interp", &sync_f);
        }
        let idx = Tensor::from_vec(
            nearest_exact_indices(sync_len, latent_len),
            latent_len,
            &self.device,
        )?;
        let clip_f_c = self.clip_cond_proj.forward(&mean_f32(&clip_f, 1)?)?;
        let text_f_c = self.text_cond_proj.forward(&mean_f32(&text_f, 1)?)?;
        let global_cond = self.global_cond_mlp.forward(&(&clip_f_c + &text_f_c)?)?;
        let (latent_rot, clip_rot) =
            RopeTable::pair(latent_len, clip_len, self.cfg.head_dim(), &self.device)?;
        Ok(Conditions {
            clip_f,
            sync_u: sync_f,
            sync_idx: idx,
            text_f,
            clip_f_c,
            text_f_c,
            global_cond,
            latent_rot,
            clip_rot,
        })
    }

    /// The learned "no video" CLIP sequence `(b, clip_len, clip_dim)`.
    pub fn empty_clip_sequence(&self, b: usize, clip_len: usize) -> Result<Tensor> {
        Ok(self
            .empty_clip_feat
            .unsqueeze(0)?
            .broadcast_as((b, clip_len, self.cfg.clip_dim))?
            .contiguous()?)
    }
    /// The learned "no video" sync sequence `(b, sync_len, sync_dim)`.
    pub fn empty_sync_sequence(&self, b: usize, sync_len: usize) -> Result<Tensor> {
        Ok(self
            .empty_sync_feat
            .unsqueeze(0)?
            .broadcast_as((b, sync_len, self.cfg.sync_dim))?
            .contiguous()?)
    }
    /// CLIP features of the empty string from the checkpoint, `(b, 77, text_dim)`.
    pub fn empty_string_sequence(&self, b: usize) -> Result<Tensor> {
        Ok(self
            .empty_string_feat
            .unsqueeze(0)?
            .broadcast_as((b, self.cfg.text_seq_len, self.cfg.text_dim))?
            .contiguous()?)
    }

    /// The unconditional branch (official `get_empty_conditions`): empty clip/sync tokens and
    /// the empty-string text — or the negative prompt's text features `(B, 77, text_dim)`,
    /// which then set the batch — computed at batch 1 and expanded to `b`.
    pub fn empty_conditions(
        &self,
        b: usize,
        latent_len: usize,
        clip_len: usize,
        sync_len: usize,
        negative_text: Option<&Tensor>,
    ) -> Result<Conditions> {
        let clip = self.empty_clip_sequence(1, clip_len)?;
        let sync = self.empty_sync_sequence(1, sync_len)?;
        match negative_text {
            None => {
                let text = self.empty_string_sequence(1)?;
                self.preprocess_conditions(&clip, &sync, &text, latent_len)?
                    .expand(b)
            }
            Some(neg) => {
                let nb = neg.dim(0)?;
                let clip = clip
                    .broadcast_as((nb, clip_len, self.cfg.clip_dim))?
                    .contiguous()?;
                let sync = sync
                    .broadcast_as((nb, sync_len, self.cfg.sync_dim))?
                    .contiguous()?;
                self.preprocess_conditions(&clip, &sync, neg, latent_len)?
                    .expand(b)
            }
        }
    }

    /// Timestep embeddings `(len(ts), H)` for flow times in [0, 1].
    pub fn time_embeddings(&self, ts: &[f32]) -> Result<Tensor> {
        let f = self.t_embed.timestep_features(ts, &self.device)?;
        if self.trace.on() {
            self.trace.put("t_freq", &f);
        }
        let e = self.t_embed.embed_features(&f, self.dtype)?;
        if self.trace.on() {
            self.trace.put("t_emb", &e);
        }
        Ok(e)
    }

    /// Velocity for `latent (B, N, latent_dim)` (normalised space) given time embeddings
    /// `t_emb` of shape `(B, H)` or `(1, H)` (see [`Self::time_embeddings`]).
    pub fn predict_flow(&self, latent: &Tensor, t_emb: &Tensor, c: &Conditions) -> Result<Tensor> {
        let (b, n, ld) = latent.dims3()?;
        if ld != self.cfg.latent_dim {
            return Err(Error::input(format!(
                "latent has {ld} channels, the network {}",
                self.cfg.latent_dim
            )));
        }
        if n != c.latent_len() || b != c.batch() {
            return Err(Error::input(format!(
                "latent (B={b}, N={n}) does not match the conditions (B={}, N={})",
                c.batch(),
                c.latent_len()
            )));
        }
        let tr = &self.trace;
        let latent = self
            .audio_input_proj
            .forward(&latent.to_dtype(self.dtype)?)?;
        if tr.on() {
            tr.put("latent_proj", &latent);
            tr.put("global_cond_mlp_out", &c.global_cond);
        }
        let h = self.cfg.hidden_dim;
        let global_c = c.global_cond.broadcast_add(t_emb)?.reshape((b, 1, h))?;
        if tr.on() {
            tr.put("global_c", &global_c);
            tr.put("extended_c", &global_c.broadcast_add(&c.sync_f()?)?);
        }
        // adaLN inputs, shared by all blocks of the step; the per-token one at the distinct
        // sync rows only (see `AdaInput`)
        let mut extended_c = if c.sync_u.dim(1)? < n {
            AdaInput::new(
                &global_c.broadcast_add(&c.sync_u)?,
                Some(c.sync_idx.clone()),
            )?
        } else {
            // as many sync rows as latent rows, or more (very short clips): gather first
            AdaInput::new(&global_c.broadcast_add(&c.sync_f()?)?, None)?
        };
        let mut global_c = AdaInput::new(&global_c, None)?;
        if let Some((g, e)) = &self.fused_ada {
            // generic path: every block's modulation in one matmul per input
            global_c = global_c.with_fused(g)?;
            extended_c = extended_c.with_fused(e)?;
        }
        let mut latent = latent;
        let mut clip_f = c.clip_f.clone();
        let mut text_f = c.text_f.clone();
        for (i, block) in self.joint_blocks.iter().enumerate() {
            let name = format!("joint_blocks.{i}");
            (latent, clip_f, text_f) = block.forward(
                &latent,
                &clip_f,
                &text_f,
                &global_c,
                &extended_c,
                &c.latent_rot,
                &c.clip_rot,
                tr,
                &name,
            )?;
            if tr.on() {
                tr.put(&format!("{name}.latent"), &latent);
                tr.put(&format!("{name}.clip_f"), &clip_f);
                tr.put(&format!("{name}.text_f"), &text_f);
            }
        }
        for (i, block) in self.fused_blocks.iter().enumerate() {
            let name = format!("fused_blocks.{i}");
            latent = block.forward(&latent, &extended_c, Some(&c.latent_rot), tr, &name)?;
            if tr.on() {
                tr.put(&format!("{name}.latent"), &latent);
            }
        }
        // the official code uses global_c here (not extended_c; upstream issue #55)
        Ok(self.final_layer.forward(&latent, &global_c)?)
    }

    /// Official `forward`: conditions + flow at times `t (B,)`.
    pub fn forward(
        &self,
        latent: &Tensor,
        clip_f: &Tensor,
        sync_f: &Tensor,
        text_f: &Tensor,
        t: &[f32],
    ) -> Result<Tensor> {
        let c = self.preprocess_conditions(clip_f, sync_f, text_f, latent.dim(1)?)?;
        let t_emb = self.time_embeddings(t)?;
        self.predict_flow(latent, &t_emb, &c)
    }
}

/// Compare the configuration with the file's tensor shapes and name the variant mismatch.
pub fn check_variant(wf: &WeightFile, cfg: &NetConfig) -> Result<()> {
    let found = infer_config(wf);
    let Some(found) = found else {
        return Ok(()); // let the strict loader name the missing tensors
    };
    let same = found.hidden_dim == cfg.hidden_dim
        && found.depth == cfg.depth
        && found.fused_depth == cfg.fused_depth
        && found.latent_dim == cfg.latent_dim
        && found.v2 == cfg.v2;
    if same {
        return Ok(());
    }
    let name = crate::config::Variant::ALL
        .into_iter()
        .find(|v| {
            let c = v.net_config();
            c.hidden_dim == found.hidden_dim
                && c.depth == found.depth
                && c.fused_depth == found.fused_depth
                && c.latent_dim == found.latent_dim
                && c.v2 == found.v2
        })
        .map(|v| format!(" (looks like {v})"))
        .unwrap_or_default();
    Err(Error::WrongModel {
        path: wf.path().to_owned(),
        reason: format!(
            "holds a network with hidden {} / depth {} / fused {} / latent {} / v2 {}{name}, \
             but the configuration expects hidden {} / depth {} / fused {} / latent {} / v2 {} \
             (widths read from tensor audio_input_proj.0.weight {:?}, depths from the block \
             indices)",
            found.hidden_dim,
            found.depth,
            found.fused_depth,
            found.latent_dim,
            found.v2,
            cfg.hidden_dim,
            cfg.depth,
            cfg.fused_depth,
            cfg.latent_dim,
            cfg.v2,
            wf.shape("audio_input_proj.0.weight").unwrap_or_default()
        ),
    })
}

/// Read the architecture off a state dict: hidden and latent widths from the audio input
/// projection, depths from the block indices, v2 from the projection layout.
pub fn infer_config(wf: &WeightFile) -> Option<NetConfig> {
    let w = wf.shape("audio_input_proj.0.weight")?;
    let (hidden, latent) = (w[0], w[1]);
    let count = |prefix: &str| -> usize {
        wf.keys()
            .iter()
            .filter_map(|k| {
                k.strip_prefix(prefix)?
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .max()
            .map_or(0, |m| m + 1)
    };
    let joint = count("joint_blocks.");
    let fused = count("fused_blocks.");
    let v2 = wf.contains("clip_input_proj.2.w1.weight");
    let head_dim = 64;
    let mut cfg = NetConfig {
        latent_dim: latent,
        clip_dim: wf.shape("clip_input_proj.0.weight").map_or(1024, |s| s[1]),
        sync_dim: wf.shape("sync_input_proj.0.weight").map_or(768, |s| s[1]),
        text_dim: wf.shape("text_input_proj.0.weight").map_or(1024, |s| s[1]),
        hidden_dim: hidden,
        depth: joint + fused,
        fused_depth: fused,
        num_heads: (hidden / head_dim).max(1),
        mlp_ratio: 4.0,
        text_seq_len: wf.shape("empty_string_feat").map_or(77, |s| s[0]),
        v2,
    };
    if hidden % head_dim != 0 {
        cfg.num_heads = 1;
    }
    Some(cfg)
}

/// A random state dict for `cfg` under the official key names (benchmarks, test models).
/// `latent_std` is made positive; everything else follows [`crate::weights::random`].
pub fn random_weights(cfg: &NetConfig, seed: u64) -> Result<HashMap<String, Tensor>> {
    let mut sd =
        crate::weights::random::random_state_dict(seed, |vb| MmAudioNet::new(vb, cfg).map(|_| ()))?;
    if let Some(s) = sd.get_mut("latent_std") {
        *s = ((s.abs()? * 10.0)? + 0.5)?;
    }
    Ok(sd)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// candle sums bf16 in bf16: over many tokens the mean drifts (here it stalls at 256 of
    /// 1024); the conditions' means accumulate in f32 as PyTorch's do.
    #[test]
    fn token_means_accumulate_in_f32() -> candle_core::Result<()> {
        let x = Tensor::ones((1, 1024, 4), DType::BF16, &Device::Cpu)?;
        let m = mean_f32(&x, 1)?;
        assert_eq!(m.dtype(), DType::BF16);
        let v: Vec<f32> = m.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        assert!(v.iter().all(|&v| v == 1.0), "{v:?}");
        let plain: Vec<f32> = x.mean(1)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        assert!(
            plain.iter().all(|&v| (v - 1.0).abs() > 0.1),
            "candle's bf16 mean was expected to drift: {plain:?}"
        );
        Ok(())
    }
}
