"""What a study function's numbers depend on in the user's own code, hashed.

A method's fingerprint covers its own code and everything of the user's it
can reach: the functions it calls (recursively), the module constants and
classes it reads, its default arguments and closure values, and the user's
own modules it uses (hashed whole, by source). Library code (numpy, scipy,
...) is left out: the store records library versions separately. Code is
hashed by its tokens without comments, blank lines, docstrings or the
decorator lines, so an edit of a comment or of whitespace changes nothing.

``reach(func)`` returns the parts, labelled for messages
(``"function 'interval'"``, ``"global 'Z'"``, ``"module 'helpers'"``);
``digest(parts)`` folds them into one hash; ``explain(old, new)`` says what
changed. The code objects are read with ``dis`` and the source with
``tokenize``; nothing of the user's is parsed into a syntax tree.
"""

from __future__ import annotations

import dis
import functools
import hashlib
import inspect
import io
import os
import pickle
import sys
import sysconfig
import tokenize
import types
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = ["digest", "explain", "legacy_hash", "reach", "user_file", "value_hash"]

_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}


def _hash(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()[:16]


def legacy_hash(func: Callable[..., Any]) -> str:
    """The hash format 1 stores kept: of the raw source (or the bytecode)."""
    try:
        text = inspect.getsource(func)
    except (OSError, TypeError):
        code = getattr(func, "__code__", None)
        text = repr(code.co_code if code is not None else func)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _tokens(source: str) -> str:
    """Source as tokens: no comments, blank lines, docstrings or decorators;
    indentation as structure, not as a number of spaces."""
    out: list[str] = []
    started = False  # decorators skipped until the def / class
    expect_doc = False
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in _SKIP:
                continue
            if not started:
                if (tok.type == tokenize.NAME and tok.string in ("def", "class")) or (
                    tok.type == tokenize.NAME and tok.string == "lambda"
                ):
                    started = True
                else:
                    continue
            if tok.type == tokenize.INDENT:
                out.append("<indent>")
                expect_doc = True
                continue
            if expect_doc and tok.type == tokenize.STRING:
                expect_doc = False
                continue  # a docstring
            if tok.type not in (tokenize.NEWLINE, tokenize.DEDENT):
                expect_doc = False
            out.append("<dedent>" if tok.type == tokenize.DEDENT else tok.string)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return source
    return " ".join(out)


def _code_text(obj: Any) -> str:
    """An object's code, by tokens of its source, or by its bytecode."""
    try:
        return _tokens(inspect.getsource(obj))
    except (OSError, TypeError):
        code = getattr(obj, "__code__", None)
        if code is None:
            return repr(obj)
        return _bytecode(code)


def _bytecode(code: types.CodeType) -> str:
    consts = [
        _bytecode(c) if isinstance(c, types.CodeType) else repr(c)
        for c in code.co_consts
    ]
    return f"{code.co_code.hex()}|{consts}|{code.co_names}"


def value_hash(value: Any) -> str:
    """A constant's hash: by value for numbers, text, containers and arrays."""
    return _hash(_value_bytes(value))


def _value_bytes(value: Any) -> bytes:
    if value is None or isinstance(value, bool | int | float | complex | str | bytes):
        return repr(value).encode()
    if isinstance(value, np.ndarray | np.generic):
        arr = np.asarray(value)
        if arr.dtype != object:
            return arr.dtype.str.encode() + repr(arr.shape).encode() + arr.tobytes()
    if isinstance(value, tuple | list):
        return b"(" + b",".join(_value_bytes(v) for v in value) + b")"
    if isinstance(value, set | frozenset):
        return b"{" + b",".join(sorted(_value_bytes(v) for v in value)) + b"}"
    if isinstance(value, dict):
        items = sorted(
            _value_bytes(k) + b":" + _value_bytes(v) for k, v in value.items()
        )
        return b"{" + b",".join(items) + b"}"
    try:
        return pickle.dumps(value, protocol=4)
    except Exception:
        return f"<{type(value).__module__}.{type(value).__qualname__}>".encode()


_LIBRARY = tuple(
    os.path.realpath(p)
    for p in {
        sysconfig.get_paths()["stdlib"],
        sysconfig.get_paths()["purelib"],
        sysconfig.get_paths()["platlib"],
        sys.prefix,
        sys.base_prefix,
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),  # simstudy
    }
)


def user_file(module: types.ModuleType | None) -> str | None:
    """The file of a module of the user's own (None: a library, or unknown)."""
    if module is None:
        return None
    path: str | None = getattr(module, "__file__", None)
    if path is None:
        return "" if module.__name__ == "__main__" else None  # a notebook, a REPL
    real = os.path.realpath(path)
    if any(real == lib or real.startswith(lib + os.sep) for lib in _LIBRARY):
        return None
    return real


