"""Shared machinery of the fixture generator: importing the official code, weight
re-randomisation, tolerances, case writing. Contains no model code: every module comes from
the official checkout given with --ref (and from open_clip / torch)."""

import json
import math
import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

REFERENCE_REPO = 'https://github.com/hkchengrex/MMAudio'
RTOL = 1e-4
ATOL_FLOOR = 1e-6


class Ref:
    """The official checkout, importable as `mmaudio`."""

    def __init__(self, path: Path, commit: str):
        self.path = Path(path).resolve()
        self.commit = commit
        if not (self.path / 'mmaudio' / 'eval_utils.py').is_file():
            raise SystemExit(f'{self.path} is not an MMAudio checkout (no mmaudio/eval_utils.py)')
        sys.path.insert(0, str(self.path))


def versions() -> dict:
    import open_clip
    import torchvision
    return {
        'torch': torch.__version__,
        'torchvision': torchvision.__version__,
        'open_clip_torch': open_clip.__version__,
        'numpy': np.__version__,
        'python': platform.python_version(),
        'threads': torch.get_num_threads(),
    }


def nice_atol(err: float) -> float:
    """10x the observed error rounded up to 1/2/5*10^k, floor 1e-6 (parity README)."""
    x = max(10.0 * float(err), ATOL_FLOOR)
    e = math.floor(math.log10(x))
    for m in (1, 2, 5, 10):
        v = m * 10.0**e
        if v >= x * (1 - 1e-12):
            return float(f'{v:.0e}')
    return float(f'{10.0 ** (e + 1):.0e}')


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def tolerances(f32: dict, f64: dict, again: dict) -> tuple[dict, dict]:
    """Per-tensor tolerance and the observed numbers, for every float tensor of `f32`."""
    per, observed = {}, {}
    for k, v in f32.items():
        if not v.is_floating_point():
            continue
        err = max_abs_diff(v, f64[k])
        observed[k] = {
            'determinism_max_abs_diff': max_abs_diff(v, again[k]),
            'fp32_vs_fp64_max_abs_diff': err,
            'max_abs_value': float(v.double().abs().max()) if v.numel() else 0.0,
        }
        per[k] = {'atol': nice_atol(err), 'rtol': RTOL}
    return per, observed


def contiguous_f32(d: dict) -> dict:
    """Contiguous CPU copies; half-precision floats become float32. float64 tensors stay
    float64: only deliberate ones exist (frame times), the model runs that are stored are the
    float32 ones."""
    out = {}
    for k, v in d.items():
        v = v.detach().cpu()
        if v.dtype in (torch.float16, torch.bfloat16):
            v = v.float()
        out[k] = v.contiguous().clone()
    return out


def write_case(out: Path, name: str, meta: dict, inputs: dict, outputs: dict, weights: dict | None,
               extra_files: dict | None = None):
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    if inputs:
        save_file(contiguous_f32(inputs), str(d / 'inputs.safetensors'))
    save_file(contiguous_f32(outputs), str(d / 'outputs.safetensors'))
    if weights is not None:
        save_file(contiguous_f32(weights), str(d / 'weights.safetensors'))
    for fname, tensors in (extra_files or {}).items():
        (d / fname).parent.mkdir(parents=True, exist_ok=True)
        save_file(contiguous_f32(tensors), str(d / fname))
    meta = dict(meta)
    meta['case'] = name
    with open(d / 'case.json', 'w') as f:
        json.dump(meta, f, indent=1, sort_keys=False)
        f.write('\n')
    size = sum(p.stat().st_size for p in d.rglob('*') if p.is_file())
    print(f'  wrote {d} ({size / 1e6:.2f} MB)', flush=True)


def stamp(ref: Ref, generator: str) -> dict:
    return {
        'reference_repo': REFERENCE_REPO,
        'reference_commit': ref.commit,
        'generator_script': generator,
        'versions': versions(),
    }


# ---------------------------------------------------------------------------------------
# weight re-randomisation (the official initialisers zero the adaLN / output layers, or
# leave embeddings at zero, which would make a parity test vacuous)


def fan_in(w: torch.Tensor) -> int:
    return int(w[0].numel()) if w.dim() > 1 else int(w.numel())


