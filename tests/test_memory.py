"The memory planner (04c): the GPU count, suggestions that pass the batch arithmetic, refusals that list what fits."
import random, re
import pytest
import torch
from lmlit.core import LmlitError
from lmlit.loop import grad_accum_steps
from lmlit.model import GPT, GPTConfig, build_model
from lmlit.optim import setup_optimizer
from lmlit.memory import (analytic_activations, probe_activations, plan_memory, memory_options, fit_memory,
                          valid_device_batches, optimizer_state_bytes, GPU_USABLE, DEFAULT_LOSS_CHUNK)

GB80 = 79.1                  # GiB: what torch reports for an 80 GB H100 (the set-up's limit: total_memory)
SPEEDRUN = dict(seq_len=2048, total_batch=524288, world=8)


def meta_model(depth, vocab=65536, seq_len=2048, **kw):
    "A model of this shape on the meta device: planned for free, whatever its size."
    with torch.device('meta'): return GPT(GPTConfig.from_depth(depth, vocab_size=vocab, sequence_len=seq_len, **kw))


@pytest.mark.timeout(60)
def test_d20_speedrun_batch_32_fits_an_80gb_gpu():
    "nanochat's known-good shape: d20, seq 2048, bf16, device batch 32 on 8 × 80 GB, compiled (runs/speedrun.sh)."
    model = meta_model(20)
    plan = fit_memory(model, None, 32, SPEEDRUN['seq_len'], SPEEDRUN['total_batch'], SPEEDRUN['world'], GB80, 'cuda',
                      torch.bfloat16, compiled=True)
    print(f"\nd20 batch 32, compiled: {plan['total'] / 2**30:.1f} GiB planned (loss_chunk {plan['loss_chunk']}), "
          f"activations {plan['activations'] / 2**30:.1f} GiB")
    assert plan['device_batch'] == 32 and not plan['activation_checkpointing']
    assert plan['total'] <= GB80 * GPU_USABLE * 2**30
    assert plan['loss_chunk'] == DEFAULT_LOSS_CHUNK == model.loss_chunk     # chunked: the plain head does not fit
    plain = plan_memory(model, None, 32, 2048, 'cuda', torch.bfloat16, compiled=True, loss_chunk=0, world=8)
    assert plain['total'] > GB80 * GPU_USABLE * 2**30 > plan['total']
    # eager, the same shape is refused (68C bytes per token per layer), naming checkpointing or a smaller batch
    model.loss_chunk = 0
    named = r'device_batch 32 \(grad accum 1\), loss_chunk 4096, activation_checkpointing=True: [\d.]+ GiB'
    with pytest.raises(LmlitError, match=named):
        fit_memory(model, None, 32, 2048, 524288, 8, GB80, 'cuda', torch.bfloat16)


def _case(rng):
    depth = rng.choice([2, 4, 6, 8, 12, 16, 20, 24, 26])
    seq_len = rng.choice([256, 512, 1024, 2048])
    world = rng.choice([1, 2, 3, 4, 6, 8])
    rows = rng.choice([1, 2, 3, 4, 8, 12, 16, 32, 64, 96, 256])          # total rows per step over all ranks
    total_batch = rows * seq_len * world
    batches = valid_device_batches(total_batch, seq_len, world)
    return dict(depth=depth, seq_len=seq_len, world=world, total_batch=total_batch, asked=rng.choice(batches),
                vocab=rng.choice([4096, 32768, 50257, 65536]), limit=rng.choice([8, 16, 24, 40, 80]),
                compiled=rng.random() < 0.5)


@pytest.mark.timeout(120)
def test_every_suggestion_passes_the_batch_arithmetic_and_fits():
    "Over shapes × world sizes × total batches: each alternative offered passes grad_accum_steps and fits."
    rng = random.Random(0)
    refused = offered = 0
    for _ in range(150):
        c = _case(rng)
        model = meta_model(c['depth'], c['vocab'], c['seq_len'])
        limit = c['limit'] * GPU_USABLE * 2**30
        options = memory_options(model, None, c['seq_len'], c['total_batch'], c['world'], limit, 'cuda', torch.bfloat16,
                                 c['compiled'], max_batch=c['asked'])
        for o in options:
            offered += 1
            accum = grad_accum_steps(c['total_batch'], o['device_batch'], c['seq_len'], c['world'])
            assert accum == o['grad_accum'], (c, o)
            assert o['device_batch'] <= c['asked'] and o['total'] <= limit, (c, o)
            again = plan_memory(model, None, o['device_batch'], c['seq_len'], 'cuda', torch.bfloat16,
                                o['activation_checkpointing'], compiled=c['compiled'], loss_chunk=o['loss_chunk'],
                                world=c['world'])
            assert again['total'] == o['total']
        assert [o['device_batch'] for o in options] == sorted({o['device_batch'] for o in options}, reverse=True)
        try:
            plan = fit_memory(model, None, c['asked'], c['seq_len'], c['total_batch'], c['world'], c['limit'], 'cuda',
                              torch.bfloat16, compiled=c['compiled'])
            assert plan['total'] <= limit and plan['device_batch'] == c['asked']
        except LmlitError as e:
            refused += 1
            named = re.search(r'The largest device_batch that fits is (\d+)', str(e))
            if named:
                assert c['total_batch'] % (int(named.group(1)) * c['seq_len'] * c['world']) == 0, (c, str(e))
            for batch, accum in re.findall(r'device_batch (\d+) \(grad accum (\d+)\)', str(e)):
                assert int(batch) * int(accum) * c['seq_len'] * c['world'] == c['total_batch'], (c, str(e))
            assert bool(options) == ('Settings that fit the batch arithmetic' in str(e)), (c, str(e))
    print(f"\n150 cases: {refused} refused, {offered} alternatives offered, all valid")
    assert refused > 10 and offered > 100        # the grid exercises both outcomes


