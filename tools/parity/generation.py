"""The generation-path kinds: `mmaudio_net`, `flow_sampler`, `vae_decoder`, `vae_encoder`,
`bigvgan`, `bigvgan_v2`, `mel`. Each case runs the official module (three times: float32,
float32 again for determinism, float64 for the tolerances) and records the outputs and the
intermediates through forward hooks or wrappers on the official instances."""

import copy
import math
from pathlib import Path

import torch

from _common import (NET_RECIPE, VAE_RECIPE, VOCODER_RECIPE, build_bigvgan_v1, build_bigvgan_v2,
                     build_mmaudio, build_vae, stamp, tolerances, write_case)

GEN = 'tools/parity/make_fixtures.py (generation.py)'


def seqlens(duration, sr, hop):
    from mmaudio.model.sequence_config import SequenceConfig
    s = SequenceConfig(duration=duration, sampling_rate=sr, spectrogram_frame_rate=hop)
    return {'latent_seq_len': s.latent_seq_len, 'clip_seq_len': s.clip_seq_len,
            'sync_seq_len': s.sync_seq_len}


def finish(ref, out, name, meta, inputs, runs, weights=None, extra=None, fixed=None,
           main=()):
    f32, again, f64 = runs
    per, observed = tolerances(f32, f64, again)
    for k, v in (fixed or {}).items():
        if k in per:
            per[k] = v
    default = max((per[k]['atol'] for k in main if k in per), default=1e-5)
    meta['suggested_tolerance'] = {'default': {'atol': default, 'rtol': 1e-4}, 'per_tensor': per}
    meta['observed'] = observed
    meta['outputs'] = {k: {'shape': list(v.shape), 'dtype': str(v.dtype).replace('torch.', '')}
                       for k, v in f32.items()}
    meta['inputs'] = {k: {'shape': list(v.shape), 'dtype': str(v.dtype).replace('torch.', '')}
                      for k, v in inputs.items()}
    meta.update(stamp(ref, GEN))
    write_case(out, name, meta, inputs, f32, weights, extra)


# ------------------------------------------------------------------------------ network

NETS = [
    # name, args, duration, sr, hop, batch, seed, input_seed, cfg_t, intermediates
    ('net_tiny_8s', dict(latent_dim=20, clip_dim=1024, sync_dim=768, text_dim=1024, hidden_dim=128,
                         depth=4, fused_depth=2, num_heads=2, mlp_ratio=4.0, v2=False),
     8.0, 16000, 256, 2, 1000, 1001, 0.4, True),
    ('net_tiny_v2_44k_8s', dict(latent_dim=40, clip_dim=1024, sync_dim=768, text_dim=1024,
                                hidden_dim=64, depth=3, fused_depth=1, num_heads=1, mlp_ratio=4.0,
                                v2=True),
     8.0, 44100, 512, 1, 1100, 1101, 0.9, True),
]
CFG_STRENGTH = 4.5


