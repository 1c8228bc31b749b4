"""Checks `report.md` of a real CPU-recipe run folder (CI runs it on the smoke recipe's own folder, after `runs/cpu.sh`):
every stage with a chat eval shows it, no MFU above 100 % is printed, RL's sampling time is named as such.
    python tests/check_recipe_report.py runs/NAME"""
import re, sys
from pathlib import Path

def check(run_dir: Path) -> list[str]:
    md = (run_dir/'report.md').read_text()
    bad = []
    chat = md.split('## Chat eval per stage', 1)[1].split('\n## ', 1)[0]
    for stage, folder in (('base', run_dir), ('sft', run_dir/'sft'), ('rl', run_dir/'rl')):
        if (folder/'eval'/'chat.json').exists() and not re.search(rf'^\| {stage} \| [+-]\d', chat, re.M):
            bad.append(f"{stage} has eval/chat.json but the report's chat-eval row for it is: "
                       f"{next((l for l in chat.splitlines() if l.startswith(f'| {stage} |')), 'absent')}")
    for pct in re.findall(r'\| (\d+(?:\.\d+)?)% \|', md.split('## CORE per task', 1)[0]):
        if float(pct) > 100: bad.append(f"an MFU of {pct}% is printed")
    if (run_dir/'rl').exists():
        rl = md.split('## Throughput by window', 1)[1].split('### rl', 1)[1].split('\n## ', 1)[0]
        if 'sampling ms' not in rl or '| data ms' in rl: bad.append("RL's sampling time is not shown under its own name")
    return bad

if __name__ == '__main__':
    problems = check(Path(sys.argv[1]))
    for p in problems: print(f"check_recipe_report: {p}", file=sys.stderr)
    print(f"check_recipe_report: {sys.argv[1]}/report.md {'has ' + str(len(problems)) + ' problem(s)' if problems else 'tells the run as it was'}")
    sys.exit(1 if problems else 0)
