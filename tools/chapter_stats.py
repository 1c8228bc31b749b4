"""Per-chapter figures of the lesson rhythm, and the import graph of lmlit's modules, read from the notebooks' JSON.

    python tools/chapter_stats.py [nbs/]            the table and the graph's violations
    python tools/chapter_stats.py --graph [nbs/]    also every module's imports

Columns of the table, one row per chapter that exports a module:
- `cells`: exported code cells; `median`/`max`: their length in lines;
- `defs`: public top-level functions and classes defined in exported cells (a `_helper` is read through its caller's test);
- `tested`: the share of them whose name a non-exported code cell mentions before the next exported cell
  (a test or a worked call right after the definition, fastcore's rhythm);
- `outputs`: code cells whose output is kept in the committed notebook;
- `;`: statements joined by `;` in exported code; `>120`: exported lines longer than 120 characters.

The graph: each module's `lmlit` imports (top-level and inside functions alike) with every cycle, and every import of a
module whose chapter comes later in the chapter order (notebook file names sorted), printed as a violation."""
import ast, io, re, sys, json, tokenize, statistics
from pathlib import Path

EXPORT_FLAGS = ('#| export', '#|export', '#| exports', '#|exports')

def cell_source(cell) -> str:
    src = cell.get('source', '')
    return ''.join(src) if isinstance(src, list) else src

def is_exported(cell) -> bool:
    if cell.get('cell_type') != 'code': return False
    head = [line.strip() for line in cell_source(cell).splitlines()[:3]]
    return any(line.startswith(EXPORT_FLAGS) for line in head)

def module_name(cells) -> str | None:
    "The module a notebook exports (its `#| default_exp` name), or None."
    for cell in cells:
        match = re.search(r'^#\|\s*default_exp\s+(\S+)', cell_source(cell), re.M)
        if match: return match.group(1)
    return None

def parse(source: str):
    "The cell's syntax tree (notebook magics and shell lines blanked), or None when it does not parse."
    lines = ['' if line.lstrip().startswith(('%', '!')) else line for line in source.splitlines()]
    try: return ast.parse('\n'.join(lines))
    except SyntaxError: return None

def definitions(source: str) -> list[str]:
    "Names of the public top-level functions and classes a cell defines."
    tree = parse(source)
    if tree is None: return []
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return [node.name for node in tree.body if isinstance(node, kinds) and not node.name.startswith('_')]

def semicolons(source: str) -> int:
    "Statements joined by `;` (a `;` inside a string or comment does not count)."
    try: tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError): return source.count(';')
    return sum(tok.type == tokenize.OP and tok.string == ';' for tok in tokens)

def mentions(name: str, source: str) -> bool:
    return re.search(rf'(?<![\w]){re.escape(name)}(?![\w])', source) is not None

def tested_definitions(cells) -> tuple[int, int]:
    "(definitions mentioned by a non-exported code cell before the next exported cell, definitions)."
    tested = total = 0
    for i, cell in enumerate(cells):
        if not is_exported(cell): continue
        names = definitions(cell_source(cell))
        after = []
        for later in cells[i + 1:]:
            if is_exported(later): break
            if later.get('cell_type') == 'code': after.append(cell_source(later))
        total += len(names)
        tested += sum(any(mentions(name, src) for src in after) for name in names)
    return tested, total

def chapter_row(path: Path) -> dict | None:
    cells = json.loads(path.read_text())['cells']
    module = module_name(cells)
    if module is None: return None
    exported = [cell_source(c) for c in cells if is_exported(c)]
    lengths = [len(src.splitlines()) for src in exported]
    tested, total = tested_definitions(cells)
    return dict(chapter=path.stem, module=module, cells=len(exported),
                median=statistics.median(lengths) if lengths else 0, max=max(lengths, default=0),
                defs=total, tested=tested, outputs=sum(bool(c.get('outputs')) for c in cells if c.get('cell_type') == 'code'),
                semicolons=sum(semicolons(src) for src in exported),
                long_lines=sum(len(line) > 120 for src in exported for line in src.splitlines()))