def net_run(net, inp, cfg_t, trace_blocks, dtype):
    net = copy.deepcopy(net).to(dtype)
    x = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inp.items()}
    rec, hooks, on = {}, [], {'v': True}

    def keep(name, fn=lambda o: o):
        def hook(m, args, out):
            if on['v']:
                rec[name] = fn(out).clone()
        return hook

    def keep_in(name, fn):
        def hook(m, args):
            if on['v']:
                rec[name] = fn(args).clone()
        return hook

    hooks.append(net.sync_input_proj.register_forward_hook(keep('sync_f_proj_before_interp')))
    hooks.append(net.audio_input_proj.register_forward_hook(keep('latent_proj')))
    hooks.append(net.global_cond_mlp.register_forward_hook(keep('global_cond_mlp_out')))
    hooks.append(net.t_embed.register_forward_hook(keep('t_emb')))
    first = net.joint_blocks[0]
    hooks.append(first.register_forward_pre_hook(keep_in('global_c', lambda a: a[3])))
    hooks.append(first.register_forward_pre_hook(keep_in('extended_c', lambda a: a[4])))
    if trace_blocks:
        hooks.append(net.sync_input_proj.register_forward_pre_hook(
            keep_in('sync_f_with_pos_emb.b0', lambda a: a[0][:1])))
        for i, b in enumerate(net.joint_blocks):
            hooks.append(b.register_forward_hook(keep(f'joint_blocks.{i}.latent', lambda o: o[0])))
            if not b.pre_only:
                hooks.append(b.register_forward_hook(keep(f'joint_blocks.{i}.clip_f', lambda o: o[1])))
                hooks.append(b.register_forward_hook(keep(f'joint_blocks.{i}.text_f', lambda o: o[2])))
        for i, b in enumerate(net.fused_blocks):
            hooks.append(b.register_forward_hook(keep(f'fused_blocks.{i}.latent')))
        lat, clp, txt = first.latent_block.attn, first.clip_block.attn, first.text_block.attn
        hooks.append(lat.q_norm.register_forward_hook(keep('joint_blocks.0.latent.q_norope')))
        for attn, stream, names in ((lat, 'latent', ('q_rope', 'k_rope', 'v')),
                                    (clp, 'clip', ('q_rope', 'k_rope')), (txt, 'text', ('q',))):
            orig = attn.pre_attention

            def pre(x_, rot, orig=orig, stream=stream, names=names):
                q, k, v = orig(x_, rot)
                if on['v']:
                    for n, t in zip(names, (q, k, v)):
                        rec[f'joint_blocks.0.{stream}.{n}'] = t.clone()
                return q, k, v
            attn.pre_attention = pre
    with torch.inference_mode():
        cond = net.preprocess_conditions(x['clip_f'], x['sync_f'], x['text_f'])
        for f in ('clip_f', 'sync_f', 'text_f', 'clip_f_c', 'text_f_c'):
            rec[f'cond.{f}'] = getattr(cond, f).clone()
        rec['flow'] = net(x['latent'], x['clip_f'], x['sync_f'], x['text_f'], x['t']).clone()
        on['v'] = False
        for h in hooks:
            h.remove()
        rec['t_freq'] = net.t_embed.timestep_embedding(x['t']).clone()
        rec['latent_rot'] = net.latent_rot.clone()
        rec['clip_rot'] = net.clip_rot.clone()
        b = x['latent'].shape[0]
        empty1 = net.get_empty_conditions(1)
        for f in ('clip_f', 'sync_f', 'text_f', 'clip_f_c', 'text_f_c'):
            rec[f'empty.{f}'] = getattr(empty1, f).clone()
        empty = net.get_empty_conditions(b)
        rec['flow_uncond'] = net.predict_flow(x['latent'], x['t'], empty).clone()
        t = torch.tensor(cfg_t, dtype=dtype)
        rec['ode_wrapper_cfg'] = net.ode_wrapper(t, x['latent'], cond, empty, CFG_STRENGTH).clone()
        rec['latent_unnormalized'] = net.unnormalize(x['latent'].clone())
        rec['latent_normalized'] = net.normalize(x['latent'].clone())
    return rec


def net_inputs(args, lens, b, input_seed):
    g = torch.Generator().manual_seed(input_seed)
    return {
        'latent': torch.randn(b, lens['latent_seq_len'], args['latent_dim'], generator=g),
        'clip_f': torch.randn(b, lens['clip_seq_len'], args['clip_dim'], generator=g),
        'sync_f': torch.randn(b, lens['sync_seq_len'], args['sync_dim'], generator=g),
        'text_f': torch.randn(b, 77, args['text_dim'], generator=g),
        't': torch.rand(b, generator=g),
    }


def net_meta(args, duration, sr, hop, b, seed, input_seed, cfg_t, lens, calls):
    return {
        'kind': 'mmaudio_net',
        'description': 'One velocity prediction of the MMAudio MM-DiT with random weights, plus '
                       'the condition-preprocessing path, the empty-condition (CFG) path and '
                       'intermediates.',
        'official_calls': calls,
        'constructor_args': args,
        'duration_sec': duration,
        'sequence_config': {'sampling_rate': sr, 'spectrogram_frame_rate': hop,
                            'duration': duration},
        'seq_lengths': lens,
        'batch_size': b,
        'cfg_t': cfg_t,
        'cfg_strength': CFG_STRENGTH,
        'seed': seed,
        'input_seed': input_seed,
        'weight_init_recipe': NET_RECIPE,
        'weights_note': 'state_dict() of the module with official key names; latent_rot/clip_rot/'
                        't_embed.freqs are non-persistent buffers and are NOT in the state dict '
                        '(recompute them; they are given in outputs for checking).',
        'rope_tolerance_note': 'latent_rot / clip_rot get a fixed atol 5e-5 (float32 tables)',
    }


