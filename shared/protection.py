"""Protection down to a function: `train.py::test`, `utils.py::accuracy`, `models.py::GCN.forward`.

A task card may protect one definition instead of a whole file, so that a patch may edit the training
code beside it. `symbol_digests` follows the protected definition to everything in the repository it
depends on and records a digest of each; `changed_symbols` says which of them a patch changed.

A symbol is a name bound in a module, or (dotted) in a class or function body. Its digest covers, in
source order, every binding of the name in that scope (`def`, `class`, assignment, import, star import,
`for`/`with`/`except` target, `global` write in a function), each with the `if`/`for`/`try` headers that
decide whether it runs; and every write through the name anywhere in the repository: `utils.accuracy = f`,
`GCN.forward = f`, `labels[idx] = 0`, `del X.y`, `setattr(utils, "accuracy", f)`, `object.__setattr__(...)`,
`type.__setattr__(...)`, a write through its namespace (`utils.__dict__[k] = f`, `vars(utils).update(...)`:
a write to all of utils), and `builtins.len = f` for every `len`. A write counts for every name its base
mentions, not only the root: `[labels][0][i] = 0`, `labels.view(-1)[i] = 0`, `(u := utils).accuracy = f`,
`a[labels][i] = 0` write to labels or utils. Writes are followed through an import inside a function and
through module-level aliases bound any way: `u = utils`, `u: T = v = utils` alias utils exactly, and any
other binding makes the name part of whatever its value mentions (`for L in (labels,)`, `(L,) = (labels,)`,
`with nullcontext(labels) as L`, `L = labels.view(-1)`). This errs towards a change: after
`optimizer = Adam(model.parameters())`, `optimizer.param_groups[0]["lr"] = lr` is a write to model. So a
second `def test()`, a later `test = ...`, a rebound constant or a monkey-patch from another module changes
a digest although `def test()` did not. An import's digest names the files it resolves to, so a new
`utils/__init__.py` beside `utils.py` is a change.

Read files with `decode_source`, as the interpreter does: a `# coding: raw_unicode_escape` line turns a
`\\u000a` inside a comment into a new line of code.

Code is hashed as its AST without positions, leaving out fields that are None or empty (the empty fields
a newer Python adds do not matter): reformatting and comments never change a digest; any change to what
the code says, docstrings included, does.

Followed: the names a definition reads from module scope (calls, attribute bases, decorators, defaults,
annotations, base classes, constants), through imports (`from .utils import accuracy`, `import pkg.utils
as U` then `U.accuracy`, star imports) found from the importing file's folder and from the root; in a
protected method, `self.x` and `super().x` lead to the member, the repository bases and the methods that
assign `self.x`. Names bound nowhere in the repository (builtins, torch) are recorded as absent, so that
binding one later (`def len(x)` beside `accuracy`) is a change. A global the protected code reads is
covered with its whole definition: if `test()` reads a module-level `model`, the model's class is too.

Not covered (the whole-file hashes and the isolated re-run of the evaluation are there for these):
- mutation by calling a method: `idx_test.resize_(10)`, `labels.fill_(0)`, `parser.add_argument(...)`;
- dynamic access: `globals()["test"] = f`, `sys.modules["utils"].accuracy = f`, `exec`, `importlib`,
  `setattr` under another name (`s = setattr`); `setattr` with a computed name is a write to all the object;
- aliases assigned inside functions (`u = utils; u.accuracy = f` in a body), objects functions return
  (`get()[i] = 0` where `get` returns labels), objects stored into a container and written through it
  later (`box["x"] = labels; box["x"][i] = 0`, `box.append(labels)`);
- patching code outside the repository: `torch.Tensor.sum = f`, `sys.stdout = f`, `.pth` files;
- whether and how the protected function is called: dropping the call to `test()` and printing a number
  changes only the caller, which protecting the caller (or the file) covers;
- `sys.path` edits, and an entry script in another folder than the module that imports;
- subclasses overriding a protected method, and objects of other classes handed to protected code;
- files this interpreter cannot parse or walk (a syntax error, or code too deep or too large: RecursionError,
  MemoryError) where the patch left them as they were: left out of the search for writes. One that the patch
  added or changed counts as a change to every protected symbol, and one that protected code needs is a
  ProtectionError. Compute and check digests with the same Python.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import io
import keyword
import posixpath
import tokenize
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

SEPARATOR = "::"
# The repository's Python files that protected definitions are followed through, by both the
# supervisor (recording digests) and the runners (checking them): the first MAX_SOURCE_FILES in
# path order, none larger than MAX_SOURCE_BYTES (larger files are generated code or data).
MAX_SOURCE_FILES = 2000
MAX_SOURCE_BYTES = 2 * 1024 * 1024
DIGEST_VERSION = "protection/1"

Symbol = tuple[str, str]  # (path, qualname)
Chain = tuple[str, ...]  # `utils.accuracy` read as ("utils", "accuracy")
Header = tuple[str, ast.AST | None]  # ("if", test): what decides whether a nested binding runs

_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_DEFINITIONS = (*_FUNCTIONS, ast.ClassDef)
_SCOPES = (*_DEFINITIONS, ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
ScopeNames = dict[ast.AST, tuple[frozenset[str], frozenset[str]]]  # a scope's (local names, names declared global)
_PATHOLOGICAL = (RecursionError, MemoryError, OverflowError)  # what parsing or walking code too deep or too large raises


class ProtectionError(ValueError):
    """A protected entry that names nothing, or code that cannot be read."""


def decode_source(data: bytes) -> str:
    """A Python file's text as the interpreter reads it: in the encoding its BOM or `# coding:` line declares
    (PEP 263), so that `# coding: raw_unicode_escape` turns a `\\u000a` in a comment into a new line; UTF-8
    with replacement where that codec is unknown or fails (the interpreter refuses such a file)."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        return data.decode(encoding)
    except (SyntaxError, LookupError, ValueError):  # UnicodeDecodeError is a ValueError
        return data.decode("utf-8", errors="replace")