def _is_user(obj: Any) -> bool:
    return user_file(sys.modules.get(getattr(obj, "__module__", "") or "")) is not None


def _global_names(code: types.CodeType) -> set[str]:
    """The names a code object (and the code nested in it) reads as globals."""
    names: set[str] = set()
    for ins in dis.get_instructions(code):
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and isinstance(ins.argval, str):
            names.add(ins.argval)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


class _Walk:
    """Collect the labelled parts a function reaches."""

    def __init__(self) -> None:
        self.parts: dict[str, str] = {}
        self.seen: set[int] = set()

    def function(self, func: Any, label: str) -> None:
        if id(func) in self.seen:
            return
        self.seen.add(id(func))
        text = _code_text(func)
        defaults = (
            getattr(func, "__defaults__", None),
            getattr(func, "__kwdefaults__", None),
        )
        self.parts[label] = _hash(text.encode() + _value_bytes(defaults))
        code = getattr(func, "__code__", None)
        if code is None:
            return
        scope = getattr(func, "__globals__", {})
        for name in sorted(_global_names(code)):
            if name in scope:
                self.value(name, scope[name])
        cells = getattr(func, "__closure__", None) or ()
        for name, cell in zip(code.co_freevars, cells, strict=False):
            try:
                self.value(name, cell.cell_contents)
            except ValueError:  # an empty cell
                continue

    def value(self, name: str, value: Any) -> None:
        if id(value) in self.seen or type(value).__name__ == "Study":
            return
        if isinstance(value, types.ModuleType):
            path = user_file(value)
            if path:
                self.seen.add(id(value))
                with open(path, encoding="utf-8", errors="replace") as f:
                    text = _tokens_module(f.read())
                self.parts[f"module {value.__name__!r}"] = _hash(text.encode())
            return
        if isinstance(value, functools.partial):
            self.value(name, value.func)
            self.parts[f"partial {name!r}"] = value_hash((value.args, value.keywords))
            return
        if inspect.isfunction(value) or inspect.ismethod(value):
            if _is_user(value):
                qual = getattr(value, "__qualname__", name)
                self.function(getattr(value, "__func__", value), f"function {qual!r}")
            return
        if inspect.isclass(value):
            if _is_user(value):
                self.user_class(value)
            return
        if callable(value) and not _is_user(type(value)):
            return  # a library callable: a ufunc, a builtin, a frozen distribution
        if _is_user(type(value)) and not isinstance(value, type):
            self.user_class(type(value))
        self.parts[f"global {name!r}"] = value_hash(value)

    def user_class(self, cls: type) -> None:
        if id(cls) in self.seen:
            return
        self.seen.add(id(cls))
        self.parts[f"class {cls.__qualname__!r}"] = _hash(_code_text(cls).encode())
        for attr in vars(cls).values():
            func = getattr(attr, "__func__", attr)
            if inspect.isfunction(func):
                self.function(func, f"function {func.__qualname__!r}")


def _tokens_module(source: str) -> str:
    """A whole module's tokens, comments and blank lines left out."""
    out: list[str] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in _SKIP:
                continue
            out.append(
                {tokenize.INDENT: "<indent>", tokenize.DEDENT: "<dedent>"}.get(
                    tok.type, tok.string
                )
            )
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return source
    return " ".join(out)


def reach(
    func: Callable[..., Any], fixed: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """The labelled hashes of what ``func`` reaches in the user's code.

    ``"itself"`` is the function's own code; ``fixed`` names the study's
    fixed inputs, hashed apart (and not again here).
    """
    walk = _Walk()
    for value in (fixed or {}).values():
        walk.seen.add(id(value))
    walk.function(func, "itself")
    return dict(sorted(walk.parts.items()))


def digest(parts: Mapping[str, str]) -> str:
    """One hash of a function's parts."""
    text = "\n".join(f"{k}={v}" for k, v in sorted(parts.items()))
    return _hash(text.encode())


def explain(old: Mapping[str, str], new: Mapping[str, str]) -> list[tuple[str, str]]:
    """What changed between two functions' parts: (label, "changed" | "is new"
    | "is no longer used"); the label ``"itself"`` is the function's own code."""
    out = []
    for label in sorted(set(old) | set(new)):
        before, after = old.get(label), new.get(label)
        if before == after:
            continue
        verb = (
            "is new"
            if before is None
            else "is no longer used"
            if after is None
            else "changed"
        )
        out.append((label, verb))
    return out