NET_CALLS = [
    'mmaudio.model.networks.MMAudio(**constructor_args, latent_mean=..., latent_std=..., '
    'empty_string_feat=...)',
    'MMAudio.preprocess_conditions(clip_f, sync_f, text_f) -> cond.*',
    'MMAudio.forward(latent, clip_f, sync_f, text_f, t) -> flow (forward hooks for the '
    'intermediates)',
    'MMAudio.t_embed.timestep_embedding(t) -> t_freq',
    'JointBlock.{latent,clip,text}_block.attn.pre_attention(...) -> joint_blocks.0.* q/k/v',
    'MMAudio.get_empty_conditions(1) -> empty.*',
    'MMAudio.predict_flow(latent, t, get_empty_conditions(B)) -> flow_uncond',
    'MMAudio.ode_wrapper(cfg_t, latent, cond, empty, cfg_strength) -> ode_wrapper_cfg',
    'MMAudio.unnormalize / normalize',
]
ROT_TOL = {'latent_rot': {'atol': 5e-5, 'rtol': 1e-4}, 'clip_rot': {'atol': 5e-5, 'rtol': 1e-4}}
NET_MAIN = ('flow', 'flow_uncond', 'ode_wrapper_cfg')


def gen_nets(ref, out, only):
    built = {}
    for name, a, duration, sr, hop, b, seed, input_seed, cfg_t, trace in NETS:
        lens = seqlens(duration, sr, hop)
        args = dict(a, **lens, text_seq_len=77)
        net = build_mmaudio(args, seed)
        built[name] = (net, args)
        if only and not any(o in name for o in only):
            continue
        print(f'network case {name}', flush=True)
        inp = net_inputs(args, lens, b, input_seed)
        runs = [net_run(net, inp, cfg_t, trace, d) for d in (torch.float32, torch.float32,
                                                             torch.float64)]
        meta = net_meta(args, duration, sr, hop, b, seed, input_seed, cfg_t, lens,
                        NET_CALLS[:1] + ['(constructed directly at these seq lengths)'] +
                        NET_CALLS[1:])
        meta['weights_file'] = 'weights.safetensors'
        finish(ref, out, name, meta, inp, runs, weights=net.state_dict(), fixed=ROT_TOL,
               main=NET_MAIN)
    # the 8 s network at 5 s, as demo.py does (update_seq_lengths), same weights
    name = 'net_tiny_5s'
    if not only or any(o in name for o in only):
        print(f'network case {name}', flush=True)
        net, args = built['net_tiny_8s']
        lens = seqlens(5.0, 16000, 256)
        net5 = copy.deepcopy(net)
        net5.update_seq_lengths(**lens)
        inp = net_inputs(args, lens, 2, 1002)
        runs = [net_run(net5, inp, 0.4, False, d) for d in (torch.float32, torch.float32,
                                                            torch.float64)]
        meta = net_meta(args, 5.0, 16000, 256, 2, 1000, 1002, 0.4, lens,
                        NET_CALLS[:1] + ['MMAudio.update_seq_lengths(**seq_lengths)'] +
                        NET_CALLS[1:])
        meta['weights_file'] = '../net_tiny_8s/weights.safetensors'
        meta['intermediates_note'] = 'per-block intermediates omitted (same weights as net_tiny_8s)'
        finish(ref, out, name, meta, inp, runs, fixed=ROT_TOL, main=NET_MAIN)
    return built


# ------------------------------------------------------------------------------ sampler