def split_entry(entry: str) -> tuple[str, str | None]:
    """`train.py::test` -> ("train.py", "test"); a plain path -> (path, None), unchanged."""
    path, separator, qualname = entry.partition(SEPARATOR)
    if not separator:
        return entry, None
    if not all(part.isidentifier() and not keyword.iskeyword(part) for part in qualname.split(".")):
        raise ProtectionError(f"{entry!r}: {qualname!r} is not a dotted name such as test or GCN.forward")
    path = posixpath.normpath(path) if path else ""
    if not path.endswith(".py") or path.startswith(("/", "../")):
        raise ProtectionError(f"{entry!r}: a protected function, class or method needs a .py file of the repository before '::'")
    return path, qualname


def describe(symbol: str) -> str:
    path, qualname = split_entry(symbol)
    return path if qualname is None else f"`{qualname}` in {path}"


def covered_files(digests: Iterable[str]) -> set[str]:
    return {split_entry(symbol)[0] for symbol in digests}


def symbol_digests(sources: Mapping[str, str], entries: Iterable[str]) -> dict[str, str]:
    """Each protected symbol and everything in the repository it depends on, `path::qualname` -> sha256.
    Raises ProtectionError, and nothing else, where an entry names nothing or the code it needs cannot be read."""
    repository = _Repository(sources)
    pending: list[Symbol] = []
    for entry in entries:
        path, qualname = split_entry(entry)
        if qualname is not None:
            with _reading(entry):
                repository.require(path, qualname)
            pending.append((path, qualname))
    digests: dict[str, str] = {}
    while pending:
        path, qualname = pending.pop()
        symbol = f"{path}{SEPARATOR}{qualname}"
        if symbol not in digests:
            with _reading(symbol):
                records = repository.records(path, qualname)
                digests[symbol] = _digest(records)
                pending.extend(repository.dependencies(records))
    return dict(sorted(digests.items()))


def changed_symbols(before: Mapping[str, str], after: Mapping[str, str], digests: Mapping[str, str]) -> list[tuple[str, str]]:
    """(symbol, why) for each recorded symbol that the sources `after` a patch no longer match. Code that
    cannot be checked counts as a change: a file gone, or one the patch changed that cannot be parsed."""
    parses = _Parses()
    then = _Repository(before, parses)
    now = _Repository(after, parses, baseline=then.sources)
    changes = []
    for symbol, recorded in digests.items():
        path, qualname = split_entry(symbol)
        if qualname is None:
            continue
        try:
            with _reading(symbol):
                records = now.records(path, qualname)
                digest = _digest(records)
        except ProtectionError as error:  # the file is gone or no longer parses, or a write to it may hide in one
            changes.append((symbol, str(error)))
            continue
        if digest != recorded:
            changes.append((symbol, _explain(then, path, qualname, records)))
    return sorted(changes)


