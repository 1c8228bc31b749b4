"""`lmlit chat` in a real pty (pexpect): Ctrl-C, line editing and history, a long paste, over-long messages, piped stdin,
commands, the banner and escaped control characters, on a scripted engine (a few ms per token, its reply chosen by the test)."""
import json, os, subprocess, sys
from pathlib import Path
import pytest
from conftest import ROOT, child_env

pexpect = pytest.importorskip('pexpect')
pytestmark = pytest.mark.timeout(120)

# The child: a scripted model (see tests/serve_fixtures.py) behind the same `chat_loop` that `lmlit chat` runs after
# loading a checkpoint; it writes the session's messages to $CHAT_DUMP when the chat ends.
CHILD = r'''
import json, os, sys, time
import torch
from lmlit.chat import ChatSession, banner, chat_loop
from lmlit.engine import Engine, ScriptedModel, scripted_step
from lmlit.tokenizer import get_tokenizer
tok = get_tokenizer('shakespeare', vocab_size=512, max_chars=200_000)
reply = tok.encode(os.environ['CHAT_REPLY']) + [tok.encode_special('<|assistant_end|>')]
start = tok.encode_special('<|assistant_start|>')
delay = float(os.environ['CHAT_DELAY'])
def script(tokens):
    time.sleep(delay)
    said = len(tokens) - tokens[::-1].index(start)
    logits = torch.full((tok.vocab_size,), -30.0)
    logits[reply[min(len(tokens) - said, len(reply) - 1)]] = 30.0
    return logits
context = int(os.environ['CHAT_CONTEXT'])
engine = Engine(ScriptedModel(script, tok.vocab_size, sequence_len=context), tok, step=scripted_step)
session = ChatSession(engine, temperature=0, max_tokens=int(os.environ.get('CHAT_MAX', 200)))
code = chat_loop(session, banner('scripted', dict(stage=os.environ['CHAT_STAGE'], step=42), context))
json.dump(session.messages, open(os.environ['CHAT_DUMP'], 'w'))
sys.exit(code)
'''

def _env(tmp_path, reply="Alpha beta gamma.", delay=0.0, context=512, stage='sft', **extra):
    extra.setdefault('LMLIT_CHAT_HISTORY', tmp_path/'history')     # never the user's own history file
    env = child_env(PYTHONPATH=ROOT, CHAT_REPLY=reply, CHAT_DELAY=delay, CHAT_CONTEXT=context, CHAT_STAGE=stage,
                    CHAT_DUMP=tmp_path/'messages.json', TERM='xterm', INPUTRC='/dev/null', **extra)
    return {k: v for k, v in env.items() if v != 'UNSET'}

def _spawn(tmp_path, **kw):
    child = pexpect.spawn(sys.executable, ['-c', CHILD], env=_env(tmp_path, **kw), encoding='utf-8', timeout=60,
                          dimensions=(40, 200))
    child.expect('/help for commands')
    child.expect('> ')
    return child

def _finish(child, tmp_path, leave='/quit'):
    "Leave with `leave` (a line, or 'eof' for Ctrl-D); the session's messages."
    if leave == 'eof': child.sendeof()
    else: child.sendline(leave)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    return json.loads((tmp_path/'messages.json').read_text())

def test_ctrl_c_stops_the_reply_and_keeps_the_history(tmp_path):
    child = _spawn(tmp_path, reply=("one two three four five six seven eight nine ten " * 4).strip(), delay=0.03)
    child.sendline('first')
    child.expect('ten\r\n> ')                                       # a whole reply
    child.sendline('second')
    child.expect('one two')                                         # the second reply is streaming ...
    child.sendintr()                                                # ... Ctrl-C
    child.expect(r'\[stopped\]\r\n> ')
    child.sendline('third')                                         # the chat goes on
    child.expect('ten\r\n> ')
    child.sendintr()                                                # Ctrl-C at the prompt: a hint, not an exit
    child.expect('Ctrl-C again')
    child.sendline('/show')
    child.expect('turns 3')
    messages = _finish(child, tmp_path)
    assert [m['content'] for m in messages if m['role'] == 'user'] == ['first', 'second', 'third']
    stopped = messages[3]['content']
    assert stopped.startswith('one two') and len(stopped) < len(messages[1]['content'])

def test_a_second_ctrl_c_at_the_prompt_leaves(tmp_path):      # exit, quit and Ctrl-D: the tests below end with them
    child = _spawn(tmp_path)
    child.sendintr()
    child.expect('Ctrl-C again')
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before