def randomize_transformer(module: torch.nn.Module, seed: int, skip=()):
    """CLIP / Synchformer recipe: LayerNorm weights 1+0.1N, biases 0.05N, embeddings
    (positional/class/token/temporal, CLS tokens) 0.3N, matrices N/sqrt(fan_in) (`proj` and
    `text_projection` are used as x @ W: fan_in = rows)."""
    g = torch.Generator().manual_seed(seed)
    ln = set()
    for mn, m in module.named_modules():
        if isinstance(m, torch.nn.LayerNorm):
            for pn, _ in m.named_parameters(recurse=False):
                ln.add(f'{mn}.{pn}' if mn else pn)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name in skip or name.endswith('logit_scale') or name.endswith('logit_bias'):
                continue
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            leaf = name.rsplit('.', 1)[-1]
            if name in ln:
                v = 1 + 0.1 * r if leaf == 'weight' else 0.05 * r
            elif any(s in name for s in ('positional_embedding', 'class_embedding', 'token_embedding',
                                         'pos_embed', 'temp_embed', 'cls_token')):
                v = 0.3 * r
            elif p.dim() == 1:
                v = 0.05 * r
            elif leaf in ('proj', 'text_projection'):
                v = r / math.sqrt(p.shape[0])
            else:
                v = r / math.sqrt(fan_in(p))
            p.copy_(v)


def randomize_mmaudio(net: torch.nn.Module, seed: int):
    """Network recipe (see `NET_RECIPE`)."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name in ('latent_mean', 'latent_std', 'empty_string_feat'):
                continue
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name == 'sync_pos_emb':
                v = 0.5 * r
            elif name in ('empty_clip_feat', 'empty_sync_feat'):
                v = r
            elif ('q_norm' in name or 'k_norm' in name) and name.endswith('weight'):
                v = 1 + 0.2 * r
            elif p.dim() == 1:
                v = 0.1 * r
            elif 'adaLN_modulation' in name:
                v = r * 0.5 / math.sqrt(fan_in(p))
            else:
                v = r / math.sqrt(fan_in(p))
            p.copy_(v)


NET_RECIPE = (
    'Module built by MMAudio(**constructor_args) under torch.manual_seed(seed); latent_mean ~ '
    '0.5*N(0,1), latent_std ~ U(0.5,1.5), empty_string_feat ~ N(0,1) (in that order, from '
    'torch.Generator(seed)) are passed to the constructor. Then every other parameter is '
    'overwritten from torch.Generator(seed+1) in named_parameters() order: sync_pos_emb ~ '
    '0.5*N(0,1); empty_clip_feat, empty_sync_feat ~ N(0,1); q_norm/k_norm weights ~ 1+0.2*N(0,1); '
    '1-D params (biases) ~ 0.1*N(0,1); adaLN_modulation linears ~ N(0,1)*0.5/sqrt(fan_in); all '
    'other weights ~ N(0,1)/sqrt(fan_in) with fan_in = numel(weight[0]). (The official '
    'initialize_weights zeroes adaLN/final layers, which would make the test vacuous.)')


def build_mmaudio(args: dict, seed: int):
    from mmaudio.model.networks import MMAudio
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    ld, td = args['latent_dim'], args['text_dim']
    latent_mean = 0.5 * torch.randn(ld, generator=g)
    latent_std = torch.rand(ld, generator=g) + 0.5
    empty = torch.randn(args.get('text_seq_len', 77), td, generator=g)
    net = MMAudio(**args, latent_mean=latent_mean, latent_std=latent_std, empty_string_feat=empty)
    randomize_mmaudio(net, seed)
    return net.eval()


VAE_RECIPE = ('VAE(**constructor_args) under torch.manual_seed(seed); then every parameter '
              'overwritten from torch.Generator(seed+1) in named_parameters() order: '
              'learnable_gain ~ 0.3*N(0,1), all MPConv1D weights ~ N(0,1); then the official '
              'remove_weight_norm().')


def build_vae(args: dict, seed: int, remove: bool = True):
    """Returns (vae after remove_weight_norm, raw state dict before it); with remove=False
    only the module, before remove_weight_norm."""
    from mmaudio.ext.autoencoder.vae import VAE
    torch.manual_seed(seed)
    vae = VAE(**args)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in vae.named_parameters():
            r = torch.randn(p.shape, generator=g)
            p.copy_(0.3 * r if 'learnable_gain' in name else r)
    if not remove:
        return vae
    raw = {k: v.clone() for k, v in vae.state_dict().items()}
    vae.remove_weight_norm()
    return vae.eval(), raw


VOCODER_RECIPE = (
    'constructed under torch.manual_seed(seed); then weight-norm v ~ N(0,1), g = '
    '(1/sqrt(fan_in))*||v_slice||*(1+0.1*N(0,1)) (fan_in=in*k, or in*k/stride for '
    'ConvTranspose1d; conv_post x0.3, resblock convs2 x0.3, ups x0.7), biases ~ 0.05*N(0,1), '
    'snake alpha/beta (log-scale) ~ 0.3*N(0,1), all from torch.Generator(seed+1); anti-alias '
    'filters are the official Kaiser-sinc buffers.')


def randomize_vocoder(model: torch.nn.Module, seed: int):
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mn, m in model.named_modules():
            par = getattr(m, 'parametrizations', None)
            if par is None or 'weight' not in par:
                continue
            v = par.weight.original1
            g0 = par.weight.original0
            v.copy_(torch.randn(v.shape, generator=g))
            transposed = isinstance(m, torch.nn.ConvTranspose1d)
            if transposed:
                fi = v.shape[0] * v.shape[2] / m.stride[0]
            else:
                fi = v.shape[1] * v.shape[2]
            scale = 1.0
            if mn.startswith('conv_post'):
                scale = 0.3
            elif '.convs2.' in mn:
                scale = 0.3
            elif mn.startswith('ups.'):
                scale = 0.7
            norm = v.flatten(1).norm(dim=1).view(g0.shape)
            noise = torch.randn(g0.shape, generator=g)
            g0.copy_(scale / math.sqrt(fi) * norm * (1 + 0.1 * noise))
        for name, p in model.named_parameters():
            if 'parametrizations' in name:
                continue
            leaf = name.rsplit('.', 1)[-1]
            if leaf in ('alpha', 'beta'):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif leaf == 'bias':
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def legacy_weightnorm_state(model: torch.nn.Module) -> dict:
    """State dict with parametrized weights under the legacy `weight_g` / `weight_v` names."""
    out = {}
    for k, v in model.state_dict().items():
        k = k.replace('.parametrizations.weight.original0', '.weight_g')
        k = k.replace('.parametrizations.weight.original1', '.weight_v')
        out[k] = v.clone()
    return out


def build_bigvgan_v1(hparams: dict, seed: int):
    """MMAudio's 16 kHz BigVGAN (`mmaudio.ext.bigvgan.models.BigVGANVocoder`). Returns
    (model after remove_weight_norm, legacy weight-norm state dict)."""
    from omegaconf import OmegaConf
    from mmaudio.ext.bigvgan.models import BigVGANVocoder
    torch.manual_seed(seed)
    m = BigVGANVocoder(OmegaConf.create(hparams))
    randomize_vocoder(m, seed)
    wn = legacy_weightnorm_state(m)
    m.remove_weight_norm()
    return m.eval(), wn


def build_bigvgan_v2(hparams: dict, seed: int):
    from mmaudio.ext.bigvgan_v2.bigvgan import BigVGAN
    from mmaudio.ext.bigvgan_v2.env import AttrDict
    torch.manual_seed(seed)
    m = BigVGAN(AttrDict(dict(hparams)), use_cuda_kernel=False)
    randomize_vocoder(m, seed)
    wn = legacy_weightnorm_state(m)
    m.remove_weight_norm()
    return m.eval(), wn


CLIP_INIT_RULES = {
    'LayerNorm.weight': '1 + 0.1*N(0,1)',
    'biases': '0.05*N(0,1)',
    'embeddings (positional, class, token)': '0.3*N(0,1)',
    'matrices': 'N(0,1)/sqrt(fan_in) (proj/text_projection: fan_in = rows)',
    'logit_scale': 'left at the open_clip initial value',
}


def build_clip(model_cfg: dict, seed: int):
    """A tiny open_clip CLIP of the real config's structure, patched as FeaturesUtils does."""
    import open_clip
    from mmaudio.model.utils.features_utils import patch_clip
    torch.manual_seed(seed)
    cfg = {k: v for k, v in model_cfg.items()}
    model = open_clip.model.CLIP(**cfg)
    randomize_transformer(model, seed)
    return patch_clip(model.eval())