def _failure(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


@contextmanager
def _reading(symbol: str) -> Iterator[None]:
    """Code too deep or too large to walk is a ProtectionError about the symbol, not a crash."""
    try:
        yield
    except _PATHOLOGICAL as error:
        raise ProtectionError(f"{describe(symbol)} could not be read: {_failure(error)}") from None


def _explain(then: _Repository, path: str, qualname: str, records: list[_Record]) -> str:
    try:
        earlier = then.records(path, qualname)
        _counted(earlier)
    except (ProtectionError, *_PATHOLOGICAL):
        return "its code changed"
    if _defines(earlier, qualname) and not _defines(records, qualname):
        return f"it is no longer defined in {path}"
    added, removed = _counted(records) - _counted(earlier), _counted(earlier) - _counted(records)
    if added and not removed:
        kind, where, _ = min(added)
        return f"a new {kind} of it in {where}"
    return f"its code changed in {', '.join(sorted({where for _, where, _ in added | removed}))}"


def _counted(records: list[_Record]) -> Counter[tuple[str, str, str]]:
    return Counter((record.kind, record.path, record.canonical) for record in records)


def _digest(records: list[_Record]) -> str:
    text = "\n\n".join([DIGEST_VERSION, *(record.canonical for record in records)])
    return hashlib.sha256(text.encode()).hexdigest()


def _defines(records: list[_Record], qualname: str) -> bool:
    return any(record.kind == "binding" and record.qualname == qualname for record in records)


# ---------------------------------------------------------------- what the code says


def _canonical(node: object) -> str:
    """The node's structure without positions; None and empty fields are left out."""
    if isinstance(node, ast.AST):
        fields = (f"{name}={_canonical(value)}" for name in node._fields if (value := getattr(node, name, None)) not in (None, []))
        return f"{type(node).__name__}({', '.join(fields)})"
    if isinstance(node, list):
        return f"[{', '.join(map(_canonical, node))}]"
    return repr(node)


def _read_chain(node: ast.AST) -> Chain | None:
    attributes = []
    while isinstance(node, ast.Attribute):
        attributes.append(node.attr)
        node = node.value
    return (node.id, *reversed(attributes)) if isinstance(node, ast.Name) else None


def _whole(chain: Chain) -> Chain:
    """`utils.__dict__` is utils itself: a write through a namespace is a write to its object."""
    return chain[: next((i for i, part in enumerate(chain) if i and part == "__dict__"), len(chain))]


def _mentions(roots: list[ast.AST], shadowed: frozenset[str] = frozenset()) -> set[Chain]:
    """The objects of module scope the roots name, each by its longest chain: `f(utils.accuracy, x)` names f,
    utils.accuracy and x; a lambda or comprehension names everything it reads, a definition what it holds (its
    decorators, defaults and class attributes: not a function's body, nor the bases, whose members a class's
    members are followed to on their own)."""
    chains: set[Chain] = set()
    inner: set[int] = set()  # the bases of chains taken already: utils in utils.accuracy
    for node in _walk_scope(roots):
        if isinstance(node, ast.ClassDef):
            chains |= _mentions(node.body, shadowed)
            inner.update(map(id, node.bases))
        elif isinstance(node, _SCOPES) and not isinstance(node, _FUNCTIONS):
            chains |= _reads(_inner_parts(node), *_nested_scope(node, shadowed))
        elif isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Load):
            if id(node) not in inner and (chain := _read_chain(node)) and chain[0] not in shadowed:
                chains.add(_whole(chain))
            if isinstance(node, ast.Attribute):
                inner.add(id(node.value))
    return chains


def _part_of(node: ast.AST) -> set[Chain]:
    """The named objects an expression may be part of: `a.x[0].y` is part of a.x, `utils.__dict__[k]` of utils;
    any other expression of whatever it names: `[labels][0]`, `labels.view(-1)`, `(u := utils)` and
    `nullcontext(labels)` of labels or utils, and `a[i][j]` of i as well (an index may return itself)."""
    attributes: list[str] = []
    keys: list[ast.AST] = []
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        if isinstance(node, ast.Subscript):
            keys.append(node.slice)
        attributes = [node.attr, *attributes] if isinstance(node, ast.Attribute) and node.attr != "__dict__" else []
        node = node.value
    named = {(node.id, *attributes)} if isinstance(node, ast.Name) else _mentions([node])
    return named | _mentions(keys)


_NAMESPACE_WRITES = {"update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__", "__ior__"}


def _attribute_setters(call: ast.Call) -> list[tuple[ast.expr, ast.expr | None]]:
    """(object, name) for each attribute a call may set or delete: `setattr(o, n, v)`, `delattr(o, n)`,
    `o.__setattr__(n, v)`, and `object.__setattr__(o, n, v)` or `type.__delattr__(o, n)` (told apart by
    their number of arguments; with `*args`, both)."""
    func, args = call.func, call.args
    if not args:
        return []
    unbound = (args[0], args[1] if len(args) > 1 else None)
    if isinstance(func, ast.Name) and func.id in ("setattr", "delattr"):
        return [unbound]
    if not isinstance(func, ast.Attribute) or func.attr not in ("__setattr__", "__delattr__"):
        return []
    starred = any(isinstance(argument, ast.Starred) for argument in args)
    is_unbound = len(args) == (3 if func.attr == "__setattr__" else 2)
    return [*([unbound] if starred or is_unbound else []), *([(func.value, args[0])] if starred or not is_unbound else [])]


def _written(node: ast.AST) -> set[Chain]:
    """What a node writes through: `utils.accuracy = f` and `setattr(utils, "accuracy", f)` write
    utils.accuracy, `labels[i] = 0` and `[labels][0][i] = 0` labels, `utils.__dict__.update(...)` all of utils."""
    if isinstance(node, (ast.Attribute, ast.Subscript)) and isinstance(node.ctx, (ast.Store, ast.Del)):
        return _part_of(node.value if isinstance(node, ast.Subscript) else node)  # the index written is no part of it
    if not isinstance(node, ast.Call):
        return set()
    chains: set[Chain] = set()
    for target, name in _attribute_setters(node):
        named = isinstance(name, ast.Constant) and isinstance(name.value, str)  # a computed name: all of the object
        chains |= _part_of(ast.Attribute(target, name.value, ast.Store()) if named else target)
    func = node.func
    if isinstance(func, ast.Attribute) and func.attr in _NAMESPACE_WRITES:
        namespace = func.value  # `utils.__dict__.update(accuracy=f)`, `vars(utils).update(...)`
        if (isinstance(namespace, ast.Attribute) and namespace.attr == "__dict__") or (
            isinstance(namespace, ast.Call) and isinstance(namespace.func, ast.Name) and namespace.func.id == "vars"
        ):
            chains |= _part_of(namespace)
    return chains


