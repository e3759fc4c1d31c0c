"""`mmaudio_e2e`: the official generation chain of `demo.py`, end to end, with small random
weights of every component.

Per case: frames (uint8 RGB + times) go through the official `eval_utils.load_video` (its
`av_utils.read_frames` picks the 8 fps and 25 fps frames; PyAV's container is replaced by an
in-memory one that yields the given frames with the given times), the CLIP and Synchformer
features (`FeaturesUtils.encode_video_with_clip` / `_with_sync`), the prompt and the negative
prompt through the tokenizer and the patched CLIP text tower (`FeaturesUtils.encode_text`),
then `eval_utils.generate` exactly as `demo.py` calls it: `preprocess_conditions`, the
Euler/CFG integration (`FlowMatching.to_data` over `MMAudio.ode_wrapper`) from the recorded
x0 (drawn inside `generate` from `torch.Generator().manual_seed(seed)`), `unnormalize`, the VAE
decoder and the vocoder. `mask_away_clip` and text-only follow `demo.py` too.

Every call is observed by wrapping the official methods on the instances (nothing is
re-implemented). The same chain is run again in float32 (determinism) and in float64 (with
the float32 x0 cast up) for the tolerances: 10x the observed fp32-vs-fp64 error, floor 1e-6.
"""

import contextlib
import copy
import dataclasses
import types
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from _common import (CLIP_INIT_RULES, NET_RECIPE, VAE_RECIPE, VOCODER_RECIPE, build_bigvgan_v1,
                     build_bigvgan_v2, build_clip, build_mmaudio, build_synchformer, build_vae,
                     contiguous_f32, stamp, tolerances, write_case)
from safetensors.torch import save_file

CLIP_CFG = {
    'embed_dim': 32,
    'quick_gelu': True,
    'vision_cfg': {'image_size': 378, 'layers': 1, 'width': 32, 'head_width': 16, 'patch_size': 14},
    'text_cfg': {'context_length': 77, 'vocab_size': 49408, 'width': 8, 'heads': 2, 'layers': 1},
}
SYNC_OVERRIDES = {'VIT.EMBED_DIM': 32, 'VIT.DEPTH': 1, 'VIT.NUM_HEADS': 2}
SYNC_DIM = 32