class _ShrunkOmegaConf:
    """Stands in for `motionformer.OmegaConf`: loads the official yaml, then applies the
    overrides (VIT.EMBED_DIM / DEPTH / NUM_HEADS); remembers the config object."""
    overrides: dict = {}
    last = None

    @classmethod
    def load(cls, path):
        from omegaconf import OmegaConf
        cfg = OmegaConf.load(path)
        for k, v in cls.overrides.items():
            OmegaConf.update(cfg, k, v)
        cls.last = cfg
        return cfg

    def __getattr__(self, name):
        from omegaconf import OmegaConf
        return getattr(OmegaConf, name)


def build_synchformer(overrides: dict, seed: int):
    """The official Synchformer with the MotionFormer config shrunk by `overrides`.
    Returns (model, effective MotionFormer config as a dict)."""
    from omegaconf import OmegaConf
    import mmaudio.ext.synchformer.motionformer as mf
    from mmaudio.ext.synchformer import Synchformer
    saved = mf.OmegaConf
    _ShrunkOmegaConf.overrides = dict(overrides)
    mf.OmegaConf = _ShrunkOmegaConf
    try:
        torch.manual_seed(seed)
        model = Synchformer()
    finally:
        mf.OmegaConf = saved
    cfg = OmegaConf.to_container(_ShrunkOmegaConf.last, resolve=True)
    randomize_transformer(model, seed)
    return model.eval(), cfg


def set_threads(n: int):
    torch.set_num_threads(n)
    os.environ.setdefault('OMP_NUM_THREADS', str(n))