class StubFeatures(torch.nn.Module):
    """Stands in for FeaturesUtils in eval_utils.generate: features are given directly,
    decode and vocode are identities (generate() then returns the unnormalised latent)."""

    def __init__(self, feats):
        super().__init__()
        self.feats = feats
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def encode_video_with_clip(self, x, batch_size=-1):
        return x

    def encode_video_with_sync(self, x, batch_size=-1):
        return x

    def encode_text(self, text):
        return self.feats['neg_text_f' if text[0] == 'neg' else 'text_f']

    def decode(self, z):
        return z

    def vocode(self, x):
        return x

    @property
    def device(self):
        return self.anchor.device

    @property
    def dtype(self):
        return self.anchor.dtype


def sampler_run(net, inp, mode, steps, seed, dtype):
    import mmaudio.eval_utils as eu
    from mmaudio.model.flow_matching import FlowMatching
    net = copy.deepcopy(net).to(dtype)
    x = {k: v.to(dtype) for k, v in inp.items()}
    fu = StubFeatures(x).to(dtype)
    b = x['x0'].shape[0]
    rec, xs, ts, vs, vc, vu = {}, [], [], [], [], []
    calls = {'n': 0}
    orig_pf, orig_ode = net.predict_flow, net.ode_wrapper

    def predict_flow(latent, t, c):
        out = orig_pf(latent, t, c)
        (vc if calls['n'] % 2 == 0 else vu).append(out.clone())
        calls['n'] += 1
        return out

    def ode(t, latent, *a):
        out = orig_ode(t, latent, *a)
        ts.append(float(t))
        xs.append(latent.clone())
        vs.append(out.clone())
        return out
    net.predict_flow, net.ode_wrapper = predict_flow, ode
    fm = FlowMatching(min_sigma=0, inference_mode='euler', num_steps=steps)
    orig_to_data = fm.to_data

    def to_data(fn, x0):
        out = orig_to_data(fn, x0)
        rec['x1_normalized'] = out.clone()
        return out
    fm.to_data = to_data
    saved = torch.randn
    if dtype == torch.float64:
        torch.randn = lambda *a, dtype=None, generator=None, device=None, **kw: inp['x0'].to(dtype)
    try:
        with torch.inference_mode():
            clip = x['clip_f'] if mode != 't2a' else None
            sync = x['sync_f'] if mode != 't2a' else None
            neg = ['neg'] * b if mode == 'neg' else None
            out = eu.generate(clip, sync, ['text'] * b, negative_text=neg, feature_utils=fu,
                              net=net, fm=fm, rng=torch.Generator().manual_seed(seed),
                              cfg_strength=CFG_STRENGTH)
    finally:
        torch.randn = saved
    assert torch.equal(xs[0].float(), inp['x0']), 'the first Euler state is not x0'
    rec['x_steps'] = torch.stack(xs + [rec['x1_normalized']])
    rec['t_grid'] = torch.tensor(ts, dtype=torch.float32)
    rec['v_cfg'] = torch.stack(vs)
    rec['x1_unnormalized'] = out.clone()
    if mode == 'av':
        rec['v_cond'] = torch.stack(vc)
        rec['v_uncond'] = torch.stack(vu)
    return {f'{mode}.{k}': v for k, v in rec.items()}