def _aliased(record: _Record) -> list[tuple[Chain, bool]]:
    """What a module-level binding may make its name, each with whether exactly: `u = utils` (or `u: T = v =
    utils`) makes u utils itself; any other binding may make it part of whatever it names, as `for L in
    (labels,)`, `(L,) = (labels,)`, `L = labels.view(-1)` and `with nullcontext(labels) as L` do."""
    node = record.node
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    if any(isinstance(target, ast.Name) and target.id == record.qualname for target in targets) and node.value is not None:
        source = _read_chain(node.value)
        if source and source[0] not in record.shadowed:
            return [(_whole(source), True)]
    roots = [node] if node is not None else [part for _, part in record.headers if part is not None]  # `for L in ...`
    return [(chain, False) for chain in sorted(_mentions(roots, record.shadowed))]


def _binds(node: ast.AST) -> set[str]:
    """The names one node binds in the scope it stands in ("*" for a star import)."""
    if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
        return {node.id}
    if isinstance(node, _DEFINITIONS):
        return {node.name}
    if isinstance(node, ast.alias):
        return {node.asname or node.name.split(".")[0]}
    if isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
        return {node.name}
    if isinstance(node, ast.MatchMapping) and node.rest:
        return {node.rest}
    if isinstance(node, ast.Nonlocal):
        return set(node.names)
    return set()


def _parameters(scope: ast.AST) -> list[ast.arg]:
    if not isinstance(scope, (*_FUNCTIONS, ast.Lambda)):
        return []
    arguments = scope.args
    every = (*arguments.posonlyargs, *arguments.args, arguments.vararg, *arguments.kwonlyargs, arguments.kwarg)
    return [argument for argument in every if argument is not None]


def _outer_parts(scope: ast.AST) -> list[ast.AST]:
    """What a definition evaluates where it stands: decorators, defaults, annotations, base classes."""
    if isinstance(scope, ast.ClassDef):
        return [*scope.decorator_list, *scope.bases, *scope.keywords]
    if not isinstance(scope, (*_FUNCTIONS, ast.Lambda)):
        return []  # a comprehension is walked whole, as its own scope
    parts: list[ast.AST] = [*scope.args.defaults, *(value for value in scope.args.kw_defaults if value is not None)]
    if isinstance(scope, _FUNCTIONS):
        parts += [*scope.decorator_list, *(a.annotation for a in _parameters(scope) if a.annotation is not None)]
        parts += [scope.returns] if scope.returns is not None else []
    return parts


def _inner_parts(scope: ast.AST) -> list[ast.AST]:
    if isinstance(scope, (ast.Module, *_DEFINITIONS)):
        return list(scope.body)
    return [scope.body] if isinstance(scope, ast.Lambda) else list(ast.iter_child_nodes(scope))


def _walk_scope(roots: list[ast.AST]) -> Iterator[ast.AST]:
    """Every node evaluated in the roots' scope: nested definitions are visited, their bodies are not."""
    stack = list(roots)
    while stack:
        node = stack.pop()
        yield node
        stack.extend(_outer_parts(node) if isinstance(node, _SCOPES) else ast.iter_child_nodes(node))


def _scope_names(scope: ast.AST) -> tuple[frozenset[str], frozenset[str]]:
    """(names local to a function, class or comprehension, names it declares global)."""
    bound = {argument.arg for argument in _parameters(scope)}
    declared: set[str] = set()
    for node in _walk_scope(_inner_parts(scope)):
        bound |= _binds(node)
        if isinstance(node, ast.Global):
            declared.update(node.names)
    return frozenset(bound - declared), frozenset(declared)


def _nested_scope(scope: ast.AST, outer: frozenset[str]) -> tuple[frozenset[str], frozenset[str]]:
    """(names shadowed inside scope, names shadowed for the functions nested in it): a class's names are not theirs."""
    bound, declared = _scope_names(scope)
    inside = (outer | bound) - declared
    return inside, (outer - declared if isinstance(scope, ast.ClassDef) else inside)


def _reads(roots: list[ast.AST], shadowed: frozenset[str] = frozenset(), for_nested: frozenset[str] | None = None) -> set[Chain]:
    """Chains the roots read from module scope; `shadowed` are the names bound around them."""
    chains: set[Chain] = set()
    for node in _walk_scope(roots):
        if isinstance(node, _SCOPES):
            chains |= _reads(_inner_parts(node), *_nested_scope(node, shadowed if for_nested is None else for_nested))
        elif isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Load):
            chain = _read_chain(node)
            if chain and chain[0] not in shadowed:
                chains.add(chain)
    return chains


def _writes(tree: ast.Module) -> Iterator[tuple[Chain, ast.AST, frozenset[str], list[ast.stmt]]]:
    """(chain, statement, names local around it, local imports of its root) for each write through a name
    of module scope, or through a module imported in a function (`import utils; utils.accuracy = f`)."""
    names: ScopeNames = {}
    stack: list[tuple[ast.AST, ast.AST | None, tuple[ast.AST, ...]]] = [(node, None, ()) for node in tree.body]
    while stack:
        node, statement, scopes = stack.pop()
        statement = node if isinstance(node, ast.stmt) else statement
        if isinstance(node, _SCOPES):
            stack.extend((part, statement, scopes) for part in _outer_parts(node))
            stack.extend((part, statement, (*scopes, node)) for part in _inner_parts(node))
            continue
        for chain in sorted(_written(node)):
            if (found := _lookup(chain[0], scopes, names)) is not None:
                yield chain, statement or node, *found
        stack.extend((child, statement, scopes) for child in ast.iter_child_nodes(node))