MODES = {
    '16k': {
        'sampling_rate': 16000,
        'spectrogram_frame_rate': 256,
        'net': {'latent_dim': 20, 'hidden_dim': 32, 'depth': 3, 'fused_depth': 1, 'num_heads': 1,
                'mlp_ratio': 4.0, 'v2': False},
        'vae': {'data_dim': 80, 'embed_dim': 20, 'hidden_dim': 8},
        'vocoder_kind': 'bigvgan',
        'vocoder': {'resblock': '1', 'num_mels': 80, 'upsample_rates': [16, 16],
                    'upsample_kernel_sizes': [32, 32], 'upsample_initial_channel': 32,
                    'resblock_kernel_sizes': [3, 7, 11],
                    'resblock_dilation_sizes': [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
                    'activation': 'snakebeta', 'snake_logscale': True},
        'seed': 7000,
    },
    '44k': {
        'sampling_rate': 44100,
        'spectrogram_frame_rate': 512,
        'net': {'latent_dim': 40, 'hidden_dim': 32, 'depth': 3, 'fused_depth': 1, 'num_heads': 1,
                'mlp_ratio': 4.0, 'v2': True},
        'vae': {'data_dim': 128, 'embed_dim': 40, 'hidden_dim': 8},
        'vocoder_kind': 'bigvgan_v2',
        'vocoder': {'resblock': '1', 'num_mels': 128, 'upsample_rates': [16, 32],
                    'upsample_kernel_sizes': [32, 64], 'upsample_initial_channel': 32,
                    'resblock_kernel_sizes': [3, 7, 11],
                    'resblock_dilation_sizes': [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
                    'use_tanh_at_final': False, 'use_bias_at_final': False,
                    'activation': 'snakebeta', 'snake_logscale': True, 'sampling_rate': 44100,
                    'hop_size': 512},
        'seed': 7100,
    },
}

# name, mode, video fps (None: text-only), duration, prompt, negative prompt, mask_away_clip,
# num_steps, cfg_strength, seed. Frame rates and durations are such that every 8 / 25 fps slot
# finds its frame before the window's end (as the element's windows hold frames t < duration).
CASES = [
    ('e2e_16k_av', '16k', 30, 1.5, 'a dog barks twice', '', False, 5, 4.5, 42),
    ('e2e_16k_mask_neg', '16k', 50, 1.0, 'rain on a tin roof', 'music, voices', True, 4, 4.5, 7),
    ('e2e_16k_t2a', '16k', None, 1.2, 'thunder rolling', '', False, 4, 3.0, 3),
    ('e2e_44k_av_neg', '44k', 30, 1.5, 'waves crashing on rocks', 'wind noise', False, 5, 4.5, 11),
    ('e2e_44k_mask', '44k', 24, 1.75, 'footsteps on gravel', '', True, 4, 4.5, 5),
    ('e2e_44k_t2a_neg', '44k', None, 1.0, 'a bell rings', 'low hum', False, 4, 4.5, 1),
]

FEATURE_SEED = 7200
FRAME_W, FRAME_H = 40, 24


def make_frames(fps: int, duration: float, seed: int):
    """Frames with t <= duration (what read_frames may look at): a gradient, a moving square
    and noise, so that the resize, crop and every feature path see structure."""
    rs = np.random.RandomState(seed)
    n = int(np.floor(duration * fps + 1e-9)) + 1
    yy, xx = np.mgrid[0:FRAME_H, 0:FRAME_W]
    frames = []
    for k in range(n):
        img = np.zeros((FRAME_H, FRAME_W, 3), np.float64)
        img[..., 0] = 255 * xx / FRAME_W
        img[..., 1] = 255 * yy / FRAME_H
        img[..., 2] = 128 + 100 * np.sin(0.3 * k + xx / 7.0)
        x0 = (3 + 2 * k) % (FRAME_W - 8)
        img[8:16, x0:x0 + 8, :] = [250, 30, 200]
        img += rs.normal(0, 12, img.shape)
        frames.append(np.clip(np.round(img), 0, 255).astype(np.uint8))
    times = [k / fps for k in range(n)]
    return frames, times


class _FakeFrame:

    def __init__(self, arr, t):
        self._arr, self.time = arr, t

    def to_ndarray(self, format=None):
        assert format == 'rgb24'
        return self._arr


class _FakeContainer:
    """What `read_frames` uses of a PyAV container."""

    def __init__(self, frames, times, fps):
        self._frames = [_FakeFrame(a, t) for a, t in zip(frames, times)]
        stream = types.SimpleNamespace(guessed_rate=Fraction(fps), thread_type=None)
        self.streams = types.SimpleNamespace(video=[stream])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def demux(self, stream):
        for f in self._frames:
            yield types.SimpleNamespace(decode=lambda f=f: [f])


def load_video_from_frames(frames, times, fps, duration):
    """The official `load_video` on in-memory frames; also returns which input frame each
    8 fps / 25 fps slot took."""
    import mmaudio.data.av_utils as avu
    import mmaudio.eval_utils as eu
    saved = avu.av
    avu.av = types.SimpleNamespace(open=lambda path: _FakeContainer(frames, times, fps))
    picked = {}
    saved_read = eu.read_frames

    def read_frames(*a, **kw):
        out, all_frames, rate = saved_read(*a, **kw)
        # out[i] is np.stack(list): recover the input index of each slot
        for name, arr in zip(('clip', 'sync'), out):
            idx = []
            for row in arr:
                match = [i for i, f in enumerate(frames) if np.array_equal(f, row)]
                idx.append(match[0])
            picked[name] = idx
        return out, all_frames, rate

    eu.read_frames = read_frames
    try:
        info = eu.load_video(Path('in-memory.mp4'), duration)
    finally:
        avu.av = saved
        eu.read_frames = saved_read
    return info, picked


def make_feature_utils(clip, sync, vae, vocoder, mode):
    """A FeaturesUtils holding the given modules, as its constructor would (without loading
    checkpoints from disk or the hub)."""
    import open_clip
    from torchvision.transforms import Normalize
    from mmaudio.ext.autoencoder.autoencoder import AutoEncoderModule
    from mmaudio.ext.bigvgan.bigvgan import BigVGAN as BigVGANv1Wrapper
    from mmaudio.model.utils.features_utils import FeaturesUtils
    fu = FeaturesUtils.__new__(FeaturesUtils)
    torch.nn.Module.__init__(fu)
    fu.clip_model = clip
    fu.clip_preprocess = Normalize(mean=[0.48145466, 0.4578275, 0.40821073],
                                   std=[0.26862954, 0.26130258, 0.27577711])
    fu.synchformer = sync
    fu.tokenizer = open_clip.get_tokenizer('ViT-H-14-378-quickgelu')
    tod = AutoEncoderModule.__new__(AutoEncoderModule)
    torch.nn.Module.__init__(tod)
    tod.vae = vae
    if mode == '16k':
        wrapper = BigVGANv1Wrapper.__new__(BigVGANv1Wrapper)
        torch.nn.Module.__init__(wrapper)
        wrapper.vocoder = vocoder
        wrapper.weight_norm_removed = True
        tod.vocoder = wrapper
    else:
        tod.vocoder = vocoder
    fu.tod = tod
    return fu.eval()


@contextlib.contextmanager
def float64_patches(x0_f32):
    """For the float64 comparison run (x0_f32 given): generate() starts from the float32
    run's noise, and the VAE's pixel norm (`edm2_utils.normalize`, which asks
    `vector_norm(..., dtype=float32)`) computes in the input's dtype."""
    if x0_f32 is None:
        yield
        return
    saved_randn, saved_norm = torch.randn, torch.linalg.vector_norm

    def randn(*a, dtype=None, generator=None, device=None, **kw):
        return x0_f32.to(dtype)

    def vector_norm(x, *a, dtype=None, **kw):
        if dtype == torch.float32 and x.dtype == torch.float64:
            dtype = torch.float64
        return saved_norm(x, *a, dtype=dtype, **kw)

    torch.randn, torch.linalg.vector_norm = randn, vector_norm
    try:
        yield
    finally:
        torch.randn, torch.linalg.vector_norm = saved_randn, saved_norm


def run_chain(case, comps, dtype, x0_f32=None):
    """One run of the demo.py chain; returns the recorded tensors (in `dtype`)."""
    import mmaudio.eval_utils as eu
    from mmaudio.model.flow_matching import FlowMatching
    from mmaudio.model.sequence_config import CONFIG_16K, CONFIG_44K
    name, mode, fps, duration, prompt, neg, mask, steps, cfg, seed = case
    fu = make_feature_utils(*[copy.deepcopy(comps[k]) for k in ('clip', 'sync')],
                            copy.deepcopy(comps[mode]['vae']), copy.deepcopy(comps[mode]['vocoder']),
                            mode).to(dtype)
    net = copy.deepcopy(comps[mode]['net']).to(dtype).eval()
    rec = {}

    if fps is not None:
        info, picked = load_video_from_frames(comps['frames'][name][0], comps['frames'][name][1],
                                              fps, duration)
        rec['clip_src_index'] = torch.tensor(picked['clip'][:info.clip_frames.shape[0]])
        rec['sync_src_index'] = torch.tensor(picked['sync'][:info.sync_frames.shape[0]])
        # a window holds the frames with t < duration: the official picks must lie among them
        # (the frame rates and durations of CASES are chosen so; 25 fps ties at the window end
        # are covered by the frame_preprocess kind)
        times = comps['frames'][name][1]
        for k in ('clip_src_index', 'sync_src_index'):
            late = [i for i in rec[k].tolist() if times[i] >= duration]
            assert not late, f'{name}: {k} picks frames at t >= duration: {late}'
        assert info.duration_sec == duration, (info.duration_sec, duration)
        clip_frames = None if mask else info.clip_frames.unsqueeze(0)
        sync_frames = info.sync_frames.unsqueeze(0)
    else:
        clip_frames = sync_frames = None

    seq_cfg = dataclasses.replace(CONFIG_16K if mode == '16k' else CONFIG_44K)
    seq_cfg.duration = duration
    net.update_seq_lengths(seq_cfg.latent_seq_len, seq_cfg.clip_seq_len, seq_cfg.sync_seq_len)

    def wrap(obj, attr, fn):
        orig = getattr(obj, attr)
        setattr(obj, attr, lambda *a, **kw: fn(orig, *a, **kw))

    def enc_clip(orig, x, **kw):
        out = orig(x, **kw)
        rec['clip_features'] = out.clone()
        return out

    def enc_sync(orig, x, **kw):
        out = orig(x, **kw)
        rec['sync_features'] = out.clone()
        return out

    def enc_text(orig, text):
        out = orig(text)
        key = 'text_features' if 'text_features' not in rec else 'negative_text_features'
        ids = fu.tokenizer(text)
        rec['token_ids' if key == 'text_features' else 'negative_token_ids'] = ids.clone()
        rec[key] = out.clone()
        return out

    steps_x, steps_t, steps_v = [], [], []

    def ode(orig, t, x, *a, **kw):
        out = orig(t, x, *a, **kw)
        steps_t.append(float(t))
        steps_x.append(x.clone())
        steps_v.append(out.clone())
        return out

    def to_data(orig, fn, x0):
        rec['x0'] = x0.clone()
        out = orig(fn, x0)
        rec['x1_normalized'] = out.clone()
        return out

    def unnorm(orig, x):
        out = orig(x)
        rec['x1_unnormalized'] = out.clone()
        return out

    def decode(orig, z):
        out = orig(z)
        rec['mel'] = out.clone()
        return out

    def vocode(orig, mel):
        out = orig(mel)
        rec['wav'] = out.clone().reshape(-1)
        return out

    wrap(fu, 'encode_video_with_clip', enc_clip)
    wrap(fu, 'encode_video_with_sync', enc_sync)
    wrap(fu, 'encode_text', enc_text)
    wrap(net, 'ode_wrapper', ode)
    wrap(net, 'unnormalize', unnorm)
    wrap(fu, 'decode', decode)
    wrap(fu, 'vocode', vocode)
    fm = FlowMatching(min_sigma=0, inference_mode='euler', num_steps=steps)
    wrap(fm, 'to_data', to_data)

    rng = torch.Generator().manual_seed(seed)
    with float64_patches(x0_f32), torch.inference_mode():
        eu.generate(clip_frames, sync_frames, [prompt], negative_text=[neg], feature_utils=fu,
                    net=net, fm=fm, rng=rng, cfg_strength=cfg)
    rec['x_steps'] = torch.stack(steps_x + [rec['x1_normalized']])
    rec['t_grid'] = torch.tensor(steps_t, dtype=torch.float32)
    rec['v_cfg'] = torch.stack(steps_v)
    return rec


def round_to_f16(module):
    """Make every parameter exactly representable in float16 (the e2e weights are stored
    as float16 to keep the committed fixtures small; buffers stay float32)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.half().float())
    return module


def state_for_storage(module, state=None):
    """Parameters as float16 (exact, see round_to_f16), buffers as float32."""
    params = {k for k, _ in module.named_parameters()}
    out = {}
    for k, v in (state if state is not None else module.state_dict()).items():
        v = v.detach().cpu().contiguous().clone()
        if k in params:
            assert torch.equal(v.half().float(), v.float()), k
            v = v.half()
        elif v.is_floating_point():
            v = v.float()
        out[k] = v
    return out


def build_components(ref):
    comps = {}
    clip = round_to_f16(build_clip(CLIP_CFG, FEATURE_SEED))
    sync, sync_cfg = build_synchformer(SYNC_OVERRIDES, FEATURE_SEED + 1)
    round_to_f16(sync)
    comps.update(clip=clip, sync=sync, sync_cfg=sync_cfg)
    for mode, m in MODES.items():
        seq = 8.0
        sr, hop = m['sampling_rate'], m['spectrogram_frame_rate']
        args = dict(m['net'], clip_dim=CLIP_CFG['embed_dim'], sync_dim=SYNC_DIM,
                    text_dim=CLIP_CFG['text_cfg']['width'],
                    latent_seq_len=int(np.ceil(seq * sr / hop / 2)), clip_seq_len=64,
                    sync_seq_len=192, text_seq_len=77)
        net = round_to_f16(build_mmaudio(args, m['seed']))
        # the raw (checkpoint) VAE weights are the f16-exact ones; the official
        # remove_weight_norm normalises them, as a port does at load time
        vae_raw_module = build_vae(m['vae'], m['seed'] + 10, remove=False)
        round_to_f16(vae_raw_module)
        vae_raw = state_for_storage(vae_raw_module)
        vae_raw_module.remove_weight_norm()
        if m['vocoder_kind'] == 'bigvgan':
            voc, _ = build_bigvgan_v1(m['vocoder'], m['seed'] + 20)
        else:
            voc, _ = build_bigvgan_v2(m['vocoder'], m['seed'] + 20)
        round_to_f16(voc)
        comps[mode] = dict(net=net, net_args=args, vae=vae_raw_module.eval(), vae_raw=vae_raw,
                           vocoder=voc)
    comps['frames'] = {}
    for i, c in enumerate(CASES):
        if c[2] is not None:
            comps['frames'][c[0]] = make_frames(c[2], c[3], 9000 + i)
    return comps


def generate(ref, out: Path, only=None):
    out.mkdir(parents=True, exist_ok=True)
    comps = build_components(ref)
    wdirs = {'features': out / 'weights_features', '16k': out / 'weights_16k',
             '44k': out / 'weights_44k'}
    for d in wdirs.values():
        d.mkdir(parents=True, exist_ok=True)
    save_file(state_for_storage(comps['clip']), str(wdirs['features'] / 'clip.safetensors'))
    save_file(state_for_storage(comps['sync']), str(wdirs['features'] / 'synchformer.safetensors'))
    for mode in MODES:
        c = comps[mode]
        save_file(state_for_storage(c['net']), str(wdirs[mode] / 'net.safetensors'))
        save_file(c['vae_raw'], str(wdirs[mode] / 'vae.safetensors'))
        save_file(state_for_storage(c['vocoder']), str(wdirs[mode] / 'vocoder.safetensors'))

    for case in CASES:
        name, mode, fps, duration, prompt, neg, mask, steps, cfg, seed = case
        if only and not any(o in name for o in only):
            continue
        print(f'e2e case {name}', flush=True)
        torch.manual_seed(0)
        f32 = run_chain(case, comps, torch.float32)
        again = run_chain(case, comps, torch.float32)
        f64 = run_chain(case, comps, torch.float64, x0_f32=f32['x0'])
        x0 = f32.pop('x0')
        for r in (again, f64):
            r.pop('x0')
        per, observed = tolerances(f32, f64, again)
        m = MODES[mode]
        inputs = {'x0': x0}
        frames_note = None
        if fps is not None:
            frames, times = comps['frames'][name]
            inputs['frames_u8'] = torch.from_numpy(np.stack(frames))
            inputs['frame_times'] = torch.tensor(times, dtype=torch.float64)
            frames_note = (
                f'frames_u8 [T, {FRAME_H}, {FRAME_W}, 3] RGB24 at {fps} fps, frame_times in '
                'seconds (exact k/fps as float64); the official read_frames saw all of them '
                '(t <= duration); a port feeds those with t < duration as the window\'s frames')
        meta = {
            'kind': 'mmaudio_e2e',
            'description': 'The official demo.py generation chain end to end with small random '
                           'weights of every component: frames -> load_video (8/25 fps picking, '
                           'transforms) -> CLIP / Synchformer features, prompt and negative '
                           'prompt through CLIP text -> eval_utils.generate (preprocess_conditions, '
                           'Euler/CFG from x0, unnormalize, VAE decode, vocoder).',
            'official_calls': [
                'mmaudio.eval_utils.load_video(path, duration) with av.open replaced by an in-memory '
                'container of the input frames',
                'mmaudio.eval_utils.generate(clip_frames|None, sync_frames|None, [prompt], '
                'negative_text=[negative_prompt], feature_utils, net, fm, rng, cfg_strength) as '
                'demo.py calls it (clip_frames None when mask_away_clip; both None text-only)',
            ],
            'mode': mode,
            'sampling_rate': m['sampling_rate'],
            'duration_sec': duration,
            'video_fps': fps,
            'text_only': fps is None,
            'prompt': prompt,
            'negative_prompt': neg,
            'mask_away_clip': mask,
            'num_steps': steps,
            'cfg_strength': cfg,
            'rng_seed': seed,
            'net_constructor_args': comps[mode]['net_args'],
            'seq_lengths_note': 'the network is built at 8 s and update_seq_lengths() is called '
                                'for the case duration, as demo.py does',
            'vae_constructor_args': m['vae'],
            'vocoder_kind': m['vocoder_kind'],
            'vocoder_hparams': m['vocoder'],
            'open_clip_model_cfg': CLIP_CFG,
            'motionformer_cfg_effective': comps['sync_cfg'],
            'motionformer_overrides': SYNC_OVERRIDES,
            'weights': {
                'net': f'../weights_{mode}/net.safetensors',
                'vae': f'../weights_{mode}/vae.safetensors',
                'vocoder': f'../weights_{mode}/vocoder.safetensors',
                'clip': '../weights_features/clip.safetensors',
                'synchformer': '../weights_features/synchformer.safetensors',
            },
            'weights_note': 'official state-dict names; parameters are stored as float16 (every '
                            'value is exactly float16-representable: the generator rounds the '
                            'parameters before running the chain, which runs in float32), '
                            'buffers as float32; vae.safetensors is the RAW checkpoint form '
                            '(before remove_weight_norm), vocoder.safetensors the plain weights '
                            'after remove_weight_norm, clip.safetensors the whole open_clip CLIP, '
                            'synchformer.safetensors Synchformer().state_dict()',
            'weight_init_recipe': {'net': NET_RECIPE, 'vae': VAE_RECIPE, 'vocoder': VOCODER_RECIPE,
                                   'clip_and_synchformer': CLIP_INIT_RULES},
            'inputs_note': 'x0 (1, N, latent_dim): the noise generate() drew from '
                           'torch.Generator().manual_seed(rng_seed) (a port injects it). '
                           + (frames_note or 'text-only: no frames'),
            'outputs_note': {
                'clip_src_index / sync_src_index': 'input frame index taken by each 8 fps / 25 '
                                                   'fps slot (exact)',
                'token_ids / negative_token_ids': 'tokenizer output (exact)',
                'clip_features / sync_features': 'FeaturesUtils encoders (absent when masked / '
                                                 'text-only)',
                'text_features / negative_text_features': 'CLIP text (patched encode_text)',
                'x_steps': '(K+1, 1, N, C) Euler states, x_steps[0] = x0, last = x1_normalized',
                't_grid': '(K,) times the network was called at',
                'v_cfg': '(K, 1, N, C) ode_wrapper outputs (CFG-combined velocity)',
                'x1_unnormalized': 'after net.unnormalize',
                'mel': 'VAE decoder output (1, n_mels, 2N)',
                'wav': 'vocoder output, flattened (2N*hop samples); a port returns the first '
                       'round(duration*sr)',
            },
            'suggested_tolerance': {'default': {'atol': max(v['atol'] for v in per.values()),
                                                'rtol': 1e-4},
                                    'per_tensor': per},
            'tolerance_rule': '10x the observed max |fp32 - fp64| of the same official chain, '
                              'rounded up to 1/2/5*10^k, floor 1e-6; rtol 1e-4',
            'observed': observed,
        }
        meta.update(stamp(ref, 'tools/parity/make_fixtures.py (e2e.py)'))
        write_case(out, name, meta, inputs, f32, None)