def gen_sampler(ref, out, only, built):
    name = 'sampler_tiny'
    if only and not any(o in name for o in only):
        return
    print(f'sampler case {name}', flush=True)
    net, args = built['net_tiny_8s']
    steps, seed, b = 4, 42, 2
    g = torch.Generator().manual_seed(1003)
    x0 = torch.randn(b, args['latent_seq_len'], args['latent_dim'],
                     generator=torch.Generator().manual_seed(seed))
    inp = {
        'x0': x0,
        'clip_f': torch.randn(b, args['clip_seq_len'], args['clip_dim'], generator=g),
        'sync_f': torch.randn(b, args['sync_seq_len'], args['sync_dim'], generator=g),
        'text_f': torch.randn(b, 77, args['text_dim'], generator=g),
        'neg_text_f': torch.randn(b, 77, args['text_dim'], generator=g),
    }
    runs = [{}, {}, {}]
    for mode in ('av', 't2a', 'neg'):
        for i, d in enumerate((torch.float32, torch.float32, torch.float64)):
            runs[i].update(sampler_run(net, inp, mode, steps, seed, d))
    meta = {
        'kind': 'flow_sampler',
        'description': 'Full flow-matching sampling as done by mmaudio.eval_utils.generate '
                       '(Euler, CFG), with the x0 noise given as input. Three condition modes.',
        'official_calls': [
            'mmaudio.model.flow_matching.FlowMatching(min_sigma=0, inference_mode="euler", '
            'num_steps=num_steps)',
            'mmaudio.eval_utils.generate(clip, sync, text, negative_text=..., feature_utils=<stub>, '
            'net, fm, rng, cfg_strength)',
            'the stub feature_utils returns the given features unchanged; decode/vocode are '
            'identity, so generate() returns the unnormalised latent',
            'x0 = torch.randn(B, N, C, generator=torch.Generator().manual_seed(rng_seed)) exactly '
            'as generate() draws it',
        ],
        'network_case': {'case': 'net_tiny_8s', 'constructor_args': args, 'seed': 1000},
        'weights_file': '../net_tiny_8s/weights.safetensors',
        'num_steps': steps,
        'cfg_strength': CFG_STRENGTH,
        'min_sigma': 0.0,
        'batch_size': b,
        'rng_seed': seed,
        'input_seed': 1003,
        'modes': {
            'av': 'clip_f, sync_f and text_f given; negative_text=None -> uncond uses empty '
                  'clip/sync tokens and empty_string_feat',
            't2a': 'clip_video=None, sync_video=None (text-to-audio): the CONDITIONAL branch uses '
                   'get_empty_clip_sequence/get_empty_sync_sequence + text_f; uncond as in av',
            'neg': 'as av, but negative_text given: uncond text = neg_text_f (not expanded from '
                   'batch 1)',
        },
        'euler_update': 'x_{k+1} = x_k + (t_{k+1} - t_k) * v_cfg(t_k, x_k), t = torch.linspace(0, '
                        '1, K+1) in float32',
        'notes': 'The fp64 comparison run is the same generate() call in float64 with the float32 '
                 'x0.',
    }
    finish(ref, out, name, meta, inp, runs,
           main=[k for k in runs[0] if k.endswith('x1_unnormalized')])


# ------------------------------------------------------------------------------ VAE

VAES = [('16k', {'data_dim': 80, 'embed_dim': 20, 'hidden_dim': 16}, 2000, 2100, 64, 128),
        ('44k', {'data_dim': 128, 'embed_dim': 40, 'hidden_dim': 16}, 2001, 2101, 45, 90)]


def vae_decode_run(vae, z, dtype):
    vae = copy.deepcopy(vae).to(dtype)
    rec, hooks = {}, []
    d = vae.decoder

    def keep(name):
        return lambda m, a, o: rec.__setitem__(name, o.clone())
    hooks.append(d.conv_in.register_forward_hook(keep('decoder.conv_in_out')))
    hooks.append(d.mid.block_1.register_forward_hook(keep('decoder.mid.block_1_out')))
    hooks.append(d.mid.attn_1.register_forward_hook(keep('decoder.mid.attn_1_out')))
    hooks.append(d.mid.block_2.register_forward_hook(keep('decoder.mid.block_2_out')))
    for i in range(len(d.up)):
        hooks.append(d.up[i].block[-1].register_forward_hook(keep(f'decoder.up.{i}.last_block_out')))
        if hasattr(d.up[i], 'upsample'):
            hooks.append(d.up[i].upsample.register_forward_hook(keep(f'decoder.up.{i}.upsample_out')))
    hooks.append(d.conv_out.register_forward_hook(keep('decoder.conv_out_out')))
    with torch.inference_mode():
        rec['mel'] = vae.decode(z.to(dtype)).clone()
    for h in hooks:
        h.remove()
    return rec


def vae_encode_run(vae, mel, dtype):
    vae = copy.deepcopy(vae).to(dtype)
    rec, hooks = {}, []
    e = vae.encoder

    def keep(name):
        return lambda m, a, o: rec.__setitem__(name, o.clone())
    hooks.append(e.conv_in.register_forward_hook(keep('encoder.conv_in_out')))
    hooks.append(e.down[0].downsample.register_forward_hook(keep('encoder.down.0.downsample_out')))
    hooks.append(e.mid.block_2.register_forward_hook(keep('encoder.mid.block_2_out')))
    with torch.inference_mode():
        dist = vae.encode(mel.to(dtype))
    for h in hooks:
        h.remove()
    rec.update(moments=dist.parameters.clone(), mean=dist.mean.clone(), logvar=dist.logvar.clone(),
               std=dist.std.clone())
    return rec


