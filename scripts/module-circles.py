#!/usr/bin/env python3
"""Import circles between the crate's modules, from the source text alone.

Every module (src/a.rs, src/a/mod.rs, src/a/b.rs ...) is a node; every path it names
(`crate::a::b`, `super::b`, `use crate::{a, b}`, `use super::{a, b}`; comments skipped)
is an edge to the longest module that path starts with. A module's own children and
parents are not counted (declaring or re-exporting them is not depending on them).
Prints the strongly connected components of two graphs: the top-level modules of src/
(the layering the README describes) and every module file. Exit status 1 when either
has a circle.

    python3 scripts/module-circles.py [src]
"""
import os
import re
import sys


def modules(root):
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if not name.endswith('.rs'):
                continue
            path = os.path.join(folder, name)
            parts = os.path.relpath(path, root)[:-3].split(os.sep)
            if parts[-1] == 'mod':
                parts = parts[:-1]
            if parts in (['lib'], ['main']):
                continue
            found['/'.join(parts)] = path
    return found


def longest_module(known, base, segments):
    best = None
    for i in range(1, len(segments) + 1):
        candidate = '/'.join(base + segments[:i])
        if candidate not in known:
            break
        best = candidate
    return best


def dependencies(known):
    edges = {}
    for module, path in known.items():
        with open(path, encoding='utf-8') as source:
            text = re.sub(r'//[^\n]*', '', source.read())
        parent = module.split('/')[:-1]
        targets = set()
        for tail in re.findall(r'\bcrate((?:::\w+)+)', text):
            targets.add(longest_module(known, [], tail.strip(':').split('::')))
        for tail in re.findall(r'\bsuper((?:::\w+)+)', text):
            targets.add(longest_module(known, parent, tail.strip(':').split('::')))
        for group in re.findall(r'\bcrate::\{([^;]*)\}', text):
            for item in group.split(','):
                head = re.match(r'\s*(\w+)', item)
                if head:
                    targets.add(longest_module(known, [], [head.group(1)]))
        for group in re.findall(r'\bsuper::\{([^;]*)\}', text):
            for item in group.split(','):
                head = re.match(r'\s*(\w+)', item)
                if head:
                    targets.add(longest_module(known, parent, [head.group(1)]))
        edges[module] = {
            t for t in targets
            if t and t != module and not t.startswith(module + '/')
            and not module.startswith(t + '/')
        }
    return edges


def circles(edges):
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else 'src'
    known = modules(root)
    files = dependencies(known)
    top = {}
    for module, targets in files.items():
        head = module.split('/')[0]
        top.setdefault(head, set()).update(
            t.split('/')[0] for t in targets if t.split('/')[0] != head
        )
    failed = False
    for title, graph in (('top-level modules', top), ('module files', files)):
        found = circles(graph)
        print(f'{title}: {len(graph)}, circles: {len(found)}')
        for component in found:
            failed = True
            print('  circle:', ' <-> '.join(component))
            for a in component:
                for b in component:
                    if b in graph.get(a, ()):
                        print(f'    {a} -> {b}')
    for head in sorted(top):
        print(f'  {head} -> {", ".join(sorted(top[head])) or "-"}')
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
