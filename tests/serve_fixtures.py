"A scripted engine and a live `lmlit serve` app on loopback, shared by test_serve and test_browser."
import threading, time
import torch
import uvicorn
from conftest import free_port
from lmlit.engine import Engine, ScriptedModel, scripted_step
from lmlit.serve import make_app, Limits, server_config
from lmlit.tokenizer import get_tokenizer

HOSTILE = " said <script>window.pwned=1</script> and <img src=x onerror=\"window.pwned=2\"> and **bold** `code`."

def scripted_engine(delay_s: float = 0.0):
    "Replies 'Alpha'/'Beta'/'Gamma' (sampled: regenerating changes it) then HOSTILE, then <|assistant_end|>; `model.prompts` keeps each prompt."
    tok = get_tokenizer('shakespeare', vocab_size=512, max_chars=200_000)
    S = tok.encode_special
    firsts = [tok.encode(w)[0] for w in ("Alpha", "Beta", "Gamma")]
    rest = tok.encode(HOSTILE) + [S('<|assistant_end|>')]
    prompts = []
    def script(tokens):
        if delay_s: time.sleep(delay_s)
        k = len(tokens) - tokens[::-1].index(S('<|assistant_start|>'))
        said = tokens[k:]
        logits = torch.full((tok.vocab_size,), -30.0)
        if not said:
            prompts.append(list(tokens))     # what the model was asked: the exact rendered conversation
            logits[firsts] = 5.0
            logits[firsts[0]] = 5.1          # greedy picks the first
        else: logits[rest[min(len(said) - 1, len(rest) - 1)]] = 30.0
        return logits
    model = ScriptedModel(script, tok.vocab_size, sequence_len=512)
    model.prompts = prompts
    return Engine(model, tok, step=scripted_step), model, tok

class LiveServer:
    "uvicorn serving `app` in a thread on a free loopback port, configured as `lmlit serve` configures it."
    def __init__(self, app, limits: Limits | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(server_config(app, '127.0.0.1', self.port, limits))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline: raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self
    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)

def tool_plan(tok) -> list[int]:
    """A reply that calls the calculator twice: `2+3` (the engine forces its result, 5) and `abs(` (no value: no result),
    says a literal `<<` between them, then ends: every token of it, the forced ones included."""
    S = tok.encode_special
    return (tok.encode('Two and three: ') + [S('<|python_start|>')] + tok.encode('2+3') + [S('<|python_end|>')]
            + [S('<|output_start|>')] + tok.encode('5') + [S('<|output_end|>')] + tok.encode(' so 5 << 6; ')
            + [S('<|python_start|>')] + tok.encode('abs(') + [S('<|python_end|>')] + tok.encode(' gave nothing.')
            + [S('<|assistant_end|>')])

TOOL_PARTS = [dict(type='text', text='Two and three: '), dict(type='python', text='2+3'),
              dict(type='python_output', text='5'), dict(type='text', text=' so 5 << 6; '), dict(type='python', text='abs('),
              dict(type='text', text=' gave nothing.')]

def tool_engine():
    "A model that answers `tool_plan` (`model.plan`) to anything; `model.prompts` keeps each prompt."
    tok = get_tokenizer('shakespeare', vocab_size=512, max_chars=200_000)
    S = tok.encode_special
    plan = tool_plan(tok)
    prompts = []
    def script(tokens):
        said = tokens[len(tokens) - tokens[::-1].index(S('<|assistant_start|>')):]
        if not said: prompts.append(list(tokens))
        logits = torch.full((tok.vocab_size,), -30.0)
        logits[plan[min(len(said), len(plan) - 1)]] = 30.0
        return logits
    model = ScriptedModel(script, tok.vocab_size, sequence_len=512)
    model.prompts, model.plan = prompts, plan
    return Engine(model, tok, step=scripted_step), model, tok