def _lookup(name: str, scopes: tuple[ast.AST, ...], names: ScopeNames) -> tuple[frozenset[str], list[ast.stmt]] | None:
    """(names local around a use of `name`, the imports that bind it locally), or None when it is a plain local."""
    if scopes and name in {argument.arg for argument in _parameters(scopes[-1])}:
        return None  # `self.x = ...`, the common case, without walking the function
    visible = [scope for depth, scope in enumerate(reversed(scopes)) if depth == 0 or not isinstance(scope, ast.ClassDef)]
    imports: list[ast.stmt] = []
    for scope in visible:
        bound, declared = names[scope] if scope in names else names.setdefault(scope, _scope_names(scope))
        if name in declared:
            break
        if name in bound:
            nodes = _walk_scope(_inner_parts(scope))
            imports = [node for node in nodes if isinstance(node, (ast.Import, ast.ImportFrom)) and name in _names_bound_by(node)]
            if not imports:
                return None
            break
    return frozenset().union(*(names[scope][0] for scope in visible if scope in names)), imports


def _blocks(statement: ast.stmt) -> list[tuple[list[Header], list[ast.stmt]]] | None:
    """The bodies of a compound statement, each with the headers that decide whether it runs."""
    if isinstance(statement, (ast.If, ast.While)):
        kind = type(statement).__name__.lower()
        return [([(kind, statement.test)], statement.body), ([(f"{kind} not", statement.test)], statement.orelse)]
    if isinstance(statement, (ast.For, ast.AsyncFor)):
        loop: list[Header] = [("for", statement.target), ("in", statement.iter)]
        return [(loop, statement.body), ([*loop, ("else", None)], statement.orelse)]
    if isinstance(statement, (ast.With, ast.AsyncWith)):
        return [([("with", item) for item in statement.items], statement.body)]
    if isinstance(statement, (ast.Try, ast.TryStar)):
        handlers = [
            ([("except", handler.type), ("as", ast.Name(handler.name, ast.Store()) if handler.name else None)], handler.body)
            for handler in statement.handlers
        ]
        return [([("try", None)], statement.body), *handlers, ([("try else", None)], statement.orelse), ([("finally", None)], statement.finalbody)]
    if isinstance(statement, ast.Match):
        return [([("match", statement.subject), ("case", case.pattern), ("if", case.guard)], case.body) for case in statement.cases]
    return None


def _names_bound_by(node: ast.AST) -> set[str]:
    if isinstance(node, _DEFINITIONS):
        return {node.name}
    return set().union(*map(_binds, _walk_scope([node])))


def _block_bindings(body: list[ast.stmt], headers: tuple[Header, ...] = ()) -> Iterator[tuple[str, tuple[Header, ...], ast.AST | None]]:
    """(name, headers, statement) for each binding in a block's own scope, in source order; a header that
    binds (`for x in`, `except E as x`) comes with statement None."""
    for statement in body:
        blocks = _blocks(statement)
        if blocks is None:
            yield from ((name, headers, statement) for name in sorted(_names_bound_by(statement)))
            continue
        for block_headers, block in blocks:
            inner = (*headers, *block_headers)
            bound = {name for _, part in block_headers if part is not None for name in _names_bound_by(part)}
            yield from ((name, inner, None) for name in sorted(bound))
            yield from _block_bindings(block, inner)


def _receiver_attributes(function: ast.AST, *, stored_only: bool = False) -> set[str]:
    """Attributes a method uses through its first parameter (`self.helper`) or, unless stored_only, `super()`."""
    if not isinstance(function, _FUNCTIONS):
        return set()
    parameters = [*function.args.posonlyargs, *function.args.args]
    static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in function.decorator_list)
    receiver = parameters[0].arg if parameters and not static else None
    attributes = set()
    for node in ast.walk(function):
        if not isinstance(node, ast.Attribute) or (stored_only and not isinstance(node.ctx, ast.Store)):
            continue
        through_super = isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name) and node.value.func.id == "super"
        if (isinstance(node.value, ast.Name) and node.value.id == receiver) or (through_super and not stored_only):
            attributes.add(node.attr)
    return attributes


# ---------------------------------------------------------------- the repository


@dataclass(frozen=True)
class _ModuleRef:
    key: str  # "pkg/utils": a module or package, without .py


@dataclass(frozen=True)
class _Definition:
    path: str
    qualname: str


@dataclass(eq=False)
class _Record:
    """One thing a digest covers: a binding of the name, its container's header, or a write through it."""

    kind: str  # "binding", "header", "global write", "star import" or "write"
    path: str  # the file the code stands in
    qualname: str
    node: ast.AST | None
    headers: tuple[Header, ...] = ()
    targets: tuple[_ModuleRef | _Definition, ...] = ()  # what an import binds the name to
    method_of: str | None = None  # the class, when the record defines one of its methods
    shadowed: frozenset[str] = frozenset()  # names local where the code stands (a function's, for a global write)
    label: str = ""

    @cached_property  # computed only for the symbols a digest covers, not for every file searched for writes
    def canonical(self) -> str:
        headers = (f"{label} {_canonical(part)}" for label, part in self.headers)
        return "\n".join([self.label or self.kind, *headers, _canonical(self.node), *map(repr, self.targets)])

    @cached_property
    def aliases(self) -> list[tuple[Chain, bool]]:
        return _aliased(self)

    @cached_property
    def reads(self) -> frozenset[Chain]:
        roots = [part for _, part in self.headers if part is not None] + ([self.node] if self.node is not None else [])
        return frozenset(_reads(roots, self.shadowed))