def test_arrow_key_history_and_line_editing(tmp_path):
    child = _spawn(tmp_path)
    child.sendline('what is the king')
    child.expect('gamma.\r\n> ')
    child.send('\x1b[A')                                            # up arrow: the last question again
    child.send('\x1b[D\x1b[D\x1b[D\x1b[DNG')                         # left x4 then type: 'what is the NGking'
    child.send('\r')
    child.expect('gamma.\r\n> ')
    messages = _finish(child, tmp_path, 'quit')
    assert [m['content'] for m in messages if m['role'] == 'user'] == ['what is the king', 'what is the NGking']

def test_the_up_arrow_recalls_a_line_from_an_earlier_session(tmp_path):
    "Session 1 types a question and leaves; session 2's up arrow brings it back (the history file is owner-only)."
    child = _spawn(tmp_path)
    child.sendline('who is the king of the isle')
    child.expect('gamma.\r\n> ')
    assert _finish(child, tmp_path)[0]['content'] == 'who is the king of the isle'
    assert (tmp_path/'history').stat().st_mode & 0o777 == 0o600
    child = _spawn(tmp_path)
    child.send('\x1b[A')                                            # up arrow: /quit, the last line of session 1
    child.send('\x1b[A')                                            # and again: its question
    child.send('\r')
    child.expect('gamma.\r\n> ')
    messages = _finish(child, tmp_path)
    assert [m['content'] for m in messages if m['role'] == 'user'] == ['who is the king of the isle']

def test_the_history_file_defaults_to_the_users_state_folder(tmp_path):
    "Without LMLIT_CHAT_HISTORY: $XDG_STATE_HOME/lmlit/chat_history; set empty, no file at all."
    child = _spawn(tmp_path, LMLIT_CHAT_HISTORY='UNSET', XDG_STATE_HOME=tmp_path/'state')
    child.sendline('a question')
    child.expect('gamma.\r\n> ')
    _finish(child, tmp_path)
    assert (tmp_path/'state'/'lmlit'/'chat_history').read_text().splitlines()[-2:] == ['a question', '/quit']
    child = _spawn(tmp_path, LMLIT_CHAT_HISTORY='', XDG_STATE_HOME=tmp_path/'elsewhere')
    child.sendline('kept nowhere')
    child.expect('gamma.\r\n> ')
    _finish(child, tmp_path)
    assert not (tmp_path/'elsewhere').exists()

def test_a_trailing_backslash_continues_the_message(tmp_path):
    child = _spawn(tmp_path)
    child.sendline('first line\\')
    child.expect('\\. ')                                            # the continuation prompt
    child.sendline('second line')
    child.expect('gamma.\r\n> ')
    assert _finish(child, tmp_path)[0]['content'] == 'first line\nsecond line'

def test_long_paste_arrives_whole(tmp_path):
    child = _spawn(tmp_path, context=16384)
    paste = ''.join(f'{i:05d}' for i in range(2000))                # 10,000 characters, past the 4,095 tty line limit
    for start in range(0, len(paste), 500):                         # a paste arrives in bursts; drain the echo between
        child.send(paste[start:start + 500])
        child.expect_exact(paste[start + 490:start + 500])
    child.send('\r')
    child.expect('gamma.\r\n> ')
    messages = _finish(child, tmp_path)
    assert messages[0]['content'] == paste

def test_over_long_message_prints_the_error_and_the_chat_goes_on(tmp_path):
    child = _spawn(tmp_path, context=128)
    child.sendline('hello')
    child.expect('gamma.\r\n> ')
    child.sendline('the king ' * 100)
    child.expect("error: the last message needs \\d+ tokens")
    child.expect('> ')
    child.sendline('/max 500')
    child.expect("max tokens must be between 1 and 127")
    child.sendline('/temperature')
    child.expect('temperature 0')
    child.sendline('again')
    child.expect('gamma.\r\n> ')
    messages = _finish(child, tmp_path, 'exit')
    assert [m['content'] for m in messages if m['role'] == 'user'] == ['hello', 'again']

def test_banner_warns_on_a_base_model_and_control_characters_are_escaped(tmp_path):
    child = pexpect.spawn(sys.executable, ['-c', CHILD], encoding='utf-8', timeout=60, dimensions=(40, 200),
                          env=_env(tmp_path, reply="red \x1b[31mtext\x08\x06 end", stage='base'))
    child.expect(r'stage base · step 42 · context 512 tokens')
    child.expect('warning: this is a base model')
    child.expect('> ')
    child.sendline('hi')
    child.expect('> ')
    assert 'red \\x1b[31mtext\\x08\\x06 end' in child.before and '\x1b[31m' not in child.before
    _finish(child, tmp_path, 'eof')

def test_piped_stdin_prints_only_the_answers(tmp_path):
    r = subprocess.run([sys.executable, '-c', CHILD], input='hello\n\n/temperature 0\nagain\n', capture_output=True,
                       text=True, env=_env(tmp_path), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == 'Alpha beta gamma.\nAlpha beta gamma.\n'
    assert 'temperature 0' in r.stderr