def vector_norm_in_input_dtype():
    """The VAE's pixel norm asks vector_norm(..., dtype=float32): in the float64 run compute
    in float64 instead."""
    saved = torch.linalg.vector_norm

    def vn(x, *a, dtype=None, **kw):
        if dtype == torch.float32 and x.dtype == torch.float64:
            dtype = torch.float64
        return saved(x, *a, dtype=dtype, **kw)
    return saved, vn


def gen_vaes(ref, out, only):
    for mode, args, seed, input_seed, n, t in VAES:
        dec, enc = f'vae_decoder_{mode}', f'vae_encoder_{mode}'
        if only and not any(o in dec or o in enc for o in only):
            continue
        vae, raw = build_vae(args, seed)
        g = torch.Generator().manual_seed(input_seed)
        z = torch.randn(1, args['embed_dim'], n, generator=g)
        mel = torch.randn(1, args['data_dim'], t, generator=g) * 2.0 - 5.0
        saved, vn = vector_norm_in_input_dtype()
        runs_d, runs_e = [], []
        for d in (torch.float32, torch.float32, torch.float64):
            if d == torch.float64:
                torch.linalg.vector_norm = vn
            try:
                runs_d.append(vae_decode_run(vae, z, d))
                runs_e.append(vae_encode_run(vae, mel, d))
            finally:
                torch.linalg.vector_norm = saved
        base = {
            'constructor_args': args,
            'fixed_structure': 'Encoder1D/Decoder1D with ch_mult=(1,2,4), num_res_blocks=2, '
                               'attn_layers=[3], down_layers=[0], kernel 3, clip_act 256 (same as '
                               'the real VAE)',
            'seed': seed,
            'input_seed': input_seed,
            'weight_init_recipe': VAE_RECIPE,
            'weights_note': 'weights.safetensors is the RAW state dict as stored in the official '
                            'VAE checkpoints (v1-16.pth / v1-44.pth): MPConv1D weights BEFORE '
                            'VAE.remove_weight_norm(). weights_wn_removed.safetensors is the state '
                            'dict after remove_weight_norm() (what the forward actually uses).',
        }
        print(f'VAE cases {dec} {enc}', flush=True)
        meta = dict(base, kind='vae_decoder',
                    description=f'VAE decoder path (latent -> mel), {mode} variant with reduced '
                                'hidden_dim.',
                    official_calls=['mmaudio.ext.autoencoder.vae.VAE(data_dim, embed_dim, '
                                    'hidden_dim)', 'VAE.remove_weight_norm()', 'VAE.decode(z)'],
                    weights_file='weights.safetensors',
                    weights_effective_file='weights_wn_removed.safetensors')
        finish(ref, out, dec, meta, {'z': z}, runs_d, weights=raw,
               extra={'weights_wn_removed.safetensors': vae.state_dict()}, main=('mel',))
        meta = dict(base, kind='vae_encoder',
                    description=f'VAE encoder path (mel -> latent distribution), {mode} variant '
                                'with reduced hidden_dim.',
                    official_calls=['mmaudio.ext.autoencoder.vae.VAE(...)',
                                    'VAE.remove_weight_norm()',
                                    'VAE.encode(mel) (normalize=True) -> '
                                    'DiagonalGaussianDistribution'],
                    weights_file=f'../{dec}/weights.safetensors',
                    weights_effective_file=f'../{dec}/weights_wn_removed.safetensors')
        finish(ref, out, enc, meta, {'mel': mel}, runs_e,
               main=('moments', 'mean', 'logvar', 'std'))


# ------------------------------------------------------------------------------ vocoders

V1_HP = {'resblock': '1', 'num_mels': 80, 'upsample_rates': [4, 4, 2, 2, 2, 2],
         'upsample_kernel_sizes': [8, 8, 4, 4, 4, 4], 'upsample_initial_channel': 64,
         'resblock_kernel_sizes': [3, 7, 11], 'resblock_dilation_sizes': [[1, 3, 5]] * 3,
         'activation': 'snakebeta', 'snake_logscale': True}