def _join(*parts: str) -> str:
    return "/".join(part for part in parts if part)


class _Module:
    """One parsed file's bindings of module scope, by name, in source order."""

    def __init__(self, repository: _Repository, path: str, tree: ast.Module) -> None:
        self.repository, self.path, self.tree = repository, path, tree

    @cached_property  # most files are only searched for writes, and need no bindings
    def bindings(self) -> dict[str, list[_Record]]:
        bindings: dict[str, list[_Record]] = defaultdict(list)
        for name, headers, node in _block_bindings(self.tree.body):
            bindings[name].append(self.repository.record("binding", self.path, name, headers, node))
        declares_globals = "global" in self.repository.sources[self.path]
        for function in ast.walk(self.tree) if declares_globals else ():  # `global test; test = fake` in a function rebinds test
            local, declared = _scope_names(function) if isinstance(function, _DEFINITIONS) else (frozenset(), frozenset())
            for name, headers, node in _block_bindings(function.body) if declared else ():
                if name in declared:
                    where = ((f"in {function.name}", None), *headers)
                    bindings[name].append(self.repository.record("global write", self.path, name, where, node, local))
        return bindings

    def bindings_of(self, name: str) -> list[_Record]:
        found = list(self.bindings.get(name, []))
        for star in self.bindings.get("*", []):  # a star import may bind any name: follow it there, present or not
            files = (self.repository.module_file(target.key) for target in star.targets if isinstance(target, _ModuleRef))
            targets = tuple(_Definition(file, name) for file in files if file)
            found.append(_Record("star import", self.path, name, star.node, star.headers, targets, label=f"star import for {name}"))
        return found


class _Parses:
    """Trees and the writes found in them, shared by the sources before and after a patch (most files are the same)."""

    def __init__(self) -> None:
        self.trees: dict[tuple[str, str], ast.Module | ProtectionError] = {}
        self.found_writes: dict[int, list[tuple[Chain, ast.AST, frozenset[str], list[ast.stmt]]] | ProtectionError] = {}

    def tree(self, path: str, text: str) -> ast.Module | ProtectionError:
        if (path, text) not in self.trees:
            try:
                self.trees[path, text] = ast.parse(text, filename=path)
            except (SyntaxError, ValueError) as error:  # ValueError: null bytes, lone surrogates
                self.trees[path, text] = ProtectionError(f"{path} does not parse: line {getattr(error, 'lineno', '?')}: {getattr(error, 'msg', error)}")
            except _PATHOLOGICAL as error:  # `x = -----...1`, `a + a + ...` 3000 times
                self.trees[path, text] = ProtectionError(f"{path} could not be parsed: {_failure(error)}")
        return self.trees[path, text]

    def writes(self, path: str, tree: ast.Module) -> list[tuple[Chain, ast.AST, frozenset[str], list[ast.stmt]]]:
        if id(tree) not in self.found_writes:  # the trees are kept alive in self.trees, so an id is never reused
            try:
                self.found_writes[id(tree)] = list(_writes(tree))
            except _PATHOLOGICAL as error:
                self.found_writes[id(tree)] = ProtectionError(f"{path} could not be searched for writes: {_failure(error)}")
        found = self.found_writes[id(tree)]
        if isinstance(found, ProtectionError):
            raise found
        return found