def table(rows) -> str:
    head = '| chapter | module | cells | median | max | defs | tested | outputs | ; | >120 |'
    out = [head, '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        share = f"{r['tested']}/{r['defs']} ({100 * r['tested'] / r['defs']:.0f} %)" if r['defs'] else '—'
        out.append(f"| {r['chapter']} | {r['module']} | {r['cells']} | {r['median']:g} | {r['max']} | {r['defs']} | {share} | "
                   f"{r['outputs']} | {r['semicolons']} | {r['long_lines']} |")
    defs, tested = sum(r['defs'] for r in rows), sum(r['tested'] for r in rows)
    out.append(f"| all | | {sum(r['cells'] for r in rows)} | | | {defs} | {tested}/{defs} ({100 * tested / max(1, defs):.0f} %) | "
               f"{sum(r['outputs'] for r in rows)} | {sum(r['semicolons'] for r in rows)} | {sum(r['long_lines'] for r in rows)} |")
    return '\n'.join(out)

def module_imports(source: str, package: str = 'lmlit') -> set[str]:
    "The modules of `package` that `source` imports (relative or absolute, at the top or inside a function)."
    tree = parse(source)
    found = set()
    if tree is None: return found
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level == 1 or base == package or base.startswith(package + '.'):
                base = base[len(package):].lstrip('.') if node.level == 0 else base
                if base: found.add(base.split('.')[0])
                else: found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split('.')[1] for a in node.names if a.name.startswith(package + '.'))
    return found

def import_graph(paths) -> tuple[dict, list[str]]:
    "({module: set of lmlit modules it imports}, modules in chapter order)."
    graph, order = {}, []
    for path in paths:
        cells = json.loads(path.read_text())['cells']
        module = module_name(cells)
        if module is None: continue
        order.append(module)
        graph[module] = set().union(*(module_imports(cell_source(c)) for c in cells if is_exported(c))) - {module}
    return {m: {d for d in deps if d in graph} for m, deps in graph.items()}, order

def cycles(graph: dict) -> list[list[str]]:
    "Every elementary cycle found by a depth-first walk (each listed once, from its smallest module name)."
    found = set()
    def walk(start, node, path, on_path):
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                i = path.index(min(path))
                found.add(tuple(path[i:] + path[:i]))
            elif nxt not in on_path and nxt > start:
                walk(start, nxt, path + [nxt], on_path | {nxt})
    for m in sorted(graph): walk(m, m, [m], {m})
    return [list(c) for c in sorted(found)]

def upward_imports(graph: dict, order: list[str]) -> list[tuple[str, str]]:
    "(module, imported module) where the imported one's chapter comes later in the chapter order."
    rank = {m: i for i, m in enumerate(order)}
    return [(m, d) for m in order for d in sorted(graph[m], key=rank.get) if rank[d] > rank[m]]

def main(argv) -> int:
    show_graph = '--graph' in argv
    folder = Path(next((a for a in argv if not a.startswith('--')), 'nbs'))
    paths = sorted(folder.glob('*.ipynb'))
    rows = [r for r in map(chapter_row, paths) if r]
    print(table(rows))
    graph, order = import_graph(paths)
    print()
    if show_graph:
        for m in order: print(f"{m} ← {', '.join(sorted(graph[m], key=order.index)) or '—'}")
        print()
    found_cycles, upward = cycles(graph), upward_imports(graph, order)
    print(f"import graph: {len(order)} modules, {sum(map(len, graph.values()))} imports, {len(found_cycles)} cycles, "
          f"{len(upward)} imports of a later chapter")
    for c in found_cycles: print('  cycle: ' + ' → '.join(c + c[:1]))
    for m, d in upward: print(f"  {m} imports {d}, a later chapter")
    return 1 if found_cycles or upward else 0

if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