V2_HP = {'resblock': '1', 'num_mels': 128, 'upsample_rates': [8, 4, 2, 2, 2, 2],
         'upsample_kernel_sizes': [16, 8, 4, 4, 4, 4], 'upsample_initial_channel': 64,
         'resblock_kernel_sizes': [3, 7, 11], 'resblock_dilation_sizes': [[1, 3, 5]] * 3,
         'use_tanh_at_final': False, 'use_bias_at_final': False, 'activation': 'snakebeta',
         'snake_logscale': True, 'sampling_rate': 44100, 'hop_size': 512}
VOCODERS = [('vocoder_16k', 'bigvgan', V1_HP, 3000, 3001),
            ('vocoder_44k', 'bigvgan_v2', V2_HP, 3100, 3101)]


def vocoder_run(model, mel, dtype):
    model = copy.deepcopy(model).to(dtype)
    rec, hooks = {}, []

    def keep(name):
        return lambda m, a, o: rec.__setitem__(name, o.clone())

    def keep_in(name):
        return lambda m, a: rec.__setitem__(name, a[0].clone())
    hooks.append(model.conv_pre.register_forward_hook(keep('conv_pre_out')))
    for i in range(len(model.ups)):
        hooks.append(model.ups[i][0].register_forward_hook(keep(f'ups.{i}.out')))
        nxt = model.ups[i + 1][0] if i + 1 < len(model.ups) else model.activation_post
        hooks.append(nxt.register_forward_pre_hook(keep_in(f'stage.{i}.amp_mean_out')))
    act = model.resblocks[0].activations[0]
    hooks.append(act.upsample.register_forward_hook(keep('resblocks.0.activations.0.upsample_out')))
    hooks.append(act.act.register_forward_hook(keep('resblocks.0.activations.0.act_out')))
    hooks.append(act.register_forward_hook(keep('resblocks.0.activations.0.out')))
    hooks.append(model.resblocks[0].register_forward_hook(keep('resblocks.0.out')))
    hooks.append(model.activation_post.register_forward_hook(keep('activation_post_out')))
    hooks.append(model.conv_post.register_forward_hook(keep('conv_post_out')))
    with torch.inference_mode():
        rec['wav'] = model(mel.to(dtype)).clone()
    for h in hooks:
        h.remove()
    # the activation hooks fire once per call: keep the first (stage 0, block 0, activation 0)
    return rec


def gen_vocoders(ref, out, only):
    for name, kind, hp, seed, input_seed in VOCODERS:
        if only and not any(o in name for o in only):
            continue
        print(f'vocoder case {name}', flush=True)
        build = build_bigvgan_v1 if kind == 'bigvgan' else build_bigvgan_v2
        model, wn = build(hp, seed)
        g = torch.Generator().manual_seed(input_seed)
        mel = torch.randn(1, hp['num_mels'], 32, generator=g) - 4.0
        runs = []
        for d in (torch.float32, torch.float32, torch.float64):
            runs.append(first_activation_only(model, mel, d))
        meta = {
            'kind': kind,
            'description': 'BigVGAN vocoder (mel -> waveform) with reduced channels; same structure '
                           'as the real one (snakebeta w/ logscale, anti-aliased Activation1d, '
                           'AMPBlock1 resblocks).',
            'official_calls': ['mmaudio.ext.bigvgan.models.BigVGANVocoder' if kind == 'bigvgan'
                               else 'mmaudio.ext.bigvgan_v2.bigvgan.BigVGAN(h, '
                               'use_cuda_kernel=False)', 'remove_weight_norm()', 'forward(mel)'],
            'constructor_hparams': hp,
            'seed': seed,
            'input_seed': input_seed,
            'weight_init_recipe': VOCODER_RECIPE,
            'weights_file': 'weights.safetensors',
            'weights_note': 'weights.safetensors = state_dict AFTER remove_weight_norm(); '
                            'weights_weightnorm.safetensors = the same model BEFORE removal with '
                            'the legacy weight_g / weight_v names.',
            'resblocks_0_out_note': 'the forward hook output of resblocks.0 (cloned: the block\'s '
                                    'own output, not the in-place-aliased stage sum)',
        }
        finish(ref, out, name, meta, {'mel': mel}, runs, weights=model.state_dict(),
               extra={'weights_weightnorm.safetensors': wn}, main=('wav',))


