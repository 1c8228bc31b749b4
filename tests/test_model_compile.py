"""torch.compile on the model — the path GPU runs take with compile=True — checked on the CPU: the model's forward
(plain head and the chunked head + loss) must trace as one graph with no graph breaks, and a compiled training step
must give the eager loss and gradients. Needs a C++ compiler for inductor (present on Linux CI); ~30-60 s."""
import pytest


def _model(chunk):
    import torch
    from lmlit.model import GPTConfig, build_model
    torch.manual_seed(0)
    m = build_model(GPTConfig.from_depth(2, vocab_size=1000, sequence_len=64, aspect_ratio=32, head_dim=32), 'cpu')
    m.loss_chunk, m.fused_cpu_loss = chunk, False    # the fused CPU loss is an eager-only CPU path; compile uses the others
    return m


@pytest.mark.timeout(300)
@pytest.mark.parametrize('chunk', [0, 48])
def test_model_traces_without_graph_breaks(chunk):
    import torch, torch._dynamo as dynamo
    m = _model(chunk)
    x = torch.randint(0, 1000, (4, 64))
    dynamo.reset()
    exp = dynamo.explain(m)(x, x)
    print(f"\nloss_chunk={chunk}: {exp.graph_count} graph(s), {exp.graph_break_count} break(s) {[str(b.reason)[:100] for b in exp.break_reasons]}")
    assert exp.graph_count == 1 and exp.graph_break_count == 0


@pytest.mark.timeout(300)
def test_compiled_chunked_step_equals_eager():
    import torch, torch._dynamo as dynamo
    m = _model(48)
    x = torch.randint(0, 1000, (4, 64))
    le = m(x, x); le.backward(); ge = [p.grad.clone() for p in m.parameters()]; m.zero_grad()
    dynamo.reset()
    lc = torch.compile(m)(x, x); lc.backward(); gc = [p.grad.clone() for p in m.parameters()]
    diff = max((a - b).abs().max().item() for a, b in zip(ge, gc))
    print(f"\ncompiled vs eager: loss {lc.item():.6f} vs {le.item():.6f}, max grad diff {diff:.2g}")
    assert abs(lc.item() - le.item()) < 1e-5 and diff < 1e-5
