"""A user's own ``nn.Module`` as a network to cost and time: ``PATH.py:FACTORY``.

``FACTORY`` is a callable without arguments in the Python file ``PATH`` that
returns the module. ``hw_profiles fit`` reads such models from its CSV, and
``costmodel validate --networks FILE`` from lines ``PATH.py:FACTORY CxHxW``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from costmodel._spec import LayerSpec
from costmodel._trace import trace_layers

__all__ = ["ModuleNetwork", "import_file", "load_factory", "parse_shape"]


def import_file(path: Path, prefix: str = "roofnas_user_") -> ModuleType:
    """The Python file at ``path``, imported once per process under a name of its own
    (``prefix`` + a hash of the path: two files both called ``model.py`` do not collide),
    kept in ``sys.modules`` (dataclasses and pickling look it up there), with the file's
    folder on ``sys.path`` while it runs so that it can import the modules beside it.
    Whatever the file raises propagates; nothing of a failed import is kept."""
    path = path.resolve()
    name = prefix + hashlib.sha1(str(path).encode()).hexdigest()[:16]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    finally:
        sys.path.remove(str(path.parent))
    return module


def load_factory(text: str, base_dir: Path = Path()) -> Callable[[], Any]:
    """The callable ``FACTORY`` of ``PATH.py:FACTORY``; a relative ``PATH`` that does not
    exist from the working directory is looked up under ``base_dir``."""
    path_text, sep, name = text.rpartition(":")
    if not sep or not path_text or not name:
        raise ValueError(f"model={text!r} must be FILE.py:FACTORY, e.g. mynet.py:build")
    path = Path(path_text)
    if not path.is_absolute() and not path.exists():
        path = base_dir / path
    if not path.is_file():
        raise ValueError(f"model={text!r}: file {path_text!r} does not exist")
    try:
        module = import_file(path, "roofnas_user_model_")
    except Exception as e:  # a user's file: any error is reported as theirs
        raise ValueError(
            f"model={text!r}: importing {path} failed: {type(e).__name__}: {e}"
        ) from None
    factory = getattr(module, name, None)
    if not callable(factory):
        found = sorted(
            k
            for k, v in vars(module).items()
            if callable(v)
            and not k.startswith("_")
            and getattr(v, "__module__", None) == module.__name__
        )
        raise ValueError(
            f"model={text!r}: factory {name!r} is not a callable in {path.name}; "
            f"callables defined there: {found}"
        )
    return factory


def parse_shape(text: str, field_name: str = "input_shape") -> tuple[int, ...]:
    """``"3x32x32"`` -> ``(3, 32, 32)``: one sample's shape, without the batch."""
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"{field_name}={text!r} must look like 3x224x224") from None
    if not dims or any(d < 1 for d in dims):
        raise ValueError(f"{field_name}={text!r} must be positive integers like 3x224x224")
    return dims


@dataclass(frozen=True)
class ModuleNetwork:
    """A user's module at one input shape: lowers by tracing, builds by calling the factory.

    Lowering refuses a module with a layer the cost model cannot cost, naming it:
    a latency that silently left layers out would not be comparable.
    """

    model: str  # PATH.py:FACTORY
    input_shape: tuple[int, ...]
    base_dir: Path = Path()
    _specs: dict[int, tuple[LayerSpec, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def build(self) -> nn.Module:
        factory = load_factory(self.model, self.base_dir)
        try:
            module = factory()
        except Exception as e:  # a user's factory: any error is reported as theirs
            raise ValueError(
                f"model={self.model!r}: building failed: {type(e).__name__}: {e}"
            ) from None
        if not isinstance(module, nn.Module):
            raise ValueError(
                f"model={self.model!r} returned {type(module).__name__}, not a torch.nn.Module"
            )
        return module

    def lower(self, batch: int) -> tuple[LayerSpec, ...]:
        if batch not in self._specs:
            module = self.build()
            try:
                specs, unsupported = trace_layers(module, (batch, *self.input_shape))
            except Exception as e:  # a user's model: any error is reported as theirs
                raise ValueError(
                    f"model={self.model!r}: tracing failed: {type(e).__name__}: {e}"
                ) from None
            if unsupported:
                raise ValueError(
                    f"model={self.model!r}: layers without a cost formula: {list(unsupported)}"
                )
            self._specs[batch] = specs
        return self._specs[batch]

    def __str__(self) -> str:
        return f"{self.model} {'x'.join(map(str, self.input_shape))}"