def first_activation_only(model, mel, dtype):
    """Hooks on modules called many times keep the last call; the activation intermediates
    must be those of the first call of resblocks.0.activations.0: run with a counter."""
    rec = vocoder_run(model, mel, dtype)
    m = copy.deepcopy(model).to(dtype)
    act = m.resblocks[0].activations[0]
    first = {}

    def keep(name):
        def hook(mod, a, o):
            first.setdefault(name, o.clone())
        return hook
    hs = [act.upsample.register_forward_hook(keep('resblocks.0.activations.0.upsample_out')),
          act.act.register_forward_hook(keep('resblocks.0.activations.0.act_out')),
          act.register_forward_hook(keep('resblocks.0.activations.0.out')),
          m.resblocks[0].register_forward_hook(keep('resblocks.0.out'))]
    with torch.inference_mode():
        m(mel.to(dtype))
    for h in hs:
        h.remove()
    rec.update(first)
    return rec


# ------------------------------------------------------------------------------ mel

MELS = [('mel_16k', '16k', 16000, 8192, 4000, 'log10'), ('mel_44k', '44k', 44100, 16384, 4100, 'ln')]
SINES = [(440.0, 0.5), (1234.5, 0.3), (3000.0, 0.2)]


def mel_run(conv, wav, dtype):
    conv = copy.deepcopy(conv).to(dtype)
    rec = {}
    saved = torch.matmul

    def matmul(a, b, *args, **kw):
        if a is conv.mel_basis:
            rec['linear_magnitude'] = b.clone()
        return saved(a, b, *args, **kw)
    torch.matmul = matmul
    try:
        with torch.inference_mode():
            rec['mel'] = conv(wav.to(dtype)).clone()
    finally:
        torch.matmul = saved
    return rec


def gen_mels(ref, out, only):
    from mmaudio.ext.mel_converter import get_mel_converter
    for name, mode, sr, n, seed, log in MELS:
        if only and not any(o in name for o in only):
            continue
        print(f'mel case {name}', flush=True)
        conv = get_mel_converter(mode)
        g = torch.Generator().manual_seed(seed)
        t = torch.arange(n, dtype=torch.float64) / sr
        wav = sum(a * torch.sin(2 * math.pi * f * t) for f, a in SINES).float()
        wav = wav.unsqueeze(0).repeat(2, 1) + 0.05 * torch.randn(2, n, generator=g)
        wav[0, 100] = 1.7
        wav[1, 2000] = -1.4
        runs = [mel_run(conv, wav, d) for d in (torch.float32, torch.float32, torch.float64)]
        hop = conv.hop_size
        meta = {
            'kind': 'mel',
            'description': f'Official mel converter ({mode}): waveform -> log-mel.',
            'official_calls': [f'mmaudio.ext.mel_converter.get_mel_converter("{mode}")',
                               'MelConverter.forward(wav)'],
            'params': {'sampling_rate': sr, 'n_fft': conv.n_fft, 'num_mels': conv.num_mels,
                       'hop_size': hop, 'win_size': conv.win_size, 'fmin': conv.fmin,
                       'fmax': conv.fmax, 'log': log,
                       'reflect_pad_each_side': (conv.n_fft - hop) // 2, 'center': False},
            'seed': seed,
            'weights_file': 'weights.safetensors',
            'weights_note': 'state_dict of MelConverter: mel_basis and hann_window',
            'linear_magnitude_note': 'the STFT magnitude right before the mel projection '
                                     '(captured at the official torch.matmul)',
        }
        finish(ref, out, name, meta, {'wav': wav}, runs, weights=conv.state_dict(), main=('mel',))


def generate(ref, out: Path, only=None):
    out.mkdir(parents=True, exist_ok=True)
    built = gen_nets(ref, out, only)
    gen_sampler(ref, out, only, built)
    gen_vaes(ref, out, only)
    gen_vocoders(ref, out, only)
    gen_mels(ref, out, only)