class _Repository:
    """The repository's Python files, each parsed at most once."""

    def __init__(self, sources: Mapping[str, str], parses: _Parses | None = None, baseline: Mapping[str, str] | None = None) -> None:
        self.sources = {posixpath.normpath(path): text for path, text in sources.items() if path.endswith(".py")}
        self.parses = parses or _Parses()
        self.baseline = baseline  # the sources the digests were made from, where these are a patched copy
        self.unsearched: list[str] = []  # why a file that differs from the baseline could not be searched for writes
        self.folders = {""} | {posixpath.dirname(path) for path in self.sources}
        for folder in list(self.folders):
            while folder:
                folder = posixpath.dirname(folder)
                self.folders.add(folder)
        self.modules: dict[str, _Module | ProtectionError] = {}
        self.write_index: dict[str, list[tuple[str, _Record]]] | None = None

    def module(self, path: str) -> _Module:
        if path not in self.modules:
            if path not in self.sources:
                self.modules[path] = ProtectionError(f"{path} is not a Python file of the repository")
            else:
                tree = self.parses.tree(path, self.sources[path])
                self.modules[path] = tree if isinstance(tree, ProtectionError) else _Module(self, path, tree)
        found = self.modules[path]
        if isinstance(found, ProtectionError):
            raise found
        return found

    def module_file(self, key: str) -> str | None:
        return next((file for file in (_join(key, "__init__.py"), f"{key}.py") if file in self.sources), None)

    def module_exists(self, key: str) -> bool:
        return key in self.folders or self.module_file(key) is not None

    def module_keys(self, importer: str, parts: list[str], level: int) -> list[str]:
        """Where an import finds a repository module: relative to the importer's package, or else in the
        importer's folder (a script's folder comes first on sys.path) and in the root."""
        folder = posixpath.dirname(importer)
        if level:
            for _ in range(level - 1):
                if not folder:
                    return []
                folder = posixpath.dirname(folder)
            return [key] if self.module_exists(key := _join(folder, *parts)) else []
        return [key for base in dict.fromkeys([folder, ""]) if self.module_exists(key := _join(base, *parts))]

    def import_targets(self, importer: str, statement: ast.Import | ast.ImportFrom, name: str) -> tuple[_ModuleRef | _Definition, ...]:
        targets: list[_ModuleRef | _Definition] = []
        for alias in statement.names:
            if _binds(alias) != {name}:
                continue
            if isinstance(statement, ast.Import):
                parts = alias.name.split(".")
                targets += [_ModuleRef(key) for key in self.module_keys(importer, parts if alias.asname else parts[:1], 0)]
                continue
            for key in self.module_keys(importer, statement.module.split(".") if statement.module else [], statement.level):
                if alias.name == "*":
                    targets.append(_ModuleRef(key))
                    continue
                if file := self.module_file(key):  # `from pkg import x` reads pkg's attribute x first,
                    targets.append(_Definition(file, alias.name))
                if self.module_exists(submodule := _join(key, alias.name)):  # and falls back to pkg/x.py
                    targets.append(_ModuleRef(submodule))
        return tuple(targets)

    def record(
        self, kind: str, path: str, qualname: str, headers: tuple[Header, ...], node: ast.AST | None,
        shadowed: frozenset[str] = frozenset(), method_of: str | None = None,
    ) -> _Record:
        name, targets = qualname.rpartition(".")[2], ()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            targets = self.import_targets(path, node, name)
            node = copy.copy(node)  # only the alias that binds the name: importing one more helper on its line is no change
            node.names = [alias for alias in node.names if _binds(alias) == {name}]
        return _Record(kind, path, qualname, node, headers, targets, method_of, shadowed)

    def records(self, path: str, qualname: str) -> list[_Record]:
        """Everything the digest of path::qualname covers, in a fixed order."""
        parts = qualname.split(".")
        found = self.module(path).bindings_of(parts[0])
        for depth in range(1, len(parts)):
            container, inner = ".".join(parts[:depth]), []
            for record in found:
                if record.kind != "binding" or record.qualname != container or not isinstance(record.node, _DEFINITIONS):
                    inner.append(record)  # any other binding of the container replaces it wholesale
                    continue
                definition = record.node
                header = definition  # a function's whole body is its nested definitions' context, a class's header is
                if isinstance(definition, ast.ClassDef):
                    header = ast.ClassDef(definition.name, definition.bases, definition.keywords, [], definition.decorator_list)
                inner.append(self.record("header", path, container, record.headers, header))
                owner = container if isinstance(definition, ast.ClassDef) else None
                for name, headers, node in _block_bindings(definition.body):
                    if name == parts[depth]:
                        method_of = owner if isinstance(node, _FUNCTIONS) else None
                        inner.append(self.record("binding", path, f"{container}.{name}", headers, node, method_of=method_of))
            found = inner
        writes = self.writes()
        if self.unsearched:  # a write to it may hide there
            more = f" (and {len(self.unsearched) - 1} more files)" if len(self.unsearched) > 1 else ""
            raise ProtectionError(f"{self.unsearched[0]}{more}")
        for written, write in writes.get(path, []):  # a write to it, into it (GCN.forward.__code__), to all of it or all its file
            if written in (qualname, "*") or written.startswith(f"{qualname}.") or qualname.startswith(f"{written}."):
                found.append(write)
        found += [write for written, write in writes.get("*", []) if written in (parts[0], "*")]
        return list(dict.fromkeys(found))

    def require(self, path: str, qualname: str) -> None:
        if _defines(self.records(path, qualname), qualname):
            return
        container = qualname.rpartition(".")[0]
        containers: list[ast.AST] = [self.module(path).tree]
        if container:
            containers = [record.node for record in self.records(path, container) if record.kind == "binding" and isinstance(record.node, _DEFINITIONS)]
        found = dict.fromkeys(node.name for scope in containers for _, _, node in _block_bindings(scope.body) if isinstance(node, _DEFINITIONS))
        where = f" in {container}" if container else ""
        raise ProtectionError(f"{path} has no function or class {qualname!r} (found{where}: {', '.join(found) or 'none'})")

    def through(self, target: _ModuleRef | _Definition, attributes: Chain, *, written: bool = False) -> Iterator[Symbol]:
        """What an import target leads to by attribute access: `U.accuracy` after `import pkg.utils as U`; for
        a write to a module itself (`setattr(utils, name, f)`), all of its files ("*")."""
        if isinstance(target, _Definition):
            yield target.path, ".".join([target.qualname, *attributes])
        elif attributes:
            if file := self.module_file(target.key):
                yield from self.through(_Definition(file, attributes[0]), attributes[1:], written=written)
            if self.module_exists(submodule := _join(target.key, attributes[0])):
                yield from self.through(_ModuleRef(submodule), attributes[1:], written=written)
        elif written:
            yield from ((path, "*") for path in self.sources if path == f"{target.key}.py" or path.startswith(f"{target.key}/"))

    def resolve(self, path: str, chain: Chain) -> Iterator[Symbol]:
        """The definitions a chain read in path may denote: the name in that module, and where its imports lead."""
        yield path, chain[0]
        for record in self.module(path).bindings_of(chain[0]):
            for target in record.targets:
                yield from ((file, qualname.split(".")[0]) for file, qualname in self.through(target, chain[1:]))

    def written(self, path: str, chain: Chain) -> Iterator[Symbol]:
        """What a write through chain in path changes, through imports and module-level aliases: after `u = utils`
        one to u.accuracy is one to utils.accuracy, after `for L in (labels,)` one to L[i] is one to labels."""
        pending = [chain]
        followed: dict[str, Chain] = {}  # name -> the attributes followed through it
        while pending:
            chain = pending.pop()
            name, attributes = chain[0], chain[1:]
            if name in followed:
                if attributes[: len(followed[name])] == followed[name]:
                    continue  # a write to it, or to all of it, is followed already
                attributes = ()  # reached a second way: follow all of it, which ends the search
            followed[name] = attributes
            yield path, ".".join((name, *attributes))
            for record in self.module(path).bindings_of(name):
                for target in record.targets:
                    yield from self.through(target, attributes, written=True)
                pending += [(*source, *attributes) if exact else source for source, exact in record.aliases]

    def writes(self) -> dict[str, list[tuple[str, _Record]]]:
        """Writes through names anywhere in the repository: by file written to, (qualname written, write).
        A file that cannot be parsed or searched is left out where the baseline has it as it is (such a file
        cannot be imported, or was trusted when the digests were made); otherwise it is in `unsearched`."""
        if self.write_index is None:
            self.write_index = defaultdict(list)
            for path in sorted(self.sources):
                try:
                    found = list(self.file_writes(path))
                except (ProtectionError, *_PATHOLOGICAL) as error:
                    if self.baseline is not None and self.baseline.get(path) != self.sources[path]:
                        self.unsearched.append(str(error) if isinstance(error, ProtectionError) else f"{path} could not be searched for writes: {_failure(error)}")
                    continue
                for written_path, qualname, write in found:
                    self.write_index[written_path].append((qualname, write))
        return self.write_index

    def file_writes(self, path: str) -> Iterator[tuple[str, str, _Record]]:
        for chain, statement, shadowed, local_imports in self.parses.writes(path, self.module(path).tree):
            write = _Record("write", path, ".".join(chain), statement, shadowed=shadowed, label=f"write in {path}")
            # `builtins.len = f` changes `len` in every module; `__builtins__[name] = f` any name
            if chain[0] in ("builtins", "__builtins__"):
                written: Iterable[Symbol] = [("*", ".".join(chain[1:2]) or "*")]
            elif local_imports:
                targets = (target for imported in local_imports for target in self.import_targets(path, imported, chain[0]))
                written = [symbol for target in targets for symbol in self.through(target, chain[1:], written=True)]
            else:
                written = self.written(path, chain)
            yield from ((written_path, qualname, write) for written_path, qualname in dict.fromkeys(written))

    def dependencies(self, records: list[_Record]) -> Iterator[Symbol]:
        for record in records:
            yield from ((target.path, target.qualname) for target in record.targets if isinstance(target, _Definition))
            owner = record.method_of.split(".") if record.method_of else []
            for chain in sorted(record.reads):
                if owner and list(chain[: len(owner)]) == owner:  # `super(GCN, self)` in a method of GCN: the class's
                    if len(chain) > len(owner):  # bindings are in the method's digest already, its members are followed one by one
                        yield from self.members(record.path, record.method_of, chain[len(owner)], set())
                    continue
                yield from self.resolve(record.path, chain)
            if record.method_of is not None:
                for attribute in sorted(_receiver_attributes(record.node)):
                    yield from self.members(record.path, record.method_of, attribute, set())

    def members(self, path: str, class_qualname: str, attribute: str, seen: set[tuple[str, str, str]]) -> Iterator[Symbol]:
        """What `self.attribute` may be in a method of the class: its member, the methods that assign it, or a base's."""
        if (path, class_qualname, attribute) in seen:
            return
        seen.add((path, class_qualname, attribute))
        member = f"{class_qualname}.{attribute}"
        yield path, member
        records = self.records(path, class_qualname)
        classes = [record.node for record in records if record.kind == "binding" and isinstance(record.node, ast.ClassDef)]
        for definition in classes:
            for name, _, node in _block_bindings(definition.body):
                if attribute in _receiver_attributes(node, stored_only=True):
                    yield path, f"{class_qualname}.{name}"
        if _defines(self.records(path, member), member):
            return
        bases = [chain for definition in classes for base in definition.bases if (chain := _read_chain(base))]
        for base_path, base_qualname in (symbol for chain in bases for symbol in self.resolve(path, chain)):
            if any(isinstance(record.node, ast.ClassDef) for record in self.records(base_path, base_qualname)):
                yield from self.members(base_path, base_qualname, attribute, seen)