@pytest.mark.timeout(60)
@pytest.mark.parametrize('depth,width,head_dim,kv,vocab', [(2, 64, 16, None, 2000), (3, 96, 32, 1, 1024)])
def test_analytic_count_equals_the_cpu_probe(depth, width, head_dim, kv, vocab):
    "lmlit's eager fp32 CPU kernels, counted term by term, equal what autograd saves (the probe), for each head + loss."
    cfg = GPTConfig(sequence_len=48, vocab_size=vocab, n_layer=depth, n_head=width // head_dim,
                    n_kv_head=kv or width // head_dim, n_embd=width)
    model = build_model(cfg, 'cpu')
    for chunk, fused in ((0, False), (0, True), (20, False)):
        model.loss_chunk, model.fused_cpu_loss = chunk, fused
        path = model.loss_path('cpu', torch.float32)
        probed = probe_activations(model, 48, 'cpu')
        counted = analytic_activations(cfg, 48, 'cpu', torch.float32, path, chunk)
        assert probed['blocks'] - probed['weights_in_blocks'] == counted['blocks'], path
        assert abs(probed['outside'] - probed['weights_outside'] - counted['outside']) <= 8, path   # one loss scalar
        assert (probed['logits'], probed['loss_const'], probed['loss_chunk']) == \
               (counted['logits'], counted['loss_const'], counted['loss_chunk']), path


@pytest.mark.timeout(60)
def test_counted_optimizer_state_equals_the_built_one():
    model = build_model(GPTConfig.from_depth(3, vocab_size=1000, sequence_len=32, aspect_ratio=32, head_dim=32), 'cpu')
    optimizer = setup_optimizer(model)
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for st in optimizer.state.values()
                for t in st.values() if torch.is_tensor(t) and t.numel() > 1}    # Muon's buffers are views of one stack
    built = sum(storages.values())
    assert optimizer_state_bytes(model) == built
    # ZeRO-2 over 8 ranks: d20's state per rank is about an eighth
    d20 = meta_model(20)
    assert optimizer_state_bytes(d20, 8) < optimizer_state_bytes(d20, 1) / 6


@pytest.mark.timeout(60)
def test_a_cpu_refusal_lists_working_alternatives():
    "On the CPU (probed), a refused plan lists settings that fit the arithmetic, each with its planned GiB."
    model = build_model(GPTConfig.from_depth(2, vocab_size=1024, sequence_len=128, aspect_ratio=64, head_dim=64), 'cpu')
    optimizer = setup_optimizer(model)
    full = plan_memory(model, optimizer, 8, 128, 'cpu')
    limit_gb = (full['fixed'] + 3.5 * full['per_row']) / 2**30
    with pytest.raises(LmlitError) as err:
        fit_memory(model, optimizer, 8, 128, 16 * 128, 1, limit_gb, 'cpu')      # 16 rows a step: batches 8, 4, 2, 1
    msg = str(err.value)
    print('\n' + msg)
    assert 'The largest device_batch that fits is 2' in msg        # 3 rows would fit, but 3 does not divide 16: 2 does
    alternatives = re.findall(r'device_batch (\d+) \(grad accum (\d+)\)[^:;]*: ([\d.]+) GiB', msg)
    assert ('2', '8') in [(b, a) for b, a, _ in alternatives] and all(int(b) * int(a) == 16 for b, a, _ in alternatives)
    assert all(float(g) <= limit_gb + 0.005 for _, _, g in alternatives)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_compiled_count_equals_what_inductor_saves():
    """The compiled count (04c) lists the tensors AOTAutograd's partitioner keeps. On a CPU a compiled model takes the
    GPU code paths (F.rms_norm, plain RoPE, relu().square()): what it saves, float32, must be what the count says.
    ~30-90 s of inductor compilation on a shared CPU, hence slow."""
    cfg = GPTConfig(sequence_len=64, vocab_size=1000, n_layer=2, n_head=4, n_kv_head=4, n_embd=128)
    model = build_model(cfg, 'cpu')
    model.fused_cpu_loss = False                     # compiled CPU runs take the plain head (02_model)
    weights = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    compiled = torch.compile(model, dynamic=False)
    inputs = torch.zeros(1, 64, dtype=torch.long)
    targets = torch.ones(1, 64, dtype=torch.long)
    compiled(inputs, targets).backward()             # compile (forward and backward graphs) outside the count
    saved = {}
    def pack(t):
        key = t.untyped_storage().data_ptr()
        if key not in weights: saved[key] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = compiled(inputs, targets)
    counted = analytic_activations(cfg, 64, 'cuda', torch.float32, 'plain', 0, compiled=True)
    print(f"\ninductor saved {sum(saved.values())} bytes, counted {counted['blocks'] + counted['outside']}")
    assert abs(sum(saved.values()) - counted['blocks'] - counted['outside']) <= 600    # a loss scalar, a max/lse pair
    del loss
